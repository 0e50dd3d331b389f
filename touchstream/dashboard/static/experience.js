// Touchstream experience view: reads /api/experience every 30 s and renders its tables
// (tables.js) and charts (charts.js). The attribution table ranks groups by the chosen
// model's lift (its bad share / the overall share): at first the interactions the brand
// controls (its agents and the quality of what they did), or the groups of any grouping.
"use strict";

const TABLES = ["churn_by_signal", "recurring", "tickets", "first_response_buckets", "sla_weeks", "sla_agents",
                "social"];
let latest = null;

// Per choice of the "By" selector: the groupings shown, and the columns that name a group.
const GROUPED = {
  "agent|quality": [["agent", "quality"], ["grouping", "agent", "quality"]],
  "": [null, ["grouping", "channel", "kind", "agent", "team", "quality"]],
  "channel, kind and agent": [["channel, kind and agent"], ["channel", "kind", "agent"]],
  quality: [["quality"], ["quality"]], agent: [["agent"], ["agent"]], team: [["team"], ["team"]],
  channel: [["channel"], ["channel"]], kind: [["kind"], ["kind"]],
};

function attribution(data) {
  const model = document.getElementById("model").value;
  const by = document.getElementById("by").value;
  const lift = `${model}_lift`;
  const [groupings, named] = GROUPED[by];
  const keep = new Set([...named, "outcomes", "touchpoints", model, lift, "bad_outcomes", "bad_low", "bad_high"]);
  const rows = data.rows.filter((row) => groupings === null || groupings.includes(row.grouping))
    .sort((a, b) => compare(b[lift], a[lift]) || compare(b.outcomes, a.outcomes));
  render("attribution", { ...data, columns: data.columns.filter((c) => keep.has(c.key)), rows });
  document.getElementById("overall-bad").textContent = data.overall_percent ?? "–";
  document.getElementById("outcome-count").textContent = data.outcomes;
  document.getElementById("least-outcomes").textContent = data.least_outcomes;
}

function show(panels) {
  latest = panels;
  attribution(panels.attribution);
  for (const id of TABLES) render(id, panels[id]);
  chart("churn_chart", panels.churn_chart, { label: "%" });
  chart("survey_chart", panels.survey_chart, { label: "NPS / CSAT %" });
  chart("ticket_chart", panels.ticket_chart, { label: "tickets" });
  document.getElementById("reference").textContent = panels.reference ? timeOf(panels.reference) : "none yet";
  document.getElementById("status").textContent = `read in ${Math.round(panels.read_seconds * 1000)} ms` +
    (panels.errors && panels.errors.length ? `; ${panels.errors.length} panel(s) left empty: ${panels.errors[0]}` : "");
  document.body.dataset.updates = String(Number(document.body.dataset.updates || 0) + 1);
}

async function refresh() {
  try {
    const response = await fetch(withToken("/api/experience"));
    if (!response.ok) throw new Error(`${response.status}`);
    show(await response.json());
  } catch (error) {
    document.getElementById("status").textContent = `not read (${error.message}); retrying`;
  }
  setTimeout(refresh, 30_000);
}

for (const id of ["model", "by"]) {
  document.getElementById(id).addEventListener("change", () => latest && attribution(latest.attribution));
}
refresh();
