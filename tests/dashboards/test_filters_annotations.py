"""Annotations and the netuid / project / version filters, against a real InfluxDB 1.x.

The simulator logs as Templar does (``config=`` with netuid and project, the version tag), with
an upgrade half-way (every node restarts as a new run on a new version) and, beside it, a dev
build's miner on another netuid and project. Each annotation query and variable list is expanded
the way Grafana expands it and read back from the server.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator, Mapping, Sequence

import pytest

from tplr_metrics.dashboards import all_dashboards, panel_targets
from tplr_metrics.dashboards import influxql as influxql_dialect
from tplr_metrics.dashboards.builder import render_annotation
from tplr_metrics.dashboards.model import VERSION_KIND, VERSION_KINDS, Annotation, Dashboard

from ..grafana_macros import expand_influxql, interval_ms
from ..servers import InfluxDB1
from .test_dashboards import ALL_SELECTED, _rows, _run_influxql, _simulate_into

UPGRADE_AT = 6
RELEASE, UPGRADED, DEV = "2.1.3", "2.1.4", "2.2.0-dev"
NETWORK = ["simulate", "--windows", "12", "--window-seconds", "0.2", "--peers", "8", "--seed", "5"]
NETWORK += ["--templar-version", RELEASE, "--upgrade-at", str(UPGRADE_AT), "--slash-every", "4"]
DEV_MINER = ["simulate", "--windows", "6", "--window-seconds", "0.2", "--peers", "8", "--seed", "6", "--miners", "1"]
DEV_MINER += ["--validators", "0", "--evaluators", "0", "--templar-version", DEV, "--netuid", "5", "--project", "dev"]

Range = tuple[str, int, int]


@pytest.fixture(scope="module")
def network(influx1: InfluxDB1, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Range]:
    db = "t_anno_" + uuid.uuid4().hex[:10]
    env = {"INFLUXDB_URL": influx1.url, "INFLUXDB_DATABASE": db, "INFLUXDB_API": "v1"}
    _simulate_into(env, tmp_path_factory.mktemp("tplr_home"), NETWORK)
    _simulate_into(env, tmp_path_factory.mktemp("tplr_home_dev"), DEV_MINER)
    to_ms = int(time.time() * 1000) + 1000
    yield db, to_ms - 5 * 60 * 1000, to_ms


def _expand(text: str, rng: Range, selected: Mapping[str, Sequence[str] | str]) -> str:
    _, from_ms, to_ms = rng
    return expand_influxql(text, selected, from_ms, to_ms, interval_ms(from_ms, to_ms))


def _events(
    server: InfluxDB1, rng: Range, annotation: Annotation, selected: Mapping[str, Sequence[str] | str]
) -> list[dict[str, object]]:
    """The rows Grafana turns into events: time plus the named columns."""
    text = _expand(render_annotation(annotation, "influxql"), rng, selected)
    events = []
    for series in _run_influxql(server, rng[0], text):
        for row in series["values"]:
            events.append(dict(zip(series["columns"], row, strict=True)))
    return events


def _dashboard(slug: str) -> Dashboard:
    return next(d for d in all_dashboards() if d.slug == slug)


def test_every_annotation_query_returns_events(
    influx1: InfluxDB1, network: Range, capsys: pytest.CaptureFixture[str]
) -> None:
    counts: dict[str, int] = {}
    for dashboard in all_dashboards():
        assert {a.name for a in dashboard.annotations} >= {"Run starts", "Version changes"}, dashboard.slug
        for annotation in dashboard.annotations:
            events = _events(influx1, network, annotation, ALL_SELECTED)
            counts[f"{dashboard.slug} / {annotation.name}"] = len(events)
            assert all(e.get(annotation.text) for e in events), (dashboard.slug, annotation.name)
    with capsys.disabled():
        print("\n  annotation events: " + ", ".join(f"{k}: {v}" for k, v in counts.items()))
    assert all(n >= 2 for n in counts.values()), counts


def test_run_starts_are_each_runs_first_point(influx1: InfluxDB1, network: Range) -> None:
    """One event per run at the run's own first point; a run begun before the range is not
    shown at the range's start (the query looks back before it)."""
    db = network[0]
    runs = _dashboard("miners").annotations[0]
    assert runs.name == "Run starts"
    truth = {
        s["tags"]["runtime_id"]: s["values"][0][0]
        for s in _run_influxql(influx1, db, 'SELECT first("loss") FROM "Mtraining_step_v2" GROUP BY "runtime_id"')
    }
    assert len(truth) == 5  # 2 miners x 2 runs (the upgrade restarted them) + the dev miner
    events = _events(influx1, network, runs, ALL_SELECTED)
    assert {e["runtime_id"]: e["time"] for e in events} == truth

    # A range that starts while the dev miner runs: its start is still its own first point,
    # before the range, not the range's first point of it.
    dev_start = max(truth.values())
    late: Range = (db, dev_start // 1_000_000 + 1, network[2])
    shifted = {e["runtime_id"]: e["time"] for e in _events(influx1, late, runs, ALL_SELECTED)}
    assert shifted == truth and all(int(str(t)) < late[1] * 1_000_000 for t in shifted.values())


def test_version_changes_mark_each_versions_first_point(influx1: InfluxDB1, network: Range) -> None:
    versions = next(a for a in _dashboard("validators").annotations if a.name == "Version changes")
    events = _events(influx1, network, versions, ALL_SELECTED)
    assert sorted(str(e["version"]) for e in events) == [RELEASE, UPGRADED]  # the validator never ran dev
    first_upgraded = min(
        row[0]
        for s in _run_influxql(
            influx1, network[0], f'SELECT "current_block" FROM "Vvalidator_window_v2" WHERE "version" = \'{UPGRADED}\''
        )
        for row in s["values"]
    )
    assert next(e["time"] for e in events if e["version"] == UPGRADED) == first_upgraded
    miners = next(a for a in _dashboard("miners").annotations if a.name == "Version changes")
    every = sorted(str(e["version"]) for e in _events(influx1, network, miners, ALL_SELECTED))
    assert every == [RELEASE, UPGRADED, DEV]
    releases = {**ALL_SELECTED, VERSION_KIND: VERSION_KINDS["releases"]}
    assert sorted(str(e["version"]) for e in _events(influx1, network, miners, releases)) == [RELEASE, UPGRADED]


def test_slash_annotations_are_the_slashes(influx1: InfluxDB1, network: Range) -> None:
    slashes = next(a for a in _dashboard("validators").annotations if a.name == "Slashes")
    events = _events(influx1, network, slashes, ALL_SELECTED)
    stored = _rows(_run_influxql(influx1, network[0], 'SELECT "reason" FROM "Vvalidator_slash"'))
    assert len(events) == stored == 3  # every 4th of 12 windows
    assert all("out of sync" in str(e["reason"]) and e["eval_uid"] for e in events)


def _values(server: InfluxDB1, rng: Range, name: str, selected: Mapping[str, Sequence[str] | str]) -> set[str]:
    text = _expand(influxql_dialect.variable_query(name), rng, selected)
    return {row[1] for s in _run_influxql(server, rng[0], text) for row in s["values"]}


def test_netuid_project_and_version_variables_list_the_simulated_values(influx1: InfluxDB1, network: Range) -> None:
    assert _values(influx1, network, "netuid", ALL_SELECTED) == {"3", "5"}
    assert _values(influx1, network, "project", ALL_SELECTED) == {"templar", "dev"}
    assert _values(influx1, network, "project", {**ALL_SELECTED, "netuid": ["5"]}) == {"dev"}
    assert _values(influx1, network, "version", ALL_SELECTED) == {RELEASE, UPGRADED, DEV}
    releases = {**ALL_SELECTED, VERSION_KIND: VERSION_KINDS["releases"]}
    assert _values(influx1, network, "version", releases) == {RELEASE, UPGRADED}


def test_version_kinds_regexes() -> None:
    """RE2 and Python agree on these simple patterns; releases keep digits-and-dots versions only."""
    import re

    releases = re.compile(VERSION_KINDS["releases"])
    kept = [v for v in ("2.1.3", "v1.0", "10", "", "2.2.0-dev", "2.1.4rc1", "0.0.0+test", "dev") if releases.search(v)]
    assert kept == ["2.1.3", "v1.0", "10", ""]


def test_panels_filtered_by_netuid_project_and_releases_still_return_rows(influx1: InfluxDB1, network: Range) -> None:
    selected = {**ALL_SELECTED, "netuid": ["3"], "project": ["templar"], VERSION_KIND: VERSION_KINDS["releases"]}
    empty = []
    queries = 0
    for dashboard in all_dashboards():
        for panel in dashboard.panels():
            for target in panel_targets(panel, "influxql"):
                queries += 1
                if not _rows(_run_influxql(influx1, network[0], _expand(target["query"], network, selected))):
                    empty.append(f"{dashboard.slug} / {panel.title} [{target['refId']}]")
    assert queries > 50 and not empty, empty


def test_the_filters_filter(influx1: InfluxDB1, network: Range) -> None:
    loss = panel_targets(next(p for p in _dashboard("miners").panels() if p.title == "Loss per miner"), "influxql")[0]

    def versions(selected: Mapping[str, Sequence[str] | str]) -> set[str]:
        text = _expand(loss["query"].replace("GROUP BY time", 'GROUP BY "version", time'), network, selected)
        return {s["tags"]["version"] for s in _run_influxql(influx1, network[0], text)}

    assert versions(ALL_SELECTED) == {RELEASE, UPGRADED, DEV}
    assert versions({**ALL_SELECTED, "netuid": ["5"]}) == {DEV}
    assert versions({**ALL_SELECTED, "project": ["templar"]}) == {RELEASE, UPGRADED}
    assert versions({**ALL_SELECTED, VERSION_KIND: VERSION_KINDS["releases"]}) == {RELEASE, UPGRADED}
    assert versions({**ALL_SELECTED, "netuid": ["5"], VERSION_KIND: VERSION_KINDS["releases"]}) == set()


def test_simulator_logs_templar_config_tags(influx1: InfluxDB1, network: Range) -> None:
    keys = {
        row[0]
        for s in _run_influxql(influx1, network[0], 'SHOW TAG KEYS FROM "Vvalidator_window_v2"')
        for row in s["values"]
    }
    assert {"config_netuid", "config_project", "version", "runtime_id"} <= keys
