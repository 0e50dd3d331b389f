"""Reports per team, per agent and per channel (SPEC §5), for any range of event time: the
Teams view.

Per team (a conversation's team: the latest `team_id` seen in it), per agent or per
channel (a conversation's: that of its first event; a response's: that of the message it
answered), over [`since`, `until`):

- conversations with a customer message (those the waiting queue has seen) opened in the
  range (per agent: those whose latest reply is the agent's);
- replies that answered a customer (response records), first responses with their
  median and p90 in calendar and in business time, and SLA attainment: the share of first
  responses that met the first-response target of their SLA policy (`responses.sla_met`;
  without a target: met);
- resolutions: those conversations closed in the range, with the median and p90 from
  opening to the (latest) close, in calendar and in business time; of them closed without
  reply and abandoned (SPEC §5 "Conversation status");
- NPS and CSAT of the survey answers given in the range that follow the team's or agent's
  conversations: answers with one of their interactions among the touchpoints of the answer
  (`outcome_touchpoints`, SPEC §5b).

Each part reads the range's rows: responses from their copy ordered by the hour,
conversations opened or closed in the range, the outcome touchpoints of the customers who
answered a survey in it. The queries are in docs/clickhouse.md word for word (after the
`WITH` that binds the range, which the dashboard sends as query parameters).
"""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from typing import Any

from touchstream.dashboard.panels import Fetch, column, records, table, within_bounds

#: The range, bound as query parameters.
BINDINGS = "WITH {since:DateTime64(3, 'UTC')} AS since, {until:DateTime64(3, 'UTC')} AS until"
#: Per grouping: how a conversation, a response and an outcome touchpoint name their group,
#: and the flag that counts an answer once per group.
_GROUPS = {
    "team": ("ifNull(team_id, '(none)')", "ifNull(c.team_id, '(none)')", "ifNull(team_id, '(none)')",
             "first_in_team"),
    "agent": ("ifNull(last_agent_id, '(none)')", "ifNull(r.agent_id, '(none)')", "ifNull(agent_id, '(none)')",
              "first_in_agent"),
    "channel": ("channel", "r.channel", "channel", "first_in_channel"),
}  # fmt: skip


def _report(name: str) -> str:
    conversation, response, touchpoint, first = _GROUPS[name]
    return f"""
SELECT multiIf(c_who != '', c_who, r_who != '', r_who, s_who) AS {name},
       conversations, replies, first_responses,
       if(first_responses = 0, NULL, first_p50) AS first_response_p50,
       if(first_responses = 0, NULL, first_p90) AS first_response_p90,
       if(first_business = 0, NULL, business_p50) AS first_response_business_p50,
       if(first_business = 0, NULL, business_p90) AS first_response_business_p90,
       if(first_responses = 0, NULL, round(100 * within_sla / first_responses, 1)) AS sla_percent,
       resolved,
       if(resolved = 0, NULL, resolution_p50) AS resolution_p50,
       if(resolved = 0, NULL, resolution_p90) AS resolution_p90,
       if(resolved_business = 0, NULL, resolution_business_p50) AS resolution_business_p50,
       if(resolved_business = 0, NULL, resolution_business_p90) AS resolution_business_p90,
       closed_without_reply, abandoned,
       nps_answers, if(nps_answers = 0, NULL, round(100 * (promoters - detractors) / nps_answers, 1)) AS nps,
       csat_answers, if(csat_answers = 0, NULL, round(100 * satisfied / csat_answers, 1)) AS csat_percent
FROM (
    SELECT {conversation} AS c_who,
           countIf(opened_at >= since AND opened_at < until) AS conversations,
           countIf(closed) AS resolved,
           quantileExactIf(0.5)(resolution_seconds, closed) AS resolution_p50,
           quantileExactIf(0.9)(resolution_seconds, closed) AS resolution_p90,
           countIf(closed AND resolution_business_seconds IS NOT NULL) AS resolved_business,
           quantileExactIf(0.5)(resolution_business_seconds, closed) AS resolution_business_p50,
           quantileExactIf(0.9)(resolution_business_seconds, closed) AS resolution_business_p90,
           countIf(closed AND closed_without_reply) AS closed_without_reply,
           countIf(closed AND abandoned) AS abandoned
    FROM (
        SELECT *, status = 'closed' AND closed_at >= since AND closed_at < until AS closed,
               dateDiff('millisecond', opened_at, closed_at) / 1000 AS resolution_seconds
        FROM conversations FINAL
        WHERE ((opened_at >= since AND opened_at < until) OR (closed_at >= since AND closed_at < until))
          AND (customer_id, conversation_id) IN (SELECT customer_id, conversation_id FROM waiting FINAL)
    )
    GROUP BY c_who
) AS c
FULL OUTER JOIN (
    SELECT {response} AS r_who, count() AS replies, countIf(is_first_response) AS first_responses,
           quantileExactIf(0.5)(response_seconds, is_first_response) AS first_p50,
           quantileExactIf(0.9)(response_seconds, is_first_response) AS first_p90,
           countIf(is_first_response AND response_business_seconds IS NOT NULL) AS first_business,
           quantileExactIf(0.5)(response_business_seconds, is_first_response) AS business_p50,
           quantileExactIf(0.9)(response_business_seconds, is_first_response) AS business_p90,
           countIf(is_first_response AND ifNull(sla_met, true)) AS within_sla
    FROM responses_by_hour AS r FINAL
    LEFT JOIN (
        SELECT customer_id, conversation_id, team_id
        FROM conversations FINAL
        WHERE customer_id IN (
            SELECT customer_id FROM responses_by_hour WHERE replied_at >= since AND replied_at < until)
    ) AS c ON c.customer_id = r.customer_id AND c.conversation_id = r.conversation_id
    WHERE r.replied_at >= since AND r.replied_at < until
    GROUP BY r_who
) AS r ON r_who = c_who
FULL OUTER JOIN (
    SELECT {touchpoint} AS s_who,
           countIf(outcome_type = 'nps') AS nps_answers, countIf(outcome_class = 'promoter') AS promoters,
           countIf(outcome_class = 'detractor') AS detractors,
           countIf(outcome_type = 'csat') AS csat_answers, countIf(outcome_class = 'satisfied') AS satisfied
    FROM outcome_touchpoints FINAL
    WHERE customer_id IN (SELECT customer_id FROM surveys WHERE occurred_at >= since AND occurred_at < until)
      AND outcome_type IN ('nps', 'csat') AND outcome_at >= since AND outcome_at < until AND {first}
    GROUP BY s_who
) AS s ON s_who = if(c_who = '', r_who, c_who)
ORDER BY conversations + replies DESC, {name}"""


