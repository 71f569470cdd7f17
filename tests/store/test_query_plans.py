"""Every query the CLI sends to the local store, checked with EXPLAIN QUERY PLAN: what reads a run
walks that run's index, never the whole points table, and never sorts what it found.

The queries are the real ones: the commands run in this process on a real store, and SQLite's
trace callback records each statement with its values bound.
"""

from __future__ import annotations

import argparse
import logging
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from tplr_metrics import MetricsLogger
from tplr_metrics.cli import main
from tplr_metrics.commands.watch import _Follower
from tplr_metrics.store.database import Store

# Queries that may read every point, and why that is right for them.
_WHOLE_TABLE = (
    "FROM points WHERE id > ",  # export/replay/watch --all: every point is asked for, once, by rowid
    "FROM points WHERE time_ns < ",  # prune: the orphans before a cutoff, along the time index
    "SELECT coalesce(max(id), 0) FROM points",  # the last rowid: one step
    "FROM points ORDER BY id DESC",  # watch --all --last N: the newest rowids
)


def _plan(conn: sqlite3.Connection, sql: str) -> list[str]:
    return [row[3] for row in conn.execute("EXPLAIN QUERY PLAN " + sql)]


@pytest.fixture
def traced(isolated_env: Path, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Three runs (the middle one old and small, the newest big), and every statement sent."""
    for run_id, points in (("aaaa-old", 50), ("bbbb-mid", 20), ("cccc-new", 3_000)):
        m = MetricsLogger(role="validator", uid=1, runtime_id=run_id, run_name=f"name-{run_id}")
        for i in range(points):
            m.log("validator_scores", {"eval_uid": i % 30}, {"final_score": i / 300, "step": i})
            m.log("timing", {"window": i}, {"gather": 1.5})
        assert m.close(10)
    statements: list[str] = []
    opened = Store.__init__

    def tracing(self: Store, *args: Any, **kwargs: Any) -> None:
        opened(self, *args, **kwargs)
        self.conn.set_trace_callback(statements.append)

    monkeypatch.setattr(Store, "__init__", tracing)
    return statements


def _cli(*argv: str) -> int:
    library = logging.getLogger("tplr_metrics")
    handlers, level = list(library.handlers), library.level
    try:
        return main(list(argv))
    finally:
        library.handlers[:] = handlers
        library.setLevel(level)


def test_every_cli_query_on_a_run_walks_an_index(traced: list[str], isolated_env: Path, tmp_path: Path) -> None:
    out = str(tmp_path / "out")
    commands = [
        ["runs"],
        ["runs", "--json", "--role", "validator", "--since", "1h"],
        ["runs", "--run-id", "name-bbbb-mid"],
        ["runs", "--tag", "window=1"],
        ["runs", "--run-id", "aaaa", "--tag", "window=1"],
        ["export", "--run-id", "aaaa", "--tag", "window=1", "--output", out],
        ["export", "--run-id", "cccc", "--measurement", "timing", "--tag", "window=7", "--output", out],
        ["export", "--run-id", "aaaa", "--output", out],
        ["export", "--run-id", "aaaa", "--measurement", "timing", "--since", "1h", "--format", "lp", "--output", out],
        ["export", "--output", out],
        ["plot", "--run-id", "aaaa", "bbbb", "--metrics", "validator_scores.final_score", "--out", out + ".png"],
        ["plot", "--run-id", "bbbb", "--list"],
        ["compare", "aaaa", "bbbb", "--no-plot"],
        ["table", "--run-id", "aaaa"],
        ["prune", "--keep-runs", "3", "--dry-run"],
    ]
    for argv in commands:
        assert _cli(*argv) == 0, argv
    store = Store(isolated_env / "metrics.sqlite", create=False)
    old = store.find_runs("aaaa-old")
    follow = argparse.Namespace(run_id="aaaa", all=False, last=5, measurement=None, json=True)
    follower = _Follower(follow, store)
    assert follower.poll() == 5 and follower.poll() == 0  # the old run's last 5, then nothing new
    sent = [s for s in traced if s.lstrip().upper().startswith("SELECT") and "points" in s]
    assert len(sent) >= 10
    conn = sqlite3.connect(isolated_env / "metrics.sqlite")
    checked = 0
    for sql in dict.fromkeys(sent):
        if any(marker in sql for marker in _WHOLE_TABLE):
            continue
        plan = _plan(conn, sql)
        full = [step for step in plan if step.startswith("SCAN points") or step.startswith("SCAN p ")]
        assert not full, f"a full scan: {plan}\n{sql}"
        grouped = "GROUP BY measurement" in sql or "GROUP BY split" in sql  # a run's groups: few
        if "json_each" not in sql and not grouped:  # a run's distinct keys: small
            assert not [step for step in plan if "TEMP B-TREE" in step], f"a sort: {plan}\n{sql}"
        checked += 1
    assert checked >= 6 and old
    store.close()


def test_watch_on_an_old_run_reads_only_that_run(isolated_env: Path, traced: list[str]) -> None:
    """``watch --run-id`` on an old run: each poll asks the run's index for ids after the last
    one shown, so it reads nothing of the 3,000 newer points (before: a rowid range scan over
    every later point, each poll)."""
    store = Store(isolated_env / "metrics.sqlite", create=False)
    follower = _Follower(argparse.Namespace(run_id="aaaa", all=False, last=0, measurement=None, json=True), store)
    traced.clear()
    assert follower.poll() == 0
    conn = sqlite3.connect(isolated_env / "metrics.sqlite")
    reads = [s for s in traced if "FROM points" in s]
    assert reads
    for sql in reads:
        plan = _plan(conn, sql)
        assert all("USING INDEX points_run_id (run=? AND id>?)" in step for step in plan), (plan, sql)
    store.close()


def test_the_uis_preview_of_a_large_run_seeks_along_its_index(isolated_env: Path, traced: list[str]) -> None:
    """The web UI's first look at a large run (``count_points_upto``, ``sample_points``) and how
    far behind a run growing fast it is (``count_points_after``): each
    query seeks along the (run, measurement) index; none scans the points or sorts them."""
    store = Store(isolated_env / "metrics.sqlite", create=False)
    run = [r.id for r in store.find_runs("cccc-new")]
    traced.clear()
    assert store.count_points_upto(run, 1_000) == 1_000
    first = store.points_after(0, run, limit=1)[0].id
    assert store.count_points_after(first, run) == 5_999  # how far a top-up is behind
    sampled = store.sample_points(run, 100)
    sample = [point for point, _ in sampled]
    by_measurement = {m: [p for p in sample if p.measurement == m] for m in ("validator_scores", "timing")}
    assert all(90 <= len(found) <= 100 for found in by_measurement.values()), {
        k: len(v) for k, v in by_measurement.items()
    }
    assert [p.id for p in sample] == sorted({p.id for p in sample})
    conn = sqlite3.connect(isolated_env / "metrics.sqlite")
    last = conn.execute("SELECT max(id) FROM points WHERE run = ?", run).fetchone()[0]
    assert sample[-1].id == last
    orders = [order for point, order in sampled if point.measurement == "timing"]
    assert orders[0] == 0 and orders[-1] == 2_999 and orders == sorted(orders)
    for sql in dict.fromkeys(s for s in traced if "FROM points" in s):
        plan = _plan(conn, sql)
        assert not [step for step in plan if step.startswith(("SCAN points", "SCAN p "))], (plan, sql)
        assert not [step for step in plan if "TEMP B-TREE" in step], (plan, sql)
    store.close()
