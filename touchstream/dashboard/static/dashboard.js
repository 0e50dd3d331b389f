// Touchstream ops view: renders the server's snapshots (server-sent events) into the
// page's tables (tables.js) and charts (charts.js). No reload, no build step.
"use strict";

const PANELS = ["waiting", "sla", "responses", "levels", "changes", "top", "at_risk", "experience",
                "preferred_channels", "journey_paths", "active_hours", "health"];

function show(snapshot) {
  for (const id of PANELS) render(id, snapshot[id]);
  chart("volume_chart", snapshot.volume_chart, { label: "events per hour" });
  chart("response_chart", snapshot.response_chart, { label: "response time (log scale)", seconds: true });
  document.getElementById("reference").textContent = snapshot.reference ? timeOf(snapshot.reference) : "none yet";
  const status = document.getElementById("status");
  const errors = [...(snapshot.errors || []), ...(snapshot.behaviour_errors || [])];
  status.textContent = `live · read in ${Math.round(snapshot.read_seconds * 1000)} ms` +
    (errors.length ? `; ${errors.length} panel(s) left empty: ${errors[0]}` : "");
  document.body.dataset.updates = String(Number(document.body.dataset.updates || 0) + 1);
}

function connect() {
  const source = new EventSource(withToken("api/stream"));
  source.addEventListener("snapshot", (message) => show(JSON.parse(message.data)));
  source.onerror = () => {
    document.getElementById("status").textContent = "reconnecting…";
  };
}

connect();
