// One logged table (LogStore.log_table): a page of 50 rows at a time, narrowed by a search over
// its cells on the server. Every cell is written as text; long cells wrap, newlines are kept.
"use strict";

(() => {
  const { el, api, fmtTime, showError } = TM;
  const PAGE_ROWS = 50;
  const rest = window.location.pathname.slice("/runs/".length);
  const cut = rest.indexOf("/tables/");
  const runId = decodeURIComponent(rest.slice(0, cut));
  const name = decodeURIComponent(rest.slice(cut + "/tables/".length));
  const state = { page: 0, query: "", version: -1, pages: 1 };
  let asked = 0;  // answers to older requests (a search typed on) are dropped

  document.getElementById("run-link").href = TM.runUrl(runId);
  document.getElementById("table-name").textContent = name;
  document.title = `tplr-metrics: ${name}`;

  function cellText(value) {
    if (value === undefined || value === null) return "";
    return typeof value === "string" ? value : JSON.stringify(value);
  }

  function render(answer) {
    const body = document.body;
    body.dataset.page = String(state.page + 1);
    body.dataset.matching = String(answer.matching);
    const step = answer.step === null ? "" : ` · step ${answer.step}`;
    document.getElementById("table-meta").textContent =
      `run ${runId} · ${answer.rows_total} rows · logged ${fmtTime(answer.time_ns)}${step}`;
    const select = document.getElementById("version");
    if (select.options.length !== answer.versions.length) {
      select.replaceChildren(...answer.versions.map((v, i) => {
        const label = `${i + 1}: ${v.step === null ? "" : "step " + v.step + ", "}${v.rows} rows, ${fmtTime(v.time_ns)}`;
        return el("option", { value: String(i) }, label);
      }));
    }
    select.value = String(answer.version);
    state.pages = Math.max(1, Math.ceil(answer.matching / PAGE_ROWS));
    const first = answer.matching ? answer.offset + 1 : 0;
    const last = answer.offset + answer.rows.length;
    const narrowed = answer.query ? ` matching (of ${answer.rows_total})` : "";
    document.getElementById("page-info").textContent =
      `page ${state.page + 1} of ${state.pages} · rows ${first}-${last} of ${answer.matching}${narrowed}`;
    document.getElementById("prev").disabled = state.page === 0;
    document.getElementById("next").disabled = state.page + 1 >= state.pages;
    const head = el("tr");
    head.append(el("th", {}, "row"), ...answer.columns.map((c) => el("th", {}, c)));
    document.querySelector("#table-view thead").replaceChildren(head);
    document.querySelector("#table-view tbody").replaceChildren(...answer.rows.map((r) => {
      const tr = el("tr", { "data-row": String(r.row) });
      tr.append(el("td", { className: "num" }, r.row), ...answer.columns.map((c) => el("td", {}, cellText(r.values[c]))));
      return tr;
    }));
  }

  async function load() {
    const mine = ++asked;
    const q = new URLSearchParams({ offset: String(state.page * PAGE_ROWS), limit: String(PAGE_ROWS),
      q: state.query, version: String(state.version) });
    try {
      const answer = await api(`/api/runs/${encodeURIComponent(runId)}/tables/${encodeURIComponent(name)}?${q}`);
      if (mine !== asked) return;
      render(answer);
      showError(null);
    } catch (error) {
      if (mine === asked) showError(error);
    }
  }

  let typing = null;
  document.getElementById("search").addEventListener("input", (event) => {
    clearTimeout(typing);
    typing = setTimeout(() => { state.query = event.target.value; state.page = 0; load(); }, 150);
  });
  document.getElementById("version").addEventListener("change", (event) => {
    state.version = parseInt(event.target.value, 10);
    state.page = 0;
    load();
  });
  document.getElementById("prev").addEventListener("click", () => { if (state.page > 0) { state.page--; load(); } });
  document.getElementById("next").addEventListener("click", () => {
    if (state.page + 1 < state.pages) { state.page++; load(); }
  });
  load();
})();
