"""Every generated Flux query checked by the Flux language server, as Grafana would send it.

No InfluxDB 2.x runs here, so the Flux dialect's queries are checked by the Flux language server
instead: ``@influxdata/flux-lsp-browser`` (a wasm build of influxdata/flux-lsp, pinned in
schema_check/package.json), driven by schema_check/flux_check.mjs, which opens each query as its
own document and collects the server's ``textDocument/publishDiagnostics``.

The server does more than parse: it runs Flux's semantic analysis against its bundled standard
library, so besides syntax errors (an unbalanced parenthesis, a missing operand) it reports
undefined identifiers (an unknown function, a package used without its ``import``, a Grafana
macro left unexpanded), unknown or missing arguments and type errors (``movingAverage(n: "5")``).
It cannot know the data: a misspelt measurement, field or tag is still a valid query.

The queries are those of the committed dashboards/flux/*.json (panel targets, query variables,
annotations) and any Flux query of the alert rules, each expanded the way Grafana expands it
(tests/grafana_macros.py ``expand_flux``: template variables with All, one value and several
values, ``v.timeRangeStart``/``v.timeRangeStop``, ``v.windowPeriod`` and ``v.defaultBucket``) for
several time ranges. Needs node and ``npm ci`` in tests/dashboards/schema_check/; skips otherwise.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest

from tplr_metrics.dashboards import DATASOURCES, VARIABLES
from tplr_metrics.dashboards.model import VERSION_KIND, VERSION_KINDS

from ..grafana_macros import ALL, expand_flux, interval_ms
from .grafana_types import HERE

REPO = Path(__file__).resolve().parents[2]
SCRIPT = HERE / "flux_check.mjs"
PACKAGE = HERE / "node_modules" / "@influxdata" / "flux-lsp-browser" / "package.json"
VERSION = "0.8.40"
BUCKET = "tplr"

needs_lsp = pytest.mark.skipif(
    shutil.which("node") is None or not PACKAGE.exists(),
    reason="node or the npm packages are missing: cd tests/dashboards/schema_check && npm ci",
)

Selection = Mapping[str, Sequence[str] | str]
#: All; one value of each variable (and releases only); several, with characters a regex escapes.
SELECTIONS: dict[str, Selection] = {
    "all": {**dict.fromkeys(VARIABLES, ALL), VERSION_KIND: VERSION_KINDS["all"]},
    "one": {
        "netuid": ["3"],
        "project": ["templar"],
        "role": ["miner"],
        "uid": ["1"],
        "group": ["miner"],
        "version": ["2.1.4"],
        "runtime_id": ["9f1c2d3e"],
        VERSION_KIND: VERSION_KINDS["releases"],
    },
    "several": {
        "netuid": ["3", "5"],
        "project": ["templar", "dev/local"],
        "role": ["miner", "validator"],
        "uid": ["0", "1", "12"],
        "group": ["miner", "evaluations"],
        "version": ["2.1.4", "2.2.0-dev+local", "v2.1.4rc1"],
        "runtime_id": ["9f1c2d3e", "a0b1c2d3"],
        VERSION_KIND: VERSION_KINDS["all"],
    },
}
TO_MS = 1_735_689_600_000  # 2025-01-01T00:00:00Z: a fixed "now"
#: Grafana's "Last 5 minutes" (v.windowPeriod 200ms), the dashboards' default 6 hours (20s), 7 days (10m0s).
RANGES = {"5m": 5 * 60_000, "6h": 6 * 3_600_000, "7d": 7 * 86_400_000}
#: A Grafana macro or template variable left in a query after expansion.
UNEXPANDED = re.compile(r"\$\{|\[\[|\$\w|\bv\.\w")


def _dashboard_queries() -> dict[str, str]:
    """``file / where`` -> the query as the committed JSON holds it."""
    files = sorted((REPO / "dashboards" / "flux").glob("*.json"))
    assert len(files) == 5
    found: dict[str, str] = {}
    for path in files:
        data = json.loads(path.read_text(encoding="utf-8"))
        for panel in data["panels"]:
            for target in panel.get("targets", []):
                found[f"{path.name} / panel {panel['title']!r} [{target['refId']}]"] = target["query"]
        for variable in data["templating"]["list"]:
            if variable["type"] == "query":
                found[f"{path.name} / variable {variable['name']}"] = variable["query"]
        for annotation in data["annotations"]["list"]:
            if "target" in annotation:
                found[f"{path.name} / annotation {annotation['name']!r}"] = annotation["target"]["query"]
    return found


def _alert_queries() -> dict[str, tuple[str, int, int]]:
    """``rule [refId]`` -> (query, range ms, interval ms) of every alert query on the Flux source."""
    found: dict[str, tuple[str, int, int]] = {}
    for path in sorted((REPO / "telemetry" / "grafana" / "provisioning" / "alerting").glob("*.json")):
        for group in json.loads(path.read_text(encoding="utf-8"))["groups"]:
            for rule in group["rules"]:
                for item in rule["data"]:
                    if item["datasourceUid"] == DATASOURCES["flux"]["uid"]:
                        span = item["relativeTimeRange"]["from"] * 1000
                        interval = int(item["model"].get("intervalMs", interval_ms(TO_MS - span, TO_MS)))
                        found[f"{path.name} / rule {rule['title']!r} [{item['refId']}]"] = (
                            item["model"]["query"],
                            span,
                            interval,
                        )
    return found


def _expansions() -> dict[str, str]:
    """Every query expanded for every selection and range: expanded text -> its first name."""
    out: dict[str, str] = {}
    for where, text in _dashboard_queries().items():
        for sel_name, selected in SELECTIONS.items():
            for range_name, span in RANGES.items():
                from_ms = TO_MS - span
                expanded = expand_flux(text, selected, from_ms, TO_MS, interval_ms(from_ms, TO_MS), BUCKET)
                out.setdefault(expanded, f"{where} ({sel_name}, last {range_name})")
    for where, (text, span, interval) in _alert_queries().items():
        out.setdefault(expand_flux(text, {}, TO_MS - span, TO_MS, interval, BUCKET), where)
    return out


def flux_diagnostics(queries: Mapping[str, str]) -> tuple[dict[str, Any], dict[str, list[dict[str, Any]]]]:
    """The server's info, and ``id -> diagnostics`` for each ``id -> Flux text``, in one node run."""
    payload = {"queries": [{"id": key, "text": text} for key, text in queries.items()]}
    done = subprocess.run(
        ["node", str(SCRIPT)],
        input=json.dumps(payload),
        capture_output=True,
        text=True,
        timeout=600,
        cwd=HERE,
    )
    assert done.returncode == 0, f"flux_check.mjs failed ({done.returncode}): {done.stderr[-3000:]}"
    answer = json.loads(done.stdout)
    results = {r["id"]: r["diagnostics"] for r in answer["results"]}
    assert list(results) == list(queries), "the script answered for other queries than it was given"
    return answer["server"], results


