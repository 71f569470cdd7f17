"""Symlinks planted where the library keeps its own files (under TPLR_METRICS_HOME) are never
followed: nothing outside the home is created, appended to or chmodded, and each gives one
clear line naming the link. Before: the library chmodded a planted spool link's target, appended
its dead letter into a 0644 file elsewhere, and created its store at a dangling link's target."""

from __future__ import annotations

import json
import logging
import os
import stat
from pathlib import Path

import pytest

from tplr_metrics import ConfigurationError, MetricsLogger

from .servers import InfluxDB1


def snapshot(directory: Path) -> dict[str, tuple[int, int]]:
    """Every entry under ``directory``, with its mode and size: what must not change."""
    out = {".": (directory.stat().st_mode, 0)}
    for path in directory.rglob("*"):
        st = path.lstat()
        out[str(path.relative_to(directory))] = (st.st_mode, st.st_size)
    return out


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    """A directory outside TPLR_METRICS_HOME, 0755, with one 0644 file in it."""
    target = tmp_path / "outside"
    target.mkdir()
    os.chmod(target, 0o755)
    (target / "precious.jsonl").write_text("{}\n")
    os.chmod(target / "precious.jsonl", 0o644)
    return target


def test_a_symlink_planted_at_the_spool_root_is_refused(isolated_env: Path, outside: Path) -> None:
    isolated_env.mkdir()
    (isolated_env / "spool").symlink_to(outside)
    before = snapshot(outside)
    with pytest.raises(ConfigurationError, match="spool is a symlink"):
        MetricsLogger(url="http://127.0.0.1:9", database="d", api="v1")
    assert snapshot(outside) == before


def test_an_explicit_spool_dir_may_be_the_users_own_symlink(tmp_path: Path, outside: Path) -> None:
    link = tmp_path / "my_spool"
    link.symlink_to(outside)
    m = MetricsLogger(url="http://127.0.0.1:9", database="d", api="v1", spool_dir=link, retry_interval=60_000)
    m.log("m", {}, {"v": 1.0})
    m.close(timeout=0.5)
    assert m.stats()["spooled"] == 1 and list(outside.rglob("*-batch.lp"))


def test_a_symlink_planted_at_the_default_store_is_refused(isolated_env: Path, outside: Path) -> None:
    isolated_env.mkdir()
    (isolated_env / "metrics.sqlite").symlink_to(outside / "store.sqlite")  # dangling
    before = snapshot(outside)
    with pytest.raises(ConfigurationError, match="metrics.sqlite is a symlink"):
        MetricsLogger()  # nothing configured: the local store
    assert snapshot(outside) == before and not (outside / "store.sqlite").exists()


