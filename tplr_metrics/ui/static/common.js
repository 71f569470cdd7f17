// Helpers shared by the pages. Every run name, tag and value goes into the page as text
// (textContent via el()), never as HTML: they come from whoever logged the run.
"use strict";

const TM = (() => {
  const COLORS = ["#2563eb", "#dc2626", "#16a34a", "#9333ea", "#ea580c", "#0891b2", "#be185d", "#4d7c0f"];

  function el(tag, attrs, text) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(attrs || {})) {
      if (key === "className") node.className = value;
      else node.setAttribute(key, value);
    }
    if (text !== undefined && text !== null) node.textContent = String(text);
    return node;
  }

  async function api(path, options) {
    // Same-origin requests carry the token cookie the printed URL left.
    const response = await fetch(path, Object.assign({ credentials: "same-origin" }, options || {}));
    let body = null;
    try { body = await response.json(); } catch (e) { body = null; }
    if (!response.ok) {
      const message = body && body.error ? body.error : `HTTP ${response.status}`;
      const error = new Error(message);
      error.status = response.status;
      throw error;
    }
    return body;
  }

  function fmtTime(ns) {
    if (ns === null || ns === undefined) return "-";
    const d = new Date(ns / 1e6);
    const pad = (n) => String(n).padStart(2, "0");
    return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
  }

  function fmtDuration(s) {
    if (s === null || s === undefined) return "-";
    s = Math.max(0, Math.floor(s));
    if (s < 60) return `${s}s`;
    if (s < 3600) return `${Math.floor(s / 60)}m${String(s % 60).padStart(2, "0")}s`;
    if (s < 86400) return `${Math.floor(s / 3600)}h${String(Math.floor(s % 3600 / 60)).padStart(2, "0")}m`;
    return `${Math.floor(s / 86400)}d${String(Math.floor(s % 86400 / 3600)).padStart(2, "0")}h`;
  }

  function fmtValue(v) {
    if (typeof v !== "number") return String(v);
    if (v !== 0 && (Math.abs(v) >= 1e6 || Math.abs(v) < 1e-3)) return v.toExponential(3);
    return String(Math.round(v * 1e4) / 1e4);
  }

  // A config value as text: nested hyperparams (a dict, a list) as JSON, not "[object Object]".
  function valueText(v) {
    return v !== null && typeof v === "object" ? JSON.stringify(v) : String(v);
  }

  function runUrl(runId) { return "/runs/" + encodeURIComponent(runId); }

  function showError(error) {
    const box = document.getElementById("error");
    if (box) box.textContent = error ? String(error.message || error) : "";
  }

  // The controls every chart page shares: x key, smoothing, window, log scale.
  function readControls() {
    const windowValue = parseInt(document.getElementById("window").value, 10);
    return {
      x: document.getElementById("x-key").value,
      smoothing: document.getElementById("smoothing").value,
      window: Number.isFinite(windowValue) && windowValue > 0 ? windowValue : 10,
      log: document.getElementById("log-scale").checked,
    };
  }

  function seriesUrl(runId, metric, controls) {
    const q = new URLSearchParams({ metric: metric, x: controls.x, max_points: "2000",
      smoothing: controls.smoothing, window: String(controls.window) });
    return `/api/runs/${encodeURIComponent(runId)}/series?${q}`;
  }

  // On a log axis a value <= 0 has no place: it becomes a gap.
  function forLog(values, log) {
    return log ? values.map((v) => (v === null || v <= 0 ? null : v)) : values;
  }

  function chartWidth(box) { return Math.max(320, box.clientWidth - 14); }

  // A uPlot chart in `box`; series: [{label, stroke, width, alpha}], data: [xs, ys...].
  function makeChart(box, series, data, options) {
    const opts = {
      width: chartWidth(box),
      height: 240,
      scales: { x: { time: false }, y: options.log ? { distr: 3 } : {} },
      axes: [{ label: options.xLabel }, {}],
      legend: { show: options.legend !== false },
      cursor: { drag: { x: true, y: false } },
      series: [{ label: options.xLabel }].concat(series.map((s) => ({
        label: s.label, stroke: s.stroke, width: s.width || 1.5, spanGaps: true,
        // A metric with one point has no line to draw: show it as a dot.
        points: { show: (u) => u.data[0].length <= 1 },
      }))),
    };
    return new uPlot(opts, data, box);
  }

  function faint(color) { return color + "55"; }

  return { COLORS, el, api, fmtTime, fmtDuration, fmtValue, valueText, runUrl, showError, readControls, seriesUrl,
    forLog, makeChart, faint, chartWidth };
})();
