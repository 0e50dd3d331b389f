// Touchstream Teams view: reads /api/teams for the range in the form (by default the week
// up to the newest event) and renders the reports per team, agent and channel (tables.js).
"use strict";

const form = document.getElementById("range");
const day = (iso) => iso.slice(0, 10);

async function show(since, until) {
  const query = new URLSearchParams();
  if (since) query.set("since", since);
  if (until) query.set("until", until);
  const status = document.getElementById("status");
  status.textContent = "reading…";
  try {
    const response = await fetch(withToken(`/api/teams${query.size ? `?${query}` : ""}`));
    const data = await response.json();
    if (!response.ok) throw new Error(data.error || `${response.status}`);
    render("teams", data.teams);
    render("agents", data.agents);
    render("channels", data.channels);
    document.getElementById("shown-range").textContent = `${timeOf(data.since)} to ${timeOf(data.until)}`;
    if (!since) document.getElementById("since").value = day(data.since);
    if (!until) document.getElementById("until").value = day(data.until);
    status.textContent = `read in ${Math.round(data.read_seconds * 1000)} ms` +
      (data.errors.length ? `; ${data.errors.length} report(s) left empty: ${data.errors[0]}` : "");
    document.body.dataset.updates = String(Number(document.body.dataset.updates || 0) + 1);
  } catch (error) {
    status.textContent = `not read (${error.message})`;
  }
}

form.addEventListener("submit", (event) => {
  event.preventDefault();
  show(document.getElementById("since").value, document.getElementById("until").value);
});
for (const button of form.querySelectorAll("button[data-days]")) {
  button.addEventListener("click", () => {
    const until = document.getElementById("until").value;
    const end = until ? new Date(`${until}T00:00:00Z`) : new Date();
    const start = new Date(end.getTime() - Number(button.dataset.days) * 86_400_000);
    document.getElementById("since").value = day(start.toISOString());
    show(day(start.toISOString()), until || null);
  });
}
show(null, null);
