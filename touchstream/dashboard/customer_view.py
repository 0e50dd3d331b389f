"""`touchstream customer ID`: the Customer 360 record in the terminal (rich).

The same record as `GET /api/customers/<id>`: the profile beside the channels and hours
the customer is active in, the journeys with their paths and outcomes, then the
timeline, one line per touchpoint in event order with its conversation, and what was
measured on it (response times, waits, level changes, surveys). Provisional rows are
marked `live`; a touchpoint not counted says why (`late`, `no consent`, `consent change`,
`erasure request`).
"""

from __future__ import annotations

from typing import Any

from rich.console import Console, Group, RenderableType
from rich.table import Table
from rich.text import Text

from touchstream.dashboard.top import duration

WEEKDAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")


def render(record: dict[str, Any]) -> RenderableType:
    return Group(_profile(record), _journeys(record), _outcomes(record), _timeline(record))


def show(record: dict[str, Any], console: Console | None = None) -> None:
    (console or Console()).print(render(record))


def _time(value: str | None) -> str:
    return "-" if value is None else value.replace("T", " ").replace("Z", "")[:19]


def _live(final: bool) -> str:
    return "" if final else " live"


def _profile(record: dict[str, Any]) -> RenderableType:
    profile = record.get("profile")
    table = Table(title=f"Customer {record['customer_id']}", show_header=False, title_justify="left")
    table.add_column("field", style="bold")
    table.add_column("value")
    if profile is None:
        table.add_row("profile", f"none: no counted event ({record.get('not_counted') or 'none stored'})")
        return table
    hours = profile["active_hours"]
    busiest = sorted(range(24), key=lambda hour: -hours[hour])[:3] if any(hours) else []
    days = profile["active_weekdays"]
    rows = [
        ("first seen", _time(profile["first_seen_at"])),
        ("last seen", _time(profile["last_seen_at"])),
        ("preferred channel", profile["preferred_channel"] or "-"),
        ("active channels", ", ".join(profile["active_channels"]) or "-"),
        ("most active hours (UTC)", ", ".join(f"{hour:02}:00" for hour in busiest) or "-"),
        ("most active days", ", ".join(WEEKDAYS[d] for d in sorted(range(7), key=lambda d: -days[d])[:2]
                                       if days[d]) or "-"),
        ("level", f"{profile['level']} (score {profile['score']})"),
        ("purchases", str(profile["purchases"])),
        ("latest NPS / CSAT", f"{profile['latest_nps'] if profile['latest_nps'] is not None else '-'} / "
                              f"{profile['latest_csat'] if profile['latest_csat'] is not None else '-'}"),
        ("consent", "analytics allowed" if profile["consent"] else "analytics withdrawn"),
        ("status", ("churned" if profile["churned"] else "active") + _live(profile["final"])),
    ]  # fmt: skip
    for name, value in rows:
        table.add_row(name, value)
    for period in record.get("consent_withdrawn", []):
        table.add_row(
            "no consent", f"{_time(period['from'])} to {_time(period['to']) if period['to'] else 'now'}"
        )
    return table


def _journeys(record: dict[str, Any]) -> RenderableType:
    table = Table(title="Journeys", title_justify="left")
    for name in ("started", "ended", "path", "touchpoints", "outcome"):
        table.add_column(name)
    for journey in record["journeys"]:
        table.add_row(
            _time(journey["started_at"]), _time(journey["ended_at"]), " > ".join(journey["channel_path"]),
            str(journey["touchpoints"]), journey["outcome"] + _live(journey["final"]),
        )  # fmt: skip
    return table


def _outcomes(record: dict[str, Any]) -> RenderableType:
    """Tickets and churns, one line each."""
    table = Table(title="Tickets and churns", title_justify="left")
    for name in ("when", "what", "details"):
        table.add_column(name)
    for ticket in record.get("tickets", []):
        table.add_row(
            _time(ticket["opened_at"]), f"ticket {ticket['conversation_id']}",
            f"{ticket['category']}, {ticket['priority']}, {ticket['status']}{_live(ticket['final'])}",
        )  # fmt: skip
    for churn in record.get("churns", []):
        back = f"returned {_time(churn['returned_at'])}" if churn["returned_at"] else "not returned"
        signals = ", ".join(churn["signals"]) or "no signals"
        table.add_row(_time(churn["churned_at"]), "churned", f"{signals}; {back}{_live(churn['final'])}")
    return table


def _timeline(record: dict[str, Any]) -> RenderableType:
    replies = {r["reply_event_id"]: r for r in record["responses"]}
    surveys = {s["event_id"]: s for s in record["surveys"]}
    waiting = {w["conversation_id"]: w for w in record["waiting"]}
    changes = list(record["level_changes"])
    page = record["page"]
    shown = f"{page['from'] + 1}-{page['from'] + len(record['touchpoints'])}"
    title = f"Timeline: touchpoints {shown} of {page['total']}"
    table = Table(title=title, title_justify="left")
    for name in ("when", "channel", "what", "conversation", "measured"):
        table.add_column(name)
    for point in record["touchpoints"]:
        while changes and changes[0]["changed_at"] <= point["occurred_at"]:
            change = changes.pop(0)
            moved = f"{change['previous_level']} -> {change['level']}{_live(change['final'])}"
            table.add_row(_time(change["changed_at"]), "", Text("level", style="magenta"), "", moved)
        what = f"{point['kind']} {point['direction']} ({point['actor']})"
        measured = []
        if point["event_id"] in replies:
            reply = replies[point["event_id"]]
            first = "first reply" if reply["is_first_response"] else "reply"
            measured.append(f"{first} after {duration(reply['response_seconds'])}{_live(reply['final'])}")
        if point["event_id"] in surveys:
            answer = surveys[point["event_id"]]
            measured.append(f"{answer['survey_type'].upper()} {answer['score']}")
        if not point["counted"]:
            measured.append(f"not counted: {point['not_counted']}")
        conversation = point["conversation_id"]
        if conversation in waiting and waiting[conversation]["waiting_since"] == point["occurred_at"]:
            measured.append("waiting since")
        table.add_row(_time(point["occurred_at"]), point["channel"], what, conversation, "; ".join(measured))
    if page["next"]:
        table.caption = f"more: --after '{page['next']}'"
    return table
