"""Every dashboard panel proven against real data.

The simulator writes into a real InfluxDB 1.x; each InfluxQL panel query is expanded the way
Grafana expands it ($timeFilter, $__interval, ${uid:regex}, "All") and run there, and must
return rows. The Flux dialect runs the same way against InfluxDB 2.x where Docker exists.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import time
import urllib.parse
import uuid
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest

from tplr_metrics import MetricsLogger
from tplr_metrics.catalog import BENCHMARK_TASKS
from tplr_metrics.cli import main
from tplr_metrics.dashboards import DATASOURCES, DIALECTS, VARIABLES, all_dashboards, build, build_all, panel_targets
from tplr_metrics.dashboards import flux as flux_dialect
from tplr_metrics.dashboards import influxql as influxql_dialect
from tplr_metrics.dashboards.model import VERSION_KIND, VERSION_KINDS

from ..grafana_macros import ALL, expand_flux, expand_influxql, interval_ms
from ..influx2_container import influx2_container
from ..servers import InfluxDB1, http

REPO = Path(__file__).resolve().parents[2]
ALL_SELECTED: dict[str, Sequence[str] | str] = {**dict.fromkeys(VARIABLES, ALL), VERSION_KIND: VERSION_KINDS["all"]}
# Enough time-compressed windows for a 5-point moving average at the 5-minute range's interval.
SIMULATE = ["simulate", "--windows", "12", "--window-seconds", "0.25", "--peers", "8", "--seed", "11"]


def _simulate_into(env: Mapping[str, str], home: Path, args: Sequence[str] = SIMULATE) -> None:
    with pytest.MonkeyPatch.context() as mp:
        for name in list(os.environ):
            if name.startswith(("INFLUXDB_", "TPLR_METRICS_")):
                mp.delenv(name)
        for name, value in env.items():
            mp.setenv(name, value)
        mp.setenv("TPLR_METRICS_HOME", str(home))
        assert main([*args, "--json"]) == 0


@pytest.fixture(scope="module")
def simulated(influx1: InfluxDB1, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, int, int]]:
    """A database of simulator data, and Grafana's "Last 5 minutes" range around it."""
    db = "t_dash_" + uuid.uuid4().hex[:10]
    home = tmp_path_factory.mktemp("tplr_home")
    _simulate_into({"INFLUXDB_URL": influx1.url, "INFLUXDB_DATABASE": db, "INFLUXDB_API": "v1"}, home)
    # A bare logger (no role, uid, group): "All" must keep points that lack those tags.
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("TPLR_METRICS_HOME", str(home))
        with MetricsLogger(url=influx1.url, database=db, api="v1", flush_interval=50) as bare:
            bare.log("tplr_metrics_health", {}, {"queue_depth": 0, "written_per_s": 1.0, "dropped": 0})
    to_ms = int(time.time() * 1000) + 1000
    yield db, to_ms - 5 * 60 * 1000, to_ms


def _run_influxql(server: InfluxDB1, db: str, text: str) -> list[dict[str, Any]]:
    series: list[dict[str, Any]] = []
    for result in server.query(text, db=db).get("results", []):
        series.extend(result.get("series", []) or [])
    return series


def _rows(series: list[dict[str, Any]]) -> int:
    return sum(len(s.get("values") or []) for s in series)


def _expand(text: str, rng: tuple[str, int, int], selected: Mapping[str, Sequence[str] | str]) -> str:
    _, from_ms, to_ms = rng
    return expand_influxql(text, selected, from_ms, to_ms, interval_ms(from_ms, to_ms))


@pytest.mark.parametrize("slug", [d.slug for d in all_dashboards()])
def test_every_influxql_panel_returns_rows(
    slug: str, influx1: InfluxDB1, simulated: tuple[str, int, int], capsys: pytest.CaptureFixture[str]
) -> None:
    db = simulated[0]
    dashboard = next(d for d in all_dashboards() if d.slug == slug)
    per_panel: dict[str, int] = {}
    empty: list[str] = []
    queries = 0
    for panel in dashboard.panels():
        for target in panel_targets(panel, "influxql"):
            queries += 1
            rows = _rows(_run_influxql(influx1, db, _expand(target["query"], simulated, ALL_SELECTED)))
            per_panel[f"{panel.title} [{target['refId']}]"] = rows
            if rows == 0:
                empty.append(f"{panel.title} [{target['refId']}]: {target['query']}")
    with capsys.disabled():
        print(
            f"\n  {slug}: {len(dashboard.panels())} panels, {queries} InfluxQL queries, {sum(per_panel.values())} rows"
        )
    assert not empty, "panels without data:\n" + "\n".join(empty)