def test_symlinks_planted_at_the_dead_letter_are_not_followed(
    isolated_env: Path, outside: Path, influx1: InfluxDB1, unique_db: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A link at the dead-letter directory, then one at the file itself: the refused point is
    counted (rejected), one warning names the cause, and nothing outside changes."""
    influx1.create_database(unique_db)
    assert influx1.write(unique_db, b"conflicted f=0.5")[0] == 204  # f is a float field (in this shard: now)
    isolated_env.mkdir()
    before = snapshot(outside)
    for round_, planted in enumerate(("directory", "file"), start=1):
        m = MetricsLogger(url=influx1.url, database=unique_db, api="v1")
        letters = isolated_env / "dead_letter"
        if planted == "directory":
            letters.symlink_to(outside)
        else:
            letters.unlink()
            letters.mkdir(mode=0o700)
            (letters / f"{m.runtime_id}.jsonl").symlink_to(outside / "precious.jsonl")
        with caplog.at_level(logging.WARNING, logger="tplr_metrics"):
            m.log("conflicted", {}, {"f": "not a number"})
            m.log("conflicted", {}, {"f": 2.5})
            m.close(timeout=10)
        assert m.stats()["rejected"] == {"field_type_conflict": 1} and m.stats()["written"] == 1
        assert influx1.count("conflicted", "f", unique_db) == 1 + round_  # the seed point, one per round
        assert snapshot(outside) == before, planted
        kept = [r.getMessage() for r in caplog.records if "could not keep a rejected point" in r.getMessage()]
        assert len(kept) == 1, kept
        caplog.clear()


def test_the_home_and_every_directory_under_it_are_private(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """TPLR_METRICS_HOME created by the spool (it was 0755: mkdir(parents=True) and the umask)."""
    home = tmp_path / "a" / "b" / "home"
    monkeypatch.setenv("TPLR_METRICS_HOME", str(home))
    old = os.umask(0o022)
    try:
        m = MetricsLogger(url="http://127.0.0.1:9", database="d", api="v1", retry_interval=60_000)
        m.log("m", {}, {"v": 1.0})
        m.close(timeout=0.5)
    finally:
        os.umask(old)
    for directory in [tmp_path / "a", tmp_path / "a" / "b", home, *[p for p in home.rglob("*") if p.is_dir()]]:
        assert stat.S_IMODE(directory.stat().st_mode) == 0o700, directory


def outside_spool_file(path: Path, n: int = 7) -> None:
    """A file of valid spool lines outside the home: what a planted link would make us send."""
    lines = [json.dumps(["m", {"src": "OUTSIDE"}, {"v": float(i)}, 1_700_000_000 + i]) for i in range(n)]
    path.write_text("".join(line + "\n" for line in lines))
    os.chmod(path, 0o644)


@pytest.mark.parametrize("planted", ["run_dir", "extra_file", "replaced_file", "swapped_after_adoption"])
def test_symlinks_planted_in_a_dead_runs_spool_are_not_followed(
    isolated_env: Path, outside: Path, tmp_path: Path, unique_db: str, planted: str
) -> None:
    """A dead run's directory, or one of its spool files, replaced by (or joined by) a symlink to
    spool lines outside the home: the link is left where it is and never read, nothing outside
    changes, no outside line reaches the server, and the books balance. (Before: the linked
    directory's 50 points were delivered and its file deleted outside; a linked file's 7 outside
    lines were stored.)"""
    server = InfluxDB1(tmp_path / "influx")  # down for now
    try:
        dead = MetricsLogger(url=server.url, database=unique_db, api="v1", retry_interval=60_000)
        for i in range(50):
            dead.log("m", {"src": "dead"}, {"v": float(i)})
        dead.close(timeout=0.3)
        (run_dir,) = [p for p in (isolated_env / "spool").glob("*/*") if p.is_dir()]
        (batch,) = list(run_dir.glob("*-batch*.lp"))
        outside_spool_file(outside / "lines.jsonl")
        if planted == "run_dir":
            run_dir.rename(outside / "run")
            run_dir.symlink_to(outside / "run")
        elif planted == "extra_file":
            (run_dir / "000000000099-batch.jsonl").symlink_to(outside / "lines.jsonl")
        elif planted == "replaced_file":
            batch.unlink()
            batch.symlink_to(outside / "lines.jsonl")
        before = snapshot(outside)
        recovering = MetricsLogger(url=server.url, database=unique_db, api="v1", retry_interval=100)
        if planted == "swapped_after_adoption":
            (taken,) = [p for p in (isolated_env / "spool").rglob("*-batch*.lp")]
            taken.unlink()
            taken.symlink_to(outside / "lines.jsonl")
            before = snapshot(outside)
        server.start()
        server.create_database(unique_db)
        recovering.close(timeout=30)
        assert snapshot(outside) == before
        assert server.count("m", "v", unique_db, where="\"src\" = 'OUTSIDE'") == 0
        stored = server.count("m", "v", unique_db, where="\"src\" = 'dead'")
        assert stored == {"run_dir": 0, "extra_file": 50, "replaced_file": 0, "swapped_after_adoption": 0}[planted]
        assert recovering.accounting()["balanced"], recovering.accounting()
        assert recovering.stats()["written"] == stored
    finally:
        server.cleanup()
