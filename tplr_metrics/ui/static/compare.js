// Several runs: per metric one chart with a curve per run (legend by run name), and a table of
// the config keys whose values differ (a key a run lacks shows "missing").
"use strict";

(() => {
  const { el, api, showError, readControls, seriesUrl, forLog, makeChart, COLORS } = TM;

  // ?runs=A,B with each id URI-encoded: split first, so an id holding a comma survives.
  function runIds() {
    const raw = window.location.search.slice(1).split("&").find((p) => p.startsWith("runs="));
    if (!raw) return [];
    return raw.slice(5).split(",").filter(Boolean).map(decodeURIComponent);
  }

  function configDiff(runs, labels) {
    const table = document.querySelector("table[data-config-diff]");
    const head = table.tHead.rows[0];
    head.replaceChildren(el("th", {}, "Key"), ...labels.map((label) => el("th", {}, label)));
    const keys = [...new Set(runs.flatMap((r) => Object.keys(r.config || {})))].sort();
    const differing = keys.filter((key) => {
      const values = runs.map((r) => (key in (r.config || {}) ? TM.valueText(r.config[key]) : null));
      return values.some((v) => v !== values[0]);
    });
    table.tBodies[0].replaceChildren(...differing.map((key) => {
      const tr = el("tr", { "data-config-key": key });
      tr.append(el("td", {}, key));
      for (const run of runs) {
        const has = key in (run.config || {});
        tr.append(el("td", has ? {} : { className: "missing" }, has ? TM.valueText(run.config[key]) : "missing"));
      }
      return tr;
    }));
    document.getElementById("no-diff").hidden = differing.length > 0;
  }

  async function load() {
    const ids = runIds();
    const controls = readControls();
    const runs = await Promise.all(ids.map((id) => api(`/api/runs/${encodeURIComponent(id)}`)));
    document.getElementById("runs-compared").textContent = runs.map((r) => `${r.name} (${r.run_id})`).join(" · ");
    // The legend names runs; two of one name (miner/1 twice) get their run ids too.
    const labels = runs.map((r) => (runs.filter((o) => o.name === r.name).length > 1 ? `${r.name} (${r.run_id})` : r.name));
    configDiff(runs, labels);
    const lists = await Promise.all(ids.map((id) => api(`/api/runs/${encodeURIComponent(id)}/metrics`)));
    const metrics = [...new Set(lists.flatMap((l) => l.metrics.map((m) => m.name)))].sort();
    const boxes = document.getElementById("charts");
    boxes.replaceChildren();
    for (const metric of metrics) {
      const having = ids.map((id, i) => [id, i]).filter(([, i]) => lists[i].metrics.some((m) => m.name === metric));
      const all = await Promise.all(having.map(([id]) => api(seriesUrl(id, metric, controls))));
      const tables = all.map((s) => [s.x, forLog(s.smoothed !== undefined ? s.smoothed : s.y, controls.log)]);
      const data = tables.length === 1 ? tables[0] : uPlot.join(tables);  // one shared x, gaps elsewhere
      const points = all.reduce((n, s) => n + s.x.length, 0);
      const box = el("div", { className: "chart", "data-metric": metric, "data-points": String(points) });
      box.append(el("h3", {}, metric));
      const plotBox = el("div");
      box.append(plotBox);
      boxes.append(box);
      const lines = having.map(([, i]) => ({ label: labels[i], stroke: COLORS[i % COLORS.length], width: 1.5 }));
      makeChart(plotBox, lines, data, { log: controls.log, xLabel: controls.x });
    }
    return lists.some((l) => l.partial);  // a large run drawn from its preview: load again
  }

  let timer = null;
  async function reload() {
    if (timer) clearTimeout(timer);
    let again = false;
    try { again = await load(); showError(null); } catch (error) { showError(error); }
    timer = again ? setTimeout(reload, 1000) : null;
  }

  for (const id of ["x-key", "smoothing", "window", "log-scale"]) document.getElementById(id).addEventListener("change", reload);
  reload();
})();