TEAMS = _report("team")
AGENTS = _report("agent")
CHANNELS = _report("channel")
#: The range a report covers when none is asked for: the week up to the newest event.
DEFAULT_DAYS = 7
#: The longest range a report may cover.
MAX_DAYS = 92


def parse_range(since: str | None, until: str | None, newest: datetime | None) -> tuple[datetime, datetime]:
    """The range a request asks for (ISO 8601 instants or dates; `until` exclusive), by
    default the `DEFAULT_DAYS` up to just after the newest event. Raises ValueError."""

    def instant(text: str, what: str) -> datetime:
        try:
            value = datetime.fromisoformat(text.replace("Z", "+00:00"))
        except ValueError:
            raise ValueError(f"{what} must be an ISO 8601 date or instant, got {text[:40]!r}") from None
        return value if value.tzinfo is not None else value.replace(tzinfo=UTC)

    end = instant(until, "until") if until else (newest or datetime.now(UTC)) + timedelta(milliseconds=1)
    start = instant(since, "since") if since else end - timedelta(days=DEFAULT_DAYS)
    if start >= end:
        raise ValueError("since must be before until")
    if end - start > timedelta(days=MAX_DAYS):
        raise ValueError(f"a report covers at most {MAX_DAYS} days")
    return start, end


def teams(fetch: Fetch, since: datetime, until: datetime) -> dict[str, Any]:
    """The reports over [since, until) as tables (see `panels.table`)."""
    began = time.perf_counter()
    errors: list[str] = []
    fetch = within_bounds(fetch, errors)
    params = {"since": since, "until": until}
    keys = ["conversations", "replies", "first_responses", "first_response_p50", "first_response_p90",
            "first_response_business_p50", "first_response_business_p90", "sla_percent", "resolved",
            "resolution_p50", "resolution_p90", "resolution_business_p50", "resolution_business_p90",
            "closed_without_reply", "abandoned", "nps_answers", "nps",
            "csat_answers", "csat_percent"]  # fmt: skip
    columns = [
        column("conversations", "Conversations", "int"), column("replies", "Replies", "int"),
        column("first_responses", "First responses", "int"),
        column("first_response_p50", "First response p50", "seconds"),
        column("first_response_p90", "p90", "seconds"),
        column("first_response_business_p50", "Business p50", "seconds"),
        column("first_response_business_p90", "Business p90", "seconds"),
        column("sla_percent", "SLA %", "number"), column("resolved", "Resolved", "int"),
        column("resolution_p50", "Resolution p50", "seconds"), column("resolution_p90", "p90", "seconds"),
        column("resolution_business_p50", "Business p50", "seconds"),
        column("resolution_business_p90", "Business p90", "seconds"),
        column("closed_without_reply", "Closed without reply", "int"),
        column("abandoned", "Abandoned", "int"),
        column("nps_answers", "NPS answers", "int"), column("nps", "NPS", "number"),
        column("csat_answers", "CSAT answers", "int"), column("csat_percent", "CSAT %", "number"),
    ]  # fmt: skip
    found = {
        name: table([column(name, name.capitalize()), *columns],
                    records([name, *keys], fetch(f"{BINDINGS}{query}", params)))
        for name, query in (("team", TEAMS), ("agent", AGENTS), ("channel", CHANNELS))
    }  # fmt: skip
    return {
        "teams": found["team"],
        "agents": found["agent"],
        "channels": found["channel"],
        "since": since.isoformat(),
        "until": until.isoformat(),
        "errors": errors,
        "read_seconds": round(time.perf_counter() - began, 3),
    }
