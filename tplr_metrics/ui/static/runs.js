// The run list: one <tr data-run-id> per run, filters, compare selection, delete.
"use strict";

(() => {
  const { el, api, fmtTime, fmtDuration, fmtValue, runUrl, showError } = TM;
  const body = document.querySelector("#runs tbody");
  const selected = new Set();
  let deletable = false;
  let runs = [];

  function cell(text, className) { return el("td", className ? { className } : {}, text); }

  function searchText(run) {
    const parts = [run.name, run.run_id, run.role, run.uid, run.status];
    for (const [k, v] of Object.entries(run.config || {})) parts.push(k, TM.valueText(v));
    return parts.join(" ").toLowerCase();
  }

  function row(run) {
    const tr = el("tr", { "data-run-id": run.run_id });
    const box = el("input", { type: "checkbox", "aria-label": "select for comparison" });
    box.checked = selected.has(run.run_id);
    box.addEventListener("change", () => {
      if (box.checked) selected.add(run.run_id); else selected.delete(run.run_id);
      updateCompare();
    });
    const pick = el("td"); pick.append(box); tr.append(pick);
    const name = el("td");
    name.append(el("a", { href: runUrl(run.run_id), className: "run-name", title: run.run_id }, run.name));
    tr.append(name, cell(run.run_id, "muted"));  // names repeat (miner/1 twice); ids do not
    const status = el("td");
    status.append(el("span", { className: `status status-${run.status}` }, run.status));
    tr.append(status);
    tr.append(cell(run.role || "-"), cell(run.uid || "-"), cell(fmtTime(run.started_at)),
      cell(fmtDuration(run.duration_s), "num"), cell(String(run.points), "num"));
    const head = run.headline;
    tr.append(cell(head ? `${head.metric} = ${fmtValue(head.value)}` : "-"));
    const actions = el("td");
    if (deletable) {
      const button = el("button", { className: "delete", type: "button" }, "Delete");
      button.disabled = run.live;
      button.title = run.live ? "still being written" : "delete the run and its points";
      button.addEventListener("click", () => remove(run, tr));
      actions.append(button);
    }
    tr.append(actions);
    return tr;
  }

  async function remove(run, tr) {
    if (!window.confirm(`Delete run "${run.name}" (${run.run_id}) and its ${run.points} points? This cannot be undone.`)) return;
    try {
      await api(`/api/runs/${encodeURIComponent(run.run_id)}`, { method: "DELETE" });
      tr.remove();
      rendered.delete(run.run_id);
      selected.delete(run.run_id);
      runs = runs.filter((r) => r.run_id !== run.run_id);
      updateCompare();
      showError(null);
    } catch (error) { showError(error); }
  }

  function fillSelect(id, values) {
    const select = document.getElementById(id);
    const current = select.value;
    const have = new Set(Array.from(select.options).map((o) => o.value));
    for (const v of values) if (v && !have.has(v)) select.append(el("option", { value: v }, v));
    select.value = current;
  }

  function applyFilters() {
    const status = document.getElementById("filter-status").value;
    const role = document.getElementById("filter-role").value;
    const text = document.getElementById("filter-text").value.trim().toLowerCase();
    for (const tr of body.rows) {
      const run = runs.find((r) => r.run_id === tr.dataset.runId);
      const shown = run && (!status || run.status === status) && (!role || run.role === role)
        && (!text || searchText(run).includes(text));
      tr.classList.toggle("hidden", !shown);
    }
  }

  function updateCompare() { document.getElementById("compare").disabled = selected.size < 2; }

  const rendered = new Map();  // run_id -> [its JSON, its <tr>]: unchanged rows stay in place

  function render() {
    const rows = runs.map((run) => {
      const json = JSON.stringify(run);
      const kept = rendered.get(run.run_id);
      if (kept && kept[0] === json) return kept[1];
      const tr = row(run);
      rendered.set(run.run_id, [json, tr]);
      return tr;
    });
    for (const id of [...rendered.keys()]) if (!runs.some((r) => r.run_id === id)) rendered.delete(id);
    body.replaceChildren(...rows);
    document.getElementById("empty").hidden = runs.length > 0;
    fillSelect("filter-status", [...new Set(runs.map((r) => r.status))].sort());
    fillSelect("filter-role", [...new Set(runs.map((r) => r.role))].sort());
    applyFilters();
    updateCompare();
  }

  async function load() {
    try {
      const answer = await api("/api/runs");
      deletable = answer.deletable;
      document.getElementById("source").textContent = answer.source;
      runs = answer.runs;
      for (const id of [...selected]) if (!runs.some((r) => r.run_id === id)) selected.delete(id);
      render();
      showError(null);
    } catch (error) { showError(error); }
  }

  for (const id of ["filter-status", "filter-role"]) document.getElementById(id).addEventListener("change", applyFilters);
  document.getElementById("filter-text").addEventListener("input", applyFilters);
  document.getElementById("compare").addEventListener("click", () => {
    const ids = [...selected].map(encodeURIComponent).join(",");
    window.location.href = `/compare?runs=${ids}`;
  });
  load();
  setInterval(load, 3000);  // new runs and statuses appear without a reload
})();