def _report(text: str, diagnostics: list[dict[str, Any]]) -> str:
    lines = text.splitlines()
    out = []
    for d in diagnostics:
        line = lines[d["line"]] if d["line"] < len(lines) else ""
        out.append(f"    {d['line'] + 1}:{d['character'] + 1} {d['message']} (severity {d['severity']})\n      {line}")
    return "\n".join(out)


def test_the_pinned_language_server() -> None:
    package = json.loads((HERE / "package.json").read_text(encoding="utf-8"))
    lock = json.loads((HERE / "package-lock.json").read_text(encoding="utf-8"))
    assert package["devDependencies"]["@influxdata/flux-lsp-browser"] == VERSION
    assert lock["packages"]["node_modules/@influxdata/flux-lsp-browser"]["version"] == VERSION


def test_every_expansion_is_complete() -> None:
    """No macro nor variable is left for the server to stumble on (or to let through unseen)."""
    known = {*VARIABLES, VERSION_KIND}
    for where, text in _dashboard_queries().items():
        used = set(re.findall(r"\$\{(\w+)(?::\w+)?\}", text))
        assert used <= known, f"{where}: unknown variables {used - known}"
    left = {name: text for text, name in _expansions().items() if UNEXPANDED.search(text)}
    assert not left, "\n\n".join(f"{name}:\n{text}" for name, text in left.items())


