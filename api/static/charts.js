// Training curves: one uPlot chart per metric name (train/loss and eval/loss share "loss"),
// steps on x, refreshed while the run is going.
"use strict";

(() => {
  const COLORS = ["#2563eb", "#dc2626", "#16a34a", "#9333ea", "#ea580c", "#0891b2"];
  const charts = new Map(); // group -> {plot, keys, box}

  // Learning rates are ~1e-5: uPlot's default ticks would all read "0".
  function tick(v) {
    if (v == null) return "";
    if (v !== 0 && Math.abs(v) < 1e-3) return v.toExponential(1);
    return String(+v.toPrecision(4));
  }

  function groupOf(key) {
    const slash = key.lastIndexOf("/");
    return slash < 0 ? key : key.slice(slash + 1);
  }

  // uPlot wants one shared x array: the union of steps, with nulls where a key has no point.
  function aligned(keys, series) {
    const steps = [...new Set(keys.flatMap((k) => series[k].steps))].sort((a, b) => a - b);
    const index = new Map(steps.map((s, i) => [s, i]));
    const ys = keys.map((k) => {
      const y = new Array(steps.length).fill(null);
      series[k].steps.forEach((s, i) => { y[index.get(s)] = series[k].values[i]; });
      return y;
    });
    return [steps, ...ys];
  }

  // Every chart shares the run's x range (first to last step logged), so an eval chart with
  // one point at the end lines up with the loss, instead of uPlot padding a lone x to 0..100.
  function stepRange(series) {
    const all = Object.values(series).flatMap((s) => s.steps);
    if (!all.length) return null;
    const lo = Math.min(...all), hi = Math.max(...all);
    return lo === hi ? [lo - 1, hi + 1] : [lo, hi];
  }

  function draw(root, series) {
    const range = stepRange(series);
    const groups = new Map();
    Object.keys(series).sort().forEach((key) => {
      const g = groupOf(key);
      if (!groups.has(g)) groups.set(g, []);
      groups.get(g).push(key);
    });
    if (groups.size) {
      const none = document.getElementById("no-metrics");
      if (none) none.remove();
    }
    for (const [group, keys] of groups) {
      const data = aligned(keys, series);
      // A line needs two points: a series with few shows its points as dots, so a single eval
      // at the end is seen.
      const dots = keys.map((k) => series[k].steps.length <= 20);
      const existing = charts.get(group);
      if (existing && existing.keys.join() === keys.join()
          && existing.dots.join() === dots.join()) {
        existing.range = range;
        existing.plot.setData(data);
      } else {
        if (existing) existing.plot.destroy();
        let box = existing ? existing.box : null;
        if (!box) {
          box = document.createElement("div");
          box.className = "chart";
          box.dataset.metric = group;
          root.appendChild(box);
        }
        const width = Math.max(320, Math.min(560, root.clientWidth / 2 - 24));
        const entry = { keys, dots, box, range };
        const plot = new uPlot({
          title: group,
          width,
          height: 240,
          scales: { x: { time: false,
                         range: (u, lo, hi) => entry.range || [lo, hi] } },
          // What was drawn, for anyone checking the page (and its test).
          hooks: { draw: [(u) => { box.dataset.xmin = u.scales.x.min;
                                   box.dataset.xmax = u.scales.x.max; }] },
          axes: [{ label: "step" }, { size: 64, values: (u, vals) => vals.map(tick) }],
          series: [{ label: "step" },
                   ...keys.map((k, i) => ({ label: k, stroke: COLORS[i % COLORS.length],
                                            width: 2, spanGaps: true,
                                            points: { show: dots[i], size: 8,
                                                      fill: COLORS[i % COLORS.length] } }))],
        }, data, box);
        entry.plot = plot;
        charts.set(group, entry);
      }
      const box = charts.get(group).box;
      box.dataset.points = data[0].length;
      box.dataset.series = keys.join(",");
    }
  }

  document.addEventListener("DOMContentLoaded", () => {
    const root = document.getElementById("charts");
    if (!root) return;
    const load = async () => {
      const body = await nightowl.getJSON(root.dataset.metrics);
      if (!body) return false;
      draw(root, body.series);
      root.dataset.drawn = "true";
      return !["succeeded", "failed", "cancelled"].includes(body.status);
    };
    load().then((again) => { if (again) nightowl.every(2000, load); })
      .catch((err) => console.warn("nightowl: metrics failed:", err.message));
  });
})();
