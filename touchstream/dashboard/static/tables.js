// Touchstream's tables: render a panel ({columns, rows, count, updated_at}) into a <table>.
// Sorting is per table and survives updates; every table has a CSV link for the rows it
// shows, in its order, with the raw values. Shared by every page.
"use strict";

const sortState = {};  // table id -> {key, dir}
const token = new URLSearchParams(location.search).get("token");
const withToken = (path) =>
  (token ? `${path}${path.includes("?") ? "&" : "?"}token=${encodeURIComponent(token)}` : path);

function duration(seconds) {
  if (seconds === null || seconds === undefined) return "–";
  if (seconds < 0) return `−${duration(-seconds)}`;  // overdue
  const s = Math.round(seconds);
  if (s < 60) return `${s}s`;
  if (s < 3600) return `${Math.floor(s / 60)}m ${String(s % 60).padStart(2, "0")}s`;
  if (s < 86400) return `${Math.floor(s / 3600)}h ${String(Math.floor((s % 3600) / 60)).padStart(2, "0")}m`;
  return `${Math.floor(s / 86400)}d ${Math.floor((s % 86400) / 3600)}h`;
}

function timeOf(iso) {
  if (!iso) return "–";
  const d = new Date(iso);
  return d.toISOString().replace("T", " ").slice(0, 19);
}

function sparkline(values) {
  const points = values.map((v, i) => [i, v]).filter(([, v]) => v !== null);
  if (points.length === 0) return document.createTextNode("–");
  if (points.length === 1) points.unshift([points[0][0] - 1, points[0][1]]);  // a single hour: a short flat line
  const max = Math.max(...points.map(([, v]) => v)) || 1;
  const ns = "http://www.w3.org/2000/svg";
  const svg = document.createElementNS(ns, "svg");
  svg.setAttribute("class", "spark");
  svg.setAttribute("width", "96");
  svg.setAttribute("height", "20");
  svg.setAttribute("role", "img");
  svg.setAttribute("aria-label", `p90 by hour, latest ${duration(points[points.length - 1][1])}`);
  const line = document.createElementNS(ns, "polyline");
  line.setAttribute("points", points.map(([i, v]) => `${(i * 96) / 23},${19 - (v / max) * 18}`).join(" "));
  svg.appendChild(line);
  return svg;
}

function cell(column, row) {
  const td = document.createElement("td");
  const value = row[column.key];
  switch (column.kind) {
    case "seconds": td.className = "num"; td.textContent = duration(value); td.dataset.value = value ?? ""; break;
    case "int": td.className = "num"; td.textContent = value ?? "–"; break;
    case "number": td.className = "num"; td.textContent = value === null || value === undefined ? "–" : Number(value).toFixed(1); break;
    case "ratio": td.className = "num"; td.textContent = value === null || value === undefined ? "–" : Number(value).toFixed(2); break;
    case "time": td.textContent = timeOf(value); break;
    case "spark": td.appendChild(sparkline(value || [])); break;
    case "heat": td.className = "heat num"; td.textContent = value || ""; td.dataset.value = value ?? 0; break;
    default:
      if (column.key === "customer_id" && value) td.appendChild(customerLink(value));  // search.js
      else td.textContent = value ?? "–";
  }
  if (column.key === "direction") td.className = value;
  return td;
}

function compare(a, b) {
  if (a === b) return 0;
  if (a === null || a === undefined) return 1;
  if (b === null || b === undefined) return -1;
  if (Array.isArray(a)) return 0;
  return a < b ? -1 : 1;
}

function render(id, data) {
  const table = document.getElementById(id);
  if (!table || !data) return;
  const state = sortState[id];
  let rows = data.rows.slice();
  if (state) {
    rows.sort((x, y) => compare(x[state.key], y[state.key]) * (state.dir === "ascending" ? 1 : -1));
  }
  const caption = table.querySelector("caption");
  table.replaceChildren(caption);
  const head = table.createTHead().insertRow();
  for (const column of data.columns) {
    const th = document.createElement("th");
    th.scope = "col";
    if (state && state.key === column.key) th.setAttribute("aria-sort", state.dir);
    const button = document.createElement("button");
    button.type = "button";
    button.textContent = column.label;
    button.addEventListener("click", () => {
      const same = sortState[id] && sortState[id].key === column.key;
      sortState[id] = { key: column.key, dir: same && sortState[id].dir === "ascending" ? "descending" : "ascending" };
      render(id, data);
    });
    th.appendChild(button);
    head.appendChild(th);
  }
  const body = table.createTBody();
  if (rows.length === 0) {
    const tr = body.insertRow();
    tr.className = "empty";
    const td = tr.insertCell();
    td.colSpan = data.columns.length;
    td.textContent = "nothing yet";
  }
  for (const row of rows) {
    const tr = body.insertRow();
    if (row.over_sla) tr.classList.add("over-sla");
    if (row.customer_id) tr.dataset.customer = row.customer_id;
    for (const column of data.columns) tr.appendChild(cell(column, row));
    if (row.provisional) {
      // Within the grace period: a late event may still correct this row.
      tr.classList.add("provisional");
      tr.title = "provisional: may still change within the grace period";
      const badge = document.createElement("span");
      badge.className = "badge";
      badge.textContent = "live";
      tr.cells[0].append(" ", badge);
    }
  }
  if (data.max !== undefined) {  // a heatmap: shade each cell by its share of the busiest
    for (const td of table.querySelectorAll("td.heat")) {
      td.style.setProperty("--heat", data.max ? String(Number(td.dataset.value) / data.max) : "0");
    }
  }
  const meta = document.querySelector(`[data-meta="${id}"]`);
  if (meta) meta.textContent = `${data.count} · updated ${timeOf(data.updated_at).slice(11)}`;
  csvLink(table, id, data.columns, rows);
}

function csvField(value) {
  if (value === null || value === undefined) return "";
  const text = Array.isArray(value) ? value.join(" ") : String(value);
  return /[",\r\n]/.test(text) ? `"${text.replaceAll('"', '""')}"` : text;
}

// A "CSV" link before the table (made once), downloading what the table shows now.
function csvLink(table, id, columns, rows) {
  let link = document.querySelector(`a[data-csv="${id}"]`);
  if (!link) {
    link = document.createElement("a");
    link.dataset.csv = id;
    link.className = "csv";
    link.download = `${id}.csv`;
    link.href = "#";
    link.textContent = "CSV";
    (table.closest(".scroll") || table).before(link);
  }
  link.onclick = () => {
    const lines = [columns.map((c) => csvField(c.label)), ...rows.map((row) => columns.map((c) => csvField(row[c.key])))];
    const blob = new Blob([lines.map((fields) => fields.join(",")).join("\r\n") + "\r\n"], { type: "text/csv" });
    URL.revokeObjectURL(link.href);
    link.href = URL.createObjectURL(blob);
  };
}