def test_template_variables_list_the_simulated_tags(influx1: InfluxDB1, simulated: tuple[str, int, int]) -> None:
    db = simulated[0]

    def values(name: str, selected: Mapping[str, Sequence[str] | str]) -> set[str]:
        text = _expand(influxql_dialect.variable_query(name), simulated, selected)
        return {row[1] for s in _run_influxql(influx1, db, text) for row in s["values"]}

    assert values("role", ALL_SELECTED) == {"miner", "validator", "evaluator"}
    assert values("group", ALL_SELECTED) == {"miner", "validator", "evaluations"}
    assert values("uid", {**ALL_SELECTED, "role": ["validator"]}) == {"8"}
    assert values("uid", {**ALL_SELECTED, "role": ["miner", "evaluator"]}) == {"0", "1", "9"}
    assert len(values("runtime_id", {**ALL_SELECTED, "role": ["miner"]})) == 2
    assert values("version", ALL_SELECTED)  # the library's version, regex-escaped when selected


def test_selected_variables_filter_the_panels(influx1: InfluxDB1, simulated: tuple[str, int, int]) -> None:
    db = simulated[0]
    miners = next(d for d in all_dashboards() if d.slug == "miners")
    loss = panel_targets(miners.panels()[0], "influxql")[0]["query"]
    version = sorted(
        row[1] for s in _run_influxql(influx1, db, 'SHOW TAG VALUES WITH KEY = "version"') for row in s["values"]
    )

    def uids(selected: Mapping[str, Sequence[str] | str]) -> set[str]:
        return {s["tags"]["uid"] for s in _run_influxql(influx1, db, _expand(loss, simulated, selected))}

    assert uids(ALL_SELECTED) == {"0", "1"}
    assert uids({**ALL_SELECTED, "uid": ["1"]}) == {"1"}
    assert uids({**ALL_SELECTED, "uid": ["0", "1"], "version": version}) == {"0", "1"}
    assert uids({**ALL_SELECTED, "role": ["validator"]}) == set()  # a miner panel, filtered to validators


def test_all_keeps_points_without_the_standard_tags(influx1: InfluxDB1, simulated: tuple[str, int, int]) -> None:
    health = next(d for d in all_dashboards() if d.slug == "pipeline-health")
    query = panel_targets(health.panels()[0], "influxql")[0]["query"]
    series = _run_influxql(influx1, simulated[0], _expand(query, simulated, ALL_SELECTED))
    names = {s["name"] for s in series}
    assert "tplr_metrics_health" in names  # the bare logger's: no role, uid or group tag
    assert {"Mtplr_metrics_health", "Vtplr_metrics_health", "Etplr_metrics_health"} <= names


@pytest.mark.parametrize("dialect", DIALECTS)
def test_committed_dashboards_are_current(dialect: str) -> None:
    """The JSON under dashboards/ is what the code generates; rebuild with `tplr-metrics dashboards build`."""
    directory = REPO / "dashboards" / dialect
    expected = build_all(dialect)
    committed = {p.name: p.read_text(encoding="utf-8") for p in directory.glob("*.json")}
    assert sorted(committed) == sorted(expected), "run: tplr-metrics dashboards build"
    stale = [name for name, text in expected.items() if committed[name] != text]
    assert not stale, f"stale dashboards {stale}: run `tplr-metrics dashboards build`"