@needs_lsp
def test_every_flux_query_has_no_language_server_diagnostics(capsys: pytest.CaptureFixture[str]) -> None:
    expansions = _expansions()
    names = {f"q{i}": name for i, name in enumerate(expansions.values())}
    server, results = flux_diagnostics({f"q{i}": text for i, text in enumerate(expansions)})
    assert server == {"name": "flux-lsp", "version": VERSION}
    texts = dict(zip(names, expansions, strict=True))
    bad = {key: diags for key, diags in results.items() if diags}
    with capsys.disabled():
        print(
            f"\n  flux-lsp {server['version']}: {len(_dashboard_queries())} dashboard queries, "
            f"{len(_alert_queries())} Flux alert queries, {len(expansions)} distinct expansions "
            f"({len(SELECTIONS)} selections x {len(RANGES)} ranges), {sum(map(len, bad.values()))} diagnostics"
        )
    assert not bad, f"{len(bad)} of {len(results)} Flux queries have diagnostics:\n" + "\n\n".join(
        f"  {names[key]}:\n{_report(texts[key], diags)}\n---\n{texts[key]}" for key, diags in list(bad.items())[:10]
    )


@needs_lsp
def test_the_check_can_fail() -> None:
    """Broken queries, among good ones in the same run, each get their own diagnostics."""
    real = next(text for text, name in _expansions().items() if "/ panel " in name)
    cut = real.rstrip()
    assert cut.endswith(")")
    broken = {
        "unbalanced paren": 'from(bucket: "tplr"\n  |> range(start: -1h)',
        "missing operand": 'from(bucket: "tplr")\n  |> range(start: -1h)\n  |> filter(fn: (r) => r._measurement == )',
        "unknown function": 'from(bucket: "tplr")\n  |> range(start: -1h)\n  |> smooth(n: 5)',
        "no import": 'from(bucket: "tplr")\n  |> range(start: date.sub(d: 1h, from: now()), stop: now())',
        "wrong type": 'from(bucket: "tplr")\n  |> range(start: -1h)\n  |> movingAverage(n: "5")',
        "unknown argument": 'from(bucket: "tplr")\n  |> range(start: -1h, end: now())',
        "real query cut short": cut[:-1],
        "macro left unexpanded": real.replace(f'"{BUCKET}"', "v.defaultBucket", 1),
    }
    good = {
        "good: a real query": real,
        "good: a small one": 'from(bucket: "tplr")\n  |> range(start: -1h)\n  |> filter(fn: (r) => r.uid =~ /^(0|1)$/)',
    }
    first, last = good.items()
    _, results = flux_diagnostics(dict([first, *broken.items(), last]))  # good ones before and after
    assert all(not results[k] for k in good), {k: results[k] for k in good}
    messages = {k: " | ".join(d["message"] for d in results[k]) for k in broken}
    assert all(messages.values()), messages
    assert "RPAREN" in messages["unbalanced paren"] and "RPAREN" in messages["missing operand"], messages
    assert "undefined identifier smooth" in messages["unknown function"], messages
    assert "undefined identifier date" in messages["no import"], messages
    assert "expected int but found string" in messages["wrong type"], messages
    assert "unexpected argument end" in messages["unknown argument"], messages
    assert "undefined identifier v" in messages["macro left unexpanded"], messages
