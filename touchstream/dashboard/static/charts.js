// Touchstream's charts: a panel's {x: [epoch seconds], series: [{label, values}]} drawn as
// lines with the vendored uPlot (vendor/uplot). A chart is updated in place while its
// series stay the same, and rebuilt when they change; it follows its container's width.
"use strict";

const charts = {};  // element id -> {plot, labels}
// Ticks of a duration axis on a log scale: 1 s, 10 s, 1 min, 10 min, 1 h, 6 h, 1 d, 7 d.
const DURATION_TICKS = [1, 10, 60, 600, 3600, 21600, 86400, 604800];
const PALETTE = ["#2563eb", "#dc2626", "#16a34a", "#d97706", "#7c3aed", "#0891b2", "#db2777", "#65a30d",
                 "#475569", "#ea580c"];

function chart(id, data, options = {}) {
  const element = document.getElementById(id);
  if (!element || !data) return;
  // A series without a single value (no CSAT answers yet, say) is left out.
  data = { x: data.x, series: data.series.filter((s) => s.values.some((v) => v !== null)) };
  const labels = data.series.map((s) => s.label).join("\u0000");
  // Durations span seconds to days: a log scale, where under a second shows as one second.
  const shown = options.seconds ? (v) => (v === null ? null : Math.max(v, 1)) : (v) => v;
  const rows = [data.x, ...data.series.map((s) => s.values.map(shown))];
  const width = Math.max(element.clientWidth, 280);
  element.dataset.points = String(data.x.length);
  element.setAttribute("aria-label", `${element.dataset.title || id}: ${data.series.map((s) => s.label).join(", ")}`);
  const existing = charts[id];
  if (existing && existing.labels === labels) {
    existing.plot.setData(rows);
    return;
  }
  if (existing) existing.plot.destroy();
  element.replaceChildren();
  if (data.x.length === 0 || data.series.length === 0) {
    element.textContent = "nothing yet";
    delete charts[id];
    return;
  }
  const value = options.seconds ? (u, v) => (v === null ? "–" : duration(v)) : (u, v) => (v === null ? "–" : v);
  const plot = new uPlot({
    width,
    height: options.height || 220,
    scales: { x: { time: true }, ...(options.seconds ? { y: { distr: 3, log: 10 } } : {}) },
    tzDate: (seconds) => uPlot.tzDate(new Date(seconds * 1000), "Etc/UTC"),  // the page's times are UTC
    series: [
      {},
      ...data.series.map((s, i) => ({
        label: s.label, stroke: PALETTE[i % PALETTE.length], width: 2, spanGaps: true, value,
        points: { show: data.x.length < 40 },
      })),
    ],
    axes: [{}, options.seconds
      ? { label: options.label, size: 60, values: (u, ticks) => ticks.map((t) => duration(t)),
          splits: (u, axis, min, max) => DURATION_TICKS.filter((t) => t >= min && t <= max) }
      : { label: options.label, size: 60 }],
  }, rows, element);
  charts[id] = { plot, labels };
}

window.addEventListener("resize", () => {
  for (const [id, { plot }] of Object.entries(charts)) {
    const element = document.getElementById(id);
    if (element) plot.setSize({ width: Math.max(element.clientWidth, 280), height: plot.height });
  }
});