def test_build_command_writes_both_dialects_and_checks(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out"
    assert main(["dashboards", "build", "--dialect", "influxql", "--out", str(out)]) == 0
    files = sorted(p.name for p in out.iterdir())
    assert files == ["evaluators.json", "miners.json", "pipeline-health.json", "system.json", "validators.json"]
    assert all((out / f).stat().st_mode & 0o777 == 0o644 for f in files)  # new files: Grafana reads them
    assert main(["dashboards", "build", "--dialect", "influxql", "--out", str(out), "--check"]) == 0
    (out / "miners.json").write_text("{}")
    assert main(["dashboards", "build", "--dialect", "influxql", "--out", str(out), "--check"]) == 1
    assert "stale" in capsys.readouterr().err
    (out / "miners.json").chmod(0o640)
    assert main(["dashboards", "build", "--dialect", "influxql", "--out", str(out)]) == 0
    assert (out / "miners.json").stat().st_mode & 0o777 == 0o640  # a replaced file keeps its mode
    both = tmp_path / "both"
    assert main(["dashboards", "build", "--out", str(both)]) == 0
    assert len(list((both / "flux").glob("*.json"))) == 5 and len(list((both / "influxql").glob("*.json"))) == 5


@pytest.mark.parametrize("dialect", DIALECTS)
def test_dashboard_json_shape(dialect: str) -> None:
    for definition in all_dashboards():
        data = build(definition, dialect)
        assert data["uid"] == f"tplr-{definition.slug}-{dialect}" and len(data["uid"]) <= 40
        variables = {v["name"]: v for v in data["templating"]["list"]}
        names = [*VARIABLES]
        names.insert(names.index("version"), VERSION_KIND)
        assert list(variables) == ["datasource", *names]
        for name in VARIABLES:
            var = variables[name]
            assert var["multi"] and var["includeAll"] and var["allValue"] == ".*", name
        panels = [p for p in data["panels"] if p["type"] != "row"]
        assert panels
        for panel in panels:
            assert panel["description"], panel["title"]
            assert panel["datasource"] == {"type": "influxdb", "uid": "${datasource}"}
            assert panel["fieldConfig"]["defaults"]["unit"], panel["title"]
            for target in panel["targets"]:
                text = target["query"]
                assert "${uid:regex}" in text and "${runtime_id:regex}" in text
                if dialect == "influxql":
                    assert "$timeFilter" in text
                else:
                    assert "v.timeRangeStart" in text and "v.defaultBucket" in text
        smoothed = [
            t for p in panels for t in p["targets"] if "moving_average" in t["query"] or "movingAverage" in t["query"]
        ]
        if definition.slug in ("miners", "validators"):
            assert smoothed, "noisy curves get a moving average"


# --- Flux against InfluxDB 2.x (Docker) ---------------------------------------------------------


@pytest.fixture(scope="module")
def influx2(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    with influx2_container(bucket="dash_" + uuid.uuid4().hex[:8]) as server:
        home = tmp_path_factory.mktemp("tplr_home_v2")
        env = {
            "INFLUXDB_URL": server.url,
            "INFLUXDB_TOKEN": server.token,
            "INFLUXDB_ORG": server.org,
            "INFLUXDB_BUCKET": server.bucket,
            "INFLUXDB_API": "v2",
        }
        _simulate_into(env, home)
        yield dataclasses.asdict(server)


@pytest.mark.docker
@pytest.mark.parametrize("slug", [d.slug for d in all_dashboards()])
def test_every_flux_panel_returns_rows_on_influxdb2(
    slug: str, influx2: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    from influxdb_client import InfluxDBClient

    to_ms = int(time.time() * 1000) + 1000
    from_ms = to_ms - 5 * 60 * 1000
    interval = interval_ms(from_ms, to_ms)
    dashboard = next(d for d in all_dashboards() if d.slug == slug)
    empty: list[str] = []
    total = 0
    with InfluxDBClient(url=influx2["url"], token=influx2["token"], org=influx2["org"]) as client:
        api = client.query_api()
        for panel in dashboard.panels():
            for target in panel_targets(panel, "flux"):
                text = expand_flux(target["query"], ALL_SELECTED, from_ms, to_ms, interval, influx2["bucket"])
                rows = sum(len(table.records) for table in api.query(text))
                total += rows
                if rows == 0:
                    empty.append(f"{panel.title} [{target['refId']}]:\n{text}")
        for name in VARIABLES:
            text = expand_flux(
                flux_dialect.variable_query(name), ALL_SELECTED, from_ms, to_ms, interval, influx2["bucket"]
            )
            if not sum(len(table.records) for table in api.query(text)):
                empty.append(f"variable {name}:\n{text}")
    with capsys.disabled():
        print(f"\n  {slug} (Flux, InfluxDB 2.x): {total} rows")
    assert not empty, "Flux panels without data:\n" + "\n\n".join(empty)


@pytest.mark.docker
def test_influxql_panels_run_on_influxdb2_through_a_dbrp_mapping(influx2: dict[str, str]) -> None:
    """The InfluxQL dialect on 2.x: a DBRP mapping names the bucket as a database."""
    headers = {"Authorization": f"Token {influx2['token']}", "Content-Type": "application/json"}
    status, body = http("GET", f"{influx2['url']}/api/v2/buckets?name={influx2['bucket']}", headers=headers)
    bucket_id = json.loads(body)["buckets"][0]["id"]
    mapping = {
        "bucketID": bucket_id,
        "database": influx2["bucket"],
        "retention_policy": "autogen",
        "default": True,
        "org": influx2["org"],
    }
    status, body = http("POST", f"{influx2['url']}/api/v2/dbrps", json.dumps(mapping).encode(), headers)
    assert status in (201, 422), body  # 422: the mapping exists already
    to_ms = int(time.time() * 1000) + 1000
    from_ms = to_ms - 5 * 60 * 1000
    empty = []
    for definition in all_dashboards():
        for panel in definition.panels():
            for target in panel_targets(panel, "influxql"):
                text = expand_influxql(target["query"], ALL_SELECTED, from_ms, to_ms, interval_ms(from_ms, to_ms))
                params = urllib.parse.urlencode({"db": influx2["bucket"], "q": text})
                status, body = http(
                    "POST", f"{influx2['url']}/query?{params}", headers={"Authorization": headers["Authorization"]}
                )
                data = json.loads(body or b"{}")
                rows = sum(
                    len(s.get("values") or []) for r in data.get("results", []) for s in r.get("series", []) or []
                )
                if status != 200 or not rows:
                    empty.append(f"{definition.slug} / {panel.title} [{target['refId']}]: {status} {body[:200]!r}")
    assert not empty, "\n".join(empty)


def test_a_seconds_panel_holds_only_durations() -> None:
    """unit "s" on a count (num_tasks) would print "12 s"; every field of a seconds panel is a duration."""
    duration = ("_time", "_s", "time_s", "_seconds", "duration")
    wrong = [
        f"{d.slug} / {p.title}: {f}"
        for d in all_dashboards()
        for p in d.panels()
        if p.unit == "s"
        for q in p.queries
        for f in q.fields
        if not f.endswith(duration)
    ]
    assert not wrong, wrong
    evaluators = next(d for d in all_dashboards() if d.slug == "evaluators")
    tasks = [p for p in evaluators.panels() if any("num_tasks" in q.fields for q in p.queries)]
    assert [p.unit for p in tasks] == ["short"]


def _js_regex(text: str) -> re.Pattern[str]:
    """Grafana's stringToJsRegex: /pattern/flags."""
    body, _, flags = text[1:].rpartition("/")
    assert text.startswith("/") and body, text
    return re.compile(body, re.IGNORECASE if "i" in flags else 0)


@pytest.mark.parametrize("dialect", DIALECTS)
def test_datasource_variable_offers_only_the_dialects_sources(dialect: str) -> None:
    names = {d: source["name"] for d, source in DATASOURCES.items()}
    others = ["InfluxDB", "influxdb-prod", "InfluxDB Flux (v2)", "my-flux-bucket"]
    for definition in all_dashboards():
        variable = build(definition, dialect)["templating"]["list"][0]
        assert variable["name"] == "datasource" and variable["query"] == "influxdb"
        pattern = _js_regex(variable["regex"])
        offered = {name for name in [*names.values(), *others] if pattern.search(name)}
        if dialect == "flux":
            assert offered == {names["flux"], "InfluxDB Flux (v2)", "my-flux-bucket"}
        else:
            assert offered == {names["influxql"], "InfluxDB", "influxdb-prod"}


@pytest.mark.parametrize("dialect", DIALECTS)
def test_stat_panels_and_healthy_range_thresholds(dialect: str) -> None:
    panels = {p["title"]: p for d in all_dashboards() for p in build(d, dialect)["panels"]}
    stats = [p for p in panels.values() if p["type"] == "stat"]
    assert len(stats) >= 6, [p["title"] for p in stats]
    for stat in stats:
        assert stat["fieldConfig"]["defaults"]["thresholds"]["steps"][0]["value"] is None, stat["title"]
        # A number per series; a text stat (version, window) reads its tag from a table.
        text = stat["options"]["reduceOptions"].get("fields", "")
        expected = "table" if text else "time_series"
        assert all(t["resultFormat"] == expected for t in stat["targets"] if "resultFormat" in t), stat["title"]

    def steps(title: str) -> list[tuple[Any, str]]:
        found = panels[title]["fieldConfig"]["defaults"]["thresholds"]["steps"]
        return [(s.get("value"), s["color"]) for s in found]

    # "should stay 0": red from the first point lost.
    zero = [p.title for d in all_dashboards() for p in d.panels() if "should stay 0" in p.description]
    assert zero
    for title in [*zero, "Rejected points"]:
        assert steps(title) == [(None, "green"), (1, "red")], title
        assert panels[title]["fieldConfig"]["defaults"]["custom"]["thresholdsStyle"]["mode"] == "line+area"
    assert steps("Gather success rate per miner")[0] == (None, "red")  # low gather is the bad end


LEGACY_KEYS = {"rows", "hideControls", "sharedCrosshair", "style"}
LEGACY_PANEL_KEYS = {"span", "height", "minSpan", "error"}


def _walk(value: Any, path: str = "") -> Iterator[tuple[str, str, Any]]:
    """(path, key, value) of every key in a JSON document, at any depth."""
    if isinstance(value, dict):
        for key, item in value.items():
            yield path, key, item
            yield from _walk(item, f"{path}.{key}")
    elif isinstance(value, list):
        for i, item in enumerate(value):
            yield from _walk(item, f"{path}[{i}]")


@pytest.mark.parametrize("dialect", DIALECTS)
def test_generated_json_has_no_nulls_nor_legacy_keys(dialect: str) -> None:
    """Every committed file: no null-valued key (but a threshold base step's, which the schema
    requires), no pre-5.0 key, the panel shapes Grafana 11 saves."""
    files = sorted((REPO / "dashboards" / dialect).glob("*.json"))
    assert len(files) == len(all_dashboards())
    problems: list[str] = []
    for path in files:
        data = json.loads(path.read_text(encoding="utf-8"))
        for where, key, value in _walk(data):
            # The one null Grafana's schema requires: a threshold base step's value (-Infinity).
            if value is None and not (key == "value" and re.search(r"\.steps\[0\]$", where)):
                problems.append(f"{path.name}: null at {where}.{key}")
            if key in LEGACY_KEYS or key in LEGACY_PANEL_KEYS:
                problems.append(f"{path.name}: legacy key {where}.{key}")
        for panel in data["panels"]:
            name = f"{path.name} / {panel['title']}"
            if panel["type"] == "row":
                assert not {"fieldConfig", "targets"} & set(panel), name
                continue
            if panel["type"] == "timeseries":
                assert panel["options"]["legend"]["showLegend"] is True, name
            if panel["type"] == "table":
                custom = panel["fieldConfig"]["defaults"]["custom"]
                assert "displayMode" not in custom and custom["cellOptions"]["type"], name
                for override in panel["fieldConfig"].get("overrides", []):
                    ids = {p["id"] for p in override["properties"]}
                    assert "custom.displayMode" not in ids, name
    assert not problems, "\n".join(problems[:40])


def _panel(slug: str, title: str) -> Any:
    dashboard = next(d for d in all_dashboards() if d.slug == slug)
    return next(p for p in dashboard.panels() if p.title == title)


def test_per_peer_benchmark_and_staleness_panels_exist() -> None:
    titles = {d.slug: {p.title for p in d.panels()} for d in all_dashboards()}
    assert {"Last seen per uid", "Latest values per miner", "Training Throughput – TOP 20"} <= titles["miners"]
    assert {
        "Last seen per uid",
        "Evaluated UID Weights",
        "Current scores per eval_uid",
        "Current OpenSkill ordinal per eval_uid",
        "Validator Loss – by window",
    } <= titles["validators"]
    tasks = ("hellaswag", "mmlu", "piqa", "arc_challenge", "arc_easy", "openbookqa", "winogrande")
    benchmark = {t.split(" ")[0] for t in titles["evaluators"]}
    assert set(tasks) <= benchmark and "All Evals – Latest scores" in titles["evaluators"]
    for task in tasks:
        panel = next(p for p in _dashboard("evaluators").panels() if p.title.startswith(task + " "))
        assert panel.queries[0].by == ("version",) and panel.queries[0].match == (("task", task),)
    for dialect in DIALECTS:
        built = {p["title"]: p for p in build(_dashboard("validators"), dialect)["panels"]}
        weights = built["Evaluated UID Weights"]
        assert weights["options"]["sortBy"] == [{"displayName": "weight", "desc": True}]
        matrix = {p["title"]: p for p in build(_dashboard("evaluators"), dialect)["panels"]}[
            "All Evals – Latest scores"
        ]
        assert {
            "id": "groupingToMatrix",
            "options": {"rowField": "version", "columnField": "task", "valueField": "score"},
        } in matrix["transformations"]
        age = built["Last seen per uid"]["fieldConfig"]["overrides"][0]
        assert age["matcher"]["options"] == "age"
        steps = next(p["value"]["steps"] for p in age["properties"] if p["id"] == "thresholds")
        assert [s["color"] for s in steps] == ["green", "yellow", "red"] and steps[1]["value"] == 2 * 84_000


def _dashboard(slug: str) -> Any:
    return next(d for d in all_dashboards() if d.slug == slug)


def test_last_seen_and_latest_rows_carry_their_own_point_time(
    influx1: InfluxDB1, simulated: tuple[str, int, int]
) -> None:
    """A selector alone keeps its point's time: each uid's last point, not the range's start."""
    db, from_ms, to_ms = simulated
    truth = {
        s["tags"]["uid"]: s["values"][0][0]
        for s in _run_influxql(influx1, db, 'SELECT last("loss") FROM "Mtraining_step_v2" GROUP BY "uid"')
    }
    truth = {uid: int(t) // 1_000_000 for uid, t in truth.items()}  # ns -> ms
    for title in ("Last seen per uid", "Latest values per miner"):
        text = panel_targets(_panel("miners", title), "influxql")[0]["query"]
        series = _run_influxql(influx1, db, _expand(text, simulated, ALL_SELECTED))
        seen = {s["tags"]["uid"]: int(s["values"][0][0]) // 1_000_000 for s in series}
        assert seen == truth, title
        assert all(t > from_ms for t in seen.values()), title  # not the range's start
    staleness = panel_targets(_panel("miners", "Last seen per uid"), "influxql")[0]["query"]
    rows = [s["values"][0] for s in _run_influxql(influx1, db, _expand(staleness, simulated, ALL_SELECTED))]
    assert all(row[1] == to_ms and 0 <= row[1] - int(row[0]) // 1_000_000 < 5 * 60_000 for row in rows)


def test_by_window_and_global_step_panels_put_the_step_on_the_x_axis(
    influx1: InfluxDB1, simulated: tuple[str, int, int]
) -> None:
    """A trend panel: one row per (step, uid) from the server, the step tag turned into the x number."""
    trends = [(d.slug, p) for d in all_dashboards() for p in d.panels() if p.kind == "trend"]
    assert {(slug, p.title) for slug, p in trends} >= {
        ("validators", "Validator Loss – by window"),
        ("miners", "Loss – by global_step"),
    }
    for slug, panel in trends:
        for dialect in DIALECTS:
            built = next(p for p in build(_dashboard(slug), dialect)["panels"] if p["title"] == panel.title)
            assert built["type"] == "trend" and built["options"]["xField"] == panel.x
            ids = [t["id"] for t in built["transformations"]]
            assert ids[:2] == ["merge", "convertFieldType"] and ids[-1] == "partitionByValues"
            assert built["transformations"][1]["options"]["conversions"] == [
                {"targetField": panel.x, "destinationType": "number"}
            ]
        text = panel_targets(panel, "influxql")[0]["query"]
        series = _run_influxql(influx1, simulated[0], _expand(text, simulated, ALL_SELECTED))
        steps = {int(s["tags"][panel.x]) for s in series}  # every x value a number
        uids = {s["tags"][panel.series] for s in series}
        assert len(series) == _rows(series) == len(steps) * len(uids), panel.title  # one row per (step, uid)
        if panel.x == "global_step":
            assert steps == set(range(12)) and uids == {"0", "1"}  # 12 windows, 2 miners
        else:
            assert len(steps) == 12 and uids == {"8"}


#: The panels of Templar's own Grafana dashboards that issue 17 lists, by dashboard and title.
TEMPLAR_PANELS = {
    "validators": (
        "Version",  # the version banner
        "Validator Loss – by window",
        "Global Step",
        "Window",
        "Gather Success Rate",
        "Learning Rate",
        "Total Peers",
        "Evaluated UIDs",
        "Validator Gather Success Rate – Detailed",
        "Evaluated UID Weights",
    ),
    "miners": ("Training Throughput – TOP 20",),
    "evaluators": (
        *(f"{task} ({metric})" for task, metric, _ in BENCHMARK_TASKS),
        "All Evals – Latest scores",
    ),
}
TEMPLAR_STATS = ("Version", "Global Step", "Window", "Gather Success Rate", "Learning Rate", "Total Peers")
#: Fields Templar logs that the issue found shown nowhere: each is now in some panel's query.
TEMPLAR_FIELDS = {
    "Vvalidator_window_v2": ("gather_success_rate", "total_peers", "outer_lr", "inner_lr", "current_block"),
    "Vvalidator_openskill": ("mu", "sigma"),
    "Vvalidator_scores": ("sync_score", "binary_indicator", "binary_moving_avg"),
    "Vvalidator_sync_score": ("max_steps_behind", "l2_norm", "avg_l2_norm", "avg_abs_diff", "max_diff"),
    "Vvalidator_gradient_stats": ("min_grad_norm", "grad_norm_std", "mean_weight_norm", "grad_to_weight_ratio"),
    "Vvalidator_inactivity": ("score_before",),
    "Ecustom_evaluation": ("total_tokens", "total_bytes"),
}


def test_each_templar_panel_is_present_by_title() -> None:
    missing = [
        f"{slug}: {title}"
        for slug, titles in TEMPLAR_PANELS.items()
        for title in titles
        if title not in {p.title for p in _dashboard(slug).panels()}
    ]
    assert not missing, missing
    validators = {p.title: p for p in _dashboard("validators").panels()}
    assert all(validators[t].kind == "stat" for t in (*TEMPLAR_STATS, "Evaluated UIDs"))
    assert validators["Version"].text_field == "version" and validators["Validator Loss – by window"].x == "window"
    for task, _, _ in BENCHMARK_TASKS:  # x = time, one line per version, as Templar's (whose x is global_step)
        panel = next(p for p in _dashboard("evaluators").panels() if p.title.startswith(task + " "))
        assert panel.queries[0].by == ("version",)


def test_every_field_templar_logs_is_shown() -> None:
    shown = {(q.measurement, f) for d in all_dashboards() for q in d.queries() for f in q.fields}
    missing = [f"{m}.{f}" for m, fields in TEMPLAR_FIELDS.items() for f in fields if (m, f) not in shown]
    assert not missing, missing


def test_text_stats_read_their_tag(influx1: InfluxDB1, simulated: tuple[str, int, int]) -> None:
    """The version banner and the window / global step stats: the tag's value of each validator's last point."""
    truth = _run_influxql(
        influx1,
        simulated[0],
        'SELECT last("current_block"), "version", "window", "global_step" FROM "Vvalidator_window_v2"',
    )[0]["values"][0]
    for title, tag in (("Version", "version"), ("Window", "window"), ("Global Step", "global_step")):
        panel = _panel("validators", title)
        text = panel_targets(panel, "influxql")[0]["query"]
        series = _run_influxql(influx1, simulated[0], _expand(text, simulated, ALL_SELECTED))
        assert len(series) == 1 and series[0]["tags"] == {"uid": "8"}, title
        column = series[0]["columns"].index(tag)
        assert series[0]["values"][0][column] == truth[{"version": 2, "window": 3, "global_step": 4}[tag]], title
