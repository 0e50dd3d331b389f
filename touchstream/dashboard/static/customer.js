// Customer 360: one customer's record (GET /api/customers/<id>), drawn as a timeline
// (vis-timeline) beside the profile, refreshed in place every couple of seconds; its
// tables download as CSV (tables.js).
"use strict";

const customerId = decodeURIComponent(location.pathname.replace(/^\/customers\//, ""));
const pageToken = new URLSearchParams(location.search).get("token");
const REFRESH_MS = 2000;
const WEEKDAYS = ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"];
const SIGNALS = "levels & surveys";

document.getElementById("customer-id").textContent = customerId;
document.title = `Touchstream: ${customerId}`;

const groups = new vis.DataSet();
const items = new vis.DataSet();
const timeline = new vis.Timeline(document.getElementById("timeline"), items, groups, {
  // Unstacked: each lane stays one row however many events it holds (a stacked lane of a
  // busy channel grew into a column of labels that pushed the other lanes out of view).
  stack: false, zoomKey: "ctrlKey", orientation: "top", maxHeight: 520, margin: { item: 4 },
  tooltip: { followMouse: true },
});
let fitted = false;

function when(iso) { return iso ? iso.replace("T", " ").slice(0, 19) : "–"; }
function live(final) { return final ? "" : " (live)"; }

function fill(tableId, header, rows) {
  const table = document.getElementById(tableId);
  table.replaceChildren(table.querySelector("caption"));
  if (header) {
    const head = table.createTHead().insertRow();
    for (const label of header) { const th = document.createElement("th"); th.textContent = label; head.appendChild(th); }
  }
  const body = table.createTBody();
  for (const row of rows) {
    const tr = body.insertRow();
    for (const value of row.cells) {
      const td = tr.insertCell();
      if (value instanceof Node) td.appendChild(value); else td.textContent = value ?? "–";
    }
    if (row.provisional) tr.classList.add("provisional");
    if (row.muted) tr.classList.add("not-counted");
  }
  if (header) {  // the CSV link of tables.js, with what the cells show
    const columns = header.map((label, key) => ({ key, label }));
    const shown = rows.map((row) => row.cells.map((value) => (value instanceof Node ? value.textContent : value)));
    csvLink(table, tableId, columns, shown);
  }
}

function showProfile(record) {
  const p = record.profile;
  if (!p) {
    fill("profile", null, [{ cells: ["profile", `no counted event (${record.not_counted || "none stored"})`] }]);
    return;
  }
  const busiest = p.active_hours.map((n, h) => [n, h]).filter(([n]) => n > 0).sort((a, b) => b[0] - a[0]).slice(0, 3);
  const days = p.active_weekdays.map((n, d) => [n, d]).filter(([n]) => n > 0).sort((a, b) => b[0] - a[0]).slice(0, 2);
  const rows = [
    ["first seen", when(p.first_seen_at)], ["last seen", when(p.last_seen_at)],
    ["preferred channel", p.preferred_channel ?? "–"], ["active channels", p.active_channels.join(", ") || "–"],
    ["most active hours (UTC)", busiest.map(([, h]) => `${String(h).padStart(2, "0")}:00`).join(", ") || "–"],
    ["most active days", days.map(([, d]) => WEEKDAYS[d]).join(", ") || "–"],
    ["level", `${p.level} (score ${p.score})`], ["purchases", String(p.purchases)],
    ["latest NPS / CSAT", `${p.latest_nps ?? "–"} / ${p.latest_csat ?? "–"}`],
    ["consent", p.consent ? "analytics allowed" : "analytics withdrawn"],
    ["status", (p.churned ? "churned" : "active") + live(p.final)],
  ];
  for (const period of record.consent_withdrawn) rows.push(["no consent", `${when(period.from)} to ${period.to ? when(period.to) : "now"}`]);
  fill("profile", null, rows.map((cells) => ({ cells })));
  document.getElementById("profile-meta").textContent = `as of ${when(p.as_of)}`;
}

function showTimeline(record) {
  const replies = new Map(record.responses.map((r) => [r.reply_event_id, r]));
  const channels = [...new Set(record.touchpoints.map((t) => t.channel))].sort();
  groups.update([...channels.map((c) => ({ id: c, content: c })), { id: SIGNALS, content: SIGNALS }]);
  groups.remove(groups.getIds().filter((id) => id !== SIGNALS && !channels.includes(id)));
  const next = [];
  for (const c of record.conversations) {
    if (c.started_at === c.ended_at) continue;
    next.push({ id: `conv:${c.conversation_id}`, group: c.channel, start: c.started_at, end: c.ended_at,
                type: "background", className: "conversation", title: `conversation ${c.conversation_id}` });
  }
  for (const w of record.waiting) {
    next.push({ id: `wait:${w.conversation_id}`, group: record.conversations.find((c) => c.conversation_id === w.conversation_id)?.channel,
                start: w.waiting_since, end: record.profile ? record.profile.as_of : w.waiting_since,
                type: "range", className: "waiting", content: "waiting", title: `waiting since ${when(w.waiting_since)}` });
  }
  for (const t of record.touchpoints) {
    const reply = replies.get(t.event_id);
    const label = reply ? `reply ${duration(reply.response_seconds)}` : t.kind.replace("_", " ");
    next.push({ id: `event:${t.event_id}`, group: t.channel, start: t.occurred_at, type: "point",
                className: [t.direction, t.counted ? "" : "not-counted", reply ? "reply" : ""].join(" "),
                content: label, title: `${when(t.occurred_at)} ${t.kind} ${t.direction} (${t.actor}) · ${t.conversation_id}` });
  }
  for (const change of record.level_changes) {
    next.push({ id: `level:${change.changed_at}:${change.level}`, group: SIGNALS, start: change.changed_at, type: "point",
                className: "level", content: `${change.previous_level} → ${change.level}${live(change.final)}` });
  }
  for (const s of record.surveys) {
    next.push({ id: `survey:${s.event_id}`, group: SIGNALS, start: s.occurred_at, type: "box", className: "survey",
                content: `${s.survey_type.toUpperCase()} ${s.score}` });
  }
  for (const [n, period] of record.consent_withdrawn.entries()) {
    next.push({ id: `consent:${n}`, start: period.from, end: period.to ?? (record.profile?.as_of ?? period.from),
                type: "background", className: "consent-gap", title: "no analytics consent" });
  }
  const keep = new Set(next.map((item) => item.id));
  items.remove(items.getIds().filter((id) => !keep.has(id)));
  items.update(next);
  if (!fitted && next.length) { timeline.fit({ animation: false }); fitted = true; }
  document.getElementById("timeline-meta").textContent = `${record.touchpoints.length} of ${record.page.total} touchpoints`;
}

function showTables(record) {
  fill("journeys", ["started", "ended", "path", "touchpoints", "outcome"], record.journeys.map((j) => ({
    cells: [when(j.started_at), when(j.ended_at), j.channel_path.join(" > "), String(j.touchpoints), j.outcome + live(j.final)],
    provisional: !j.final,
  })));
  document.getElementById("journeys-meta").textContent = `${record.journeys.length}`;
  fill("tickets", ["opened", "ticket", "category", "priority", "first response", "status", "reopened"],
    record.tickets.map((t) => ({
      cells: [when(t.opened_at), t.conversation_id, t.category, t.priority, duration(t.first_response_seconds),
              t.status + (t.resolved_on_first_reply ? " (first reply)" : "") + live(t.final), String(t.reopened)],
      provisional: !t.final,
    })));
  fill("churns", ["churned", "last own action", "returned", "level then", "signals"], record.churns.map((c) => ({
    cells: [when(c.churned_at), when(c.last_interaction_at), c.returned_at ? when(c.returned_at) : "not yet",
            c.level_at_churn, (c.signals.join(", ") || "none") + live(c.final)],
    provisional: !c.final,
  })));
  document.getElementById("tickets-meta").textContent = `${record.tickets.length}`;
  document.getElementById("churns-meta").textContent = `${record.churns.length}`;
  const replies = new Map(record.responses.map((r) => [r.reply_event_id, r]));
  fill("events", ["when", "channel", "kind", "direction", "actor", "conversation", "measured"], record.touchpoints.map((t) => {
    const reply = replies.get(t.event_id);
    const measured = [reply ? `${reply.is_first_response ? "first reply" : "reply"} after ${duration(reply.response_seconds)}` : "",
                      t.survey ? `${t.survey.type.toUpperCase()} ${t.survey.score}` : "", t.counted ? "" : `not counted: ${t.not_counted}`].filter(Boolean).join("; ");
    return { cells: [when(t.occurred_at), t.channel, t.kind, t.direction, t.actor, t.conversation_id, measured], muted: !t.counted };
  }));
  const page = record.page;
  document.getElementById("events-meta").textContent = `${page.from + 1}–${page.from + record.touchpoints.length} of ${page.total}`;
}

async function refresh() {
  const status = document.getElementById("status");
  const query = new URLSearchParams({ limit: "1000" });
  if (pageToken) query.set("token", pageToken);
  try {
    const response = await fetch(`/api/customers/${encodeURIComponent(customerId)}?${query}`);
    const body = await response.json();
    if (!response.ok) { status.textContent = body.error || `HTTP ${response.status}`; document.body.dataset.missing = "1"; return; }
    showProfile(body);
    showTimeline(body);
    showTables(body);
    status.textContent = `live · ${body.page.total} touchpoints`;
    document.body.dataset.updates = String(Number(document.body.dataset.updates || 0) + 1);
  } catch (error) {
    status.textContent = "reconnecting…";
  }
}

refresh();
setInterval(refresh, REFRESH_MS);
