// One run: a uPlot chart per metric, each <div class="chart" data-metric data-points>; polled
// every second while the run is live, so its charts grow as it logs, and while a large run's
// charts are drawn from a preview (data-partial="true"), until the server has read it whole.
"use strict";

(() => {
  const { el, api, fmtTime, fmtDuration, fmtValue, showError, readControls, seriesUrl, forLog, makeChart,
    faint, COLORS } = TM;
  const runId = decodeURIComponent(window.location.pathname.slice("/runs/".length));
  const charts = new Map();  // metric -> {box, plotBox, plot, shape}
  const POLL_MS = 1000;
  let configShown = "";
  let timer = null;

  function renderRun(run) {
    document.title = `tplr-metrics: ${run.name}`;
    document.getElementById("run-name").textContent = run.name;
    const who = [run.role && `role ${run.role}`, run.uid && `uid ${run.uid}`].filter(Boolean).join(", ");
    document.getElementById("run-meta").textContent =
      `${run.run_id} · ${run.status}${who ? " · " + who : ""} · started ${fmtTime(run.started_at)} · ` +
      `${fmtDuration(run.duration_s)} · ${run.points} points`;
    document.getElementById("live").textContent = run.live ? "● live (updating every second)" : "";
    const json = JSON.stringify(run.config || {});
    if (json !== configShown) {
      configShown = json;
      const tbody = document.querySelector("#config tbody");
      tbody.replaceChildren(...Object.keys(run.config || {}).sort().map((key) => {
        const tr = el("tr", { "data-config-key": key });
        tr.append(el("td", {}, key), el("td", {}, TM.valueText(run.config[key])));
        return tr;
      }));
    }
  }

  function chartFor(metric) {
    let chart = charts.get(metric);
    if (!chart) {
      const box = el("div", { className: "chart", "data-metric": metric, "data-points": "0" });
      box.append(el("h3", {}, metric));
      const plotBox = el("div");
      const note = el("div", { className: "note" });
      box.append(plotBox, note);
      document.getElementById("charts").append(box);
      chart = { box, plotBox, note, plot: null, shape: "" };
      charts.set(metric, chart);
    }
    return chart;
  }

  function draw(chart, series, controls) {
    const smoothed = series.smoothed !== undefined;
    const data = [series.x, forLog(series.y, controls.log)];
    const lines = [{ label: smoothed ? "raw" : "value", stroke: smoothed ? faint(COLORS[0]) : COLORS[0], width: 1 }];
    if (smoothed) {
      data.push(forLog(series.smoothed, controls.log));
      lines.push({ label: series.smoothing.kind, stroke: COLORS[0], width: 2 });
    }
    const shape = `${smoothed}:${controls.log}:${controls.x}`;
    if (chart.plot && chart.shape === shape) {
      chart.plot.setData(data);
    } else {
      if (chart.plot) chart.plot.destroy();
      chart.plot = makeChart(chart.plotBox, lines, data, { log: controls.log, xLabel: controls.x });
      chart.shape = shape;
    }
    chart.box.dataset.points = String(series.x.length);
    const cut = series.total > series.x.length ? ` (downsampled from ${series.total})` : "";
    const last = series.y.length ? `last ${fmtValue(series.y[series.y.length - 1])} · ` : "";
    const preview = series.partial ? ` · a preview: reading the whole run, ${series.partial.read} of ${series.partial.of} points` : "";
    chart.note.textContent = `${last}${series.x.length} points drawn${cut}` +
      (series.missing_x ? ` · ${series.missing_x} without ${controls.x}` : "") + preview;
    chart.box.dataset.partial = series.partial ? "true" : "false";
  }

  const TAG_KEYS = ["role", "uid", "prefix", "group", "job_type", "version", "host"];
  function renderTags(run) {
    const tbody = document.querySelector("#tags tbody");
    tbody.replaceChildren(...TAG_KEYS.filter((key) => run[key]).map((key) => {
      const tr = el("tr", { "data-tag": key });
      tr.append(el("td", {}, key), el("td", {}, String(run[key])));
      return tr;
    }));
  }

  let artifactsShown = "";
  function renderArtifacts(artifacts) {
    const json = JSON.stringify(artifacts);
    if (json === artifactsShown) return;
    artifactsShown = json;
    const tbody = document.querySelector("#artifacts tbody");
    if (!artifacts.length) {
      const none = el("tr");
      none.append(el("td", { className: "muted", colspan: "4" }, "none logged"));
      tbody.replaceChildren(none);
      return;
    }
    tbody.replaceChildren(...artifacts.map((a) => {
      const tr = el("tr", { "data-artifact": a.name });
      tr.append(el("td", {}, a.name), el("td", {}, a.kind), el("td", {}, String(a.path)), el("td", {}, fmtTime(a.time_ns)));
      return tr;
    }));
  }

  let tablesShown = "";
  function renderTables(tables) {
    const json = JSON.stringify(tables);
    if (json === tablesShown) return;
    tablesShown = json;
    const list = document.getElementById("tables");
    if (!tables.length) {
      list.replaceChildren(el("li", { className: "muted" }, "none logged"));
      return;
    }
    list.replaceChildren(...tables.map((t) => {
      const li = el("li", { "data-table": t.name });
      const link = el("a", { href: `${TM.runUrl(runId)}/tables/${encodeURIComponent(t.name)}` }, t.name);
      const step = t.step === null ? "" : `, step ${t.step}`;
      li.append(link, document.createTextNode(` (${t.rows} rows${step}; ${t.versions} version(s))`));
      return li;
    }));
  }

  async function refresh() {
    const controls = readControls();
    const base = `/api/runs/${encodeURIComponent(runId)}`;
    const [run, answer, tables, artifacts] = await Promise.all(
      [base, `${base}/metrics`, `${base}/tables`, `${base}/artifacts`].map((url) => api(url)));
    renderRun(run);
    renderTags(run);
    renderTables(tables.tables);
    renderArtifacts(artifacts.artifacts);
    const all = await Promise.all(answer.metrics.map((m) => api(seriesUrl(runId, m.name, controls))));
    all.forEach((series) => draw(chartFor(series.metric), series, controls));
    return run.live || Boolean(answer.partial);  // a large run's preview: poll until it is read whole
  }

  async function poll() {
    let live = false;
    try {
      live = await refresh();
      showError(null);
    } catch (error) {
      showError(error);
      live = error.status !== 404;  // try again (the store may have been busy), unless the run is gone
    }
    timer = live ? setTimeout(poll, POLL_MS) : null;  // an ended run is drawn once and left
    document.body.dataset.polling = live ? "live" : "stopped";  // for tests and curious readers
  }

  function redraw() {
    for (const chart of charts.values()) chart.shape = "";  // controls changed: rebuild each chart
    if (timer) clearTimeout(timer);
    poll();
  }

  for (const id of ["x-key", "smoothing", "window", "log-scale"]) document.getElementById(id).addEventListener("change", redraw);
  window.addEventListener("resize", () => {
    for (const chart of charts.values()) if (chart.plot) chart.plot.setSize({ width: TM.chartWidth(chart.box), height: 240 });
  });
  poll();
})();
