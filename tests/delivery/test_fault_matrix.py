"""A randomized fault harness: seeded schedules of faults, every point checked against the stores.

Each seed draws a schedule: which lanes (InfluxDB 1.x behind a fault proxy, always; the local
store and a JSONL directory, maybe), durable mode or not, server SIGKILL + restart, stalls
(SIGSTOP/SIGCONT), proxy answers (429, 503, slow, connection reset), a disk that fills for a
second under the spool, JSONL and store (a tmpfs; needs root), a queue small enough for a burst
to overflow it, an orphan spool of another database in the same spool directory, two corrupt
lines appended to a spool file the run left, redirects to another server (307), partial-write
answers refusing a line (1.x's words, every time the line comes again), awkward points
(a tab or newline in a tag value, a tag value past 64 KiB, a newline in a string value), how the
logging process ends
(close() with a short timeout, exit without close, SIGKILL in durable mode), a signal handler that
logs, a forked multiprocessing child that logs and returns without close(), two threads that keep
logging as fast as they can through close() (their calls after it began are counted after_close).

Every point carries a unique id. After the run, the faults are lifted and a recovery logger for the
same destinations adopts what was spooled. Then the harness reads every destination back and
checks, per lane, Jepsen-style, the history against the final state:

* every stored id was logged, and no id is stored twice in the JSONL file (which keeps duplicates);
* stored + counted lost (dropped + rejected, in the process and its children) == logged, exactly
  (a point counted lost after a request carrying it went unanswered, ``dropped_maybe_stored``,
  ``in_flight_at_exit`` among them, may have been stored or not: only those may be both stored
  and counted);
  after a SIGKILL, every id whose log() had returned is stored (durable mode's promise);
* nothing is left in the spool;
* after a SIGKILL, no more ids are stored than log() accepted (the full queue refused the rest);
* an orphan spool of another database reaches none of this run's destinations, and a logger for
  its own database then delivers all of it there;
* no point is refused: awkward names and values are encoded so the server stores them;
* corrupt spool lines are quarantined: counted ``corrupt_spool_line`` and in the dead letter,
  and the rest of their file is delivered (they are not logged points, so not in the sums).

CI runs the fixed seeds below; ``pytest tests/delivery/test_fault_matrix.py --fault-seeds 200`` runs more.
A failure names its seed and schedule.
"""

from __future__ import annotations

import json
import os
import random
import re
import signal
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tplr_metrics import MetricsLogger

from ..conftest import fill, mount_tmpfs, unmount
from ..fault_proxy import Fault, FaultProxy, fault_proxy
from ..servers import InfluxDB1, free_port

REPO = Path(__file__).resolve().parents[2]
# 1002: a burst into a full queue, then SIGKILL (durable); 1040 and 1147: durable, two threads
# logging through close() (1 s and 0.3 s) while the disk fills and the server refuses or dies.
CI_SEEDS = list(range(20)) + [1002, 1040, 1147]
POINTS = 2_000
MP_IDS = 3_000_000  # ids logged by the multiprocessing child start here
HANDLER_IDS = 1_000_000  # ids logged by the signal handler start here
BURST_IDS = 5_000_000  # ids of the burst logged at once just before the process ends
BURST = 20_000
THROUGH_IDS = 9_000_000  # ids logged by the threads that keep logging through close()
ORPHAN_IDS = 7_000_000  # ids left in the spool by a logger for another database
ORPHAN_POINTS = 500
CORRUPT_LINES = [b'["fm",["not","a","dict"],{"pid":1.0},1]', b'["fm",{},{"pid":null},2]']
BASE_NS = 1_700_000_000_000_000_000
_PID = re.compile(rb"pid=(\d+)i")

CHILD = r"""
import atexit, json, multiprocessing as mp, os, signal, sys, time
from multiprocessing import util as mp_util
cfg = json.loads(sys.argv[1])
out = cfg["out"]
handled = []
held = []
through = []  # ids logged by the threads that log through close(), in log() order per thread
close_took = None  # seconds close() took, when the run ends with it

def dump(name):
    if held:
        books = held[0].accounting()
        books["handled"] = handled
        books["through"] = len(through)
        books["close_s"] = close_took
        lanes = held[0].stats()["lanes"]
        books["dropped_by_lane"] = {name: lane["dropped"] for name, lane in lanes.items()}
        books["maybe_stored_by_lane"] = {name: lane["dropped_maybe_stored"] for name, lane in lanes.items()}
        books["rejected_by_lane"] = {name: lane["rejected"] for name, lane in lanes.items()}
        with open(os.path.join(out, name), "w") as f:
            json.dump(books, f)

if cfg["ending"] == "exit":
    atexit.register(dump, "main.json")  # LIFO: runs after the logger's own exit hook

from tplr_metrics import MetricsLogger

sinks = []
for lane in cfg["lanes"]:
    if lane == "influxdb":
        sinks.append("influxdb-v1")
    elif lane == "local":
        sinks.append({"kind": "local", "params": {"path": cfg["store"]}})
    else:
        sinks.append({"kind": "jsonl", "params": {"log_dir": cfg["jsonl"]}})
m = MetricsLogger(
    url=cfg["url"], database=cfg["db"], api="v1", sinks=sinks, durable=cfg["durable"],
    flush_interval=100, batch_size=250, retry_interval=100, max_retry_delay=800,
    max_retry_time=cfg["max_retry_time"], close_timeout=cfg["close_timeout"], spool_dir=cfg["spool"],
    timeout=2_000, max_queue_size=cfg["max_queue_size"],
)
held.append(m)

AWKWARD_TAGS = ["\t#x", "a\nb", "\\", 'q\\"', "z" * 70_000]

def log_id(i):
    tags, fields = {"k": str(i % 7)}, {"pid": i, "v": float(i)}
    if cfg["awkward"] and i % 25 == 0:  # the encoder's rules, under the faults
        tags["odd"] = AWKWARD_TAGS[(i // 25) % len(AWKWARD_TAGS)]
        fields["note"] = "two\nlines"
    m.log("fm", tags, fields, timestamp=cfg["base_ns"] + i * 1000)

if cfg["signal_handler"]:
    import itertools
    handler_ids = itertools.count(cfg["handler_ids"])  # next() is atomic: handlers can nest

    def on_usr1(signum, frame):
        i = next(handler_ids)
        log_id(i)
        handled.append(i)
    signal.signal(signal.SIGUSR1, on_usr1)

def mp_work():
    mp_util.Finalize(None, dump, args=("mp.json",), exitpriority=0)  # after the logger's (10)
    for j in range(cfg["mp_points"]):
        log_id(cfg["mp_ids"] + j)

print("ready", flush=True)
for i in range(cfg["points"]):
    log_id(i)
    if i % 100 == 99:
        print(f"acked {i}", flush=True)  # log() of every id up to i has returned
        time.sleep(0.12)  # the run spans about 2.5 s, so the faults land while it logs
    if cfg["mp_points"] and i == cfg["points"] // 2:
        p = mp.get_context("fork").Process(target=mp_work)
        p.start()
        p.join()
for j in range(cfg["burst"]):  # at once, into a queue smaller than the burst
    log_id(cfg["burst_ids"] + j)
if cfg["ending"] == "sigkill":
    # The books at the kill, which take them: what log() refused (never to be stored later),
    # and what was lost or not made durable (a full disk), counted by this process only.
    lanes = m.stats()["lanes"]
    lane_books = next(iter(lanes.values()))
    with open(os.path.join(out, "refused.books"), "w") as f:
        json.dump({
            "queue_full": lane_books["dropped"].get("queue_full", 0),
            "handled": len(handled),
            "wal_failed": {name: lane["wal_failed"] for name, lane in lanes.items()},
            "lost": {name: lane["dropped_total"] + lane["rejected_total"] for name, lane in lanes.items()},
        }, f)
    print("logged", flush=True)
    os.kill(os.getpid(), signal.SIGKILL)  # at once: nothing may be counted after the books
print("logged", flush=True)
if cfg["ending"] == "close":
    if cfg["through_close"]:
        import itertools, threading
        through_ids = itertools.count(cfg["through_ids"])  # next() is atomic: one id per call
        going = threading.Event()
        going.set()

        def log_through():
            while going.is_set():
                i = next(through_ids)
                log_id(i)
                through.append(i)

        threads = [threading.Thread(target=log_through) for _ in range(2)]
        for t in threads:
            t.start()
        time.sleep(0.05)
    started = time.monotonic()
    m.close(cfg["close_timeout"])
    close_took = time.monotonic() - started
    if cfg["through_close"]:
        going.clear()
        for t in threads:
            t.join()
    dump("main.json")
    if cfg["linger"]:  # answers to requests close() gave up on may still come: they must not count
        time.sleep(cfg["linger"])
        dump("late.books")
"""


@dataclass
class Schedule:
    seed: int
    lanes: list[str]
    durable: bool
    ending: str  # close | exit | sigkill
    close_timeout: float
    max_retry_time: int
    signal_handler: bool
    mp_points: int
    burst: int
    events: list[tuple[float, str]] = field(default_factory=list)  # (seconds after start, fault)
    max_queue_size: int = 5_000  # 300: the burst overflows it even in durable mode
    orphan: bool = False  # another database's points wait in the same spool directory
    corrupt: bool = False  # two bad lines appended to a spool file the run left (if it left one)
    awkward: bool = False  # every 25th point carries names and values the servers read differently
    linger: float = 0.0  # the process stays this long after close(): its books must not change
    through_close: bool = False  # two threads keep logging as fast as they can through close()

    @classmethod
    def draw(cls, seed: int) -> Schedule:
        rng = random.Random(seed)
        lanes = ["influxdb"] + [lane for lane in ("local", "jsonl") if rng.random() < 0.6]
        durable = rng.random() < 0.35
        endings = ["sigkill", "sigkill", "close", "exit"] if durable else ["close", "close", "exit"]
        schedule = cls(
            seed=seed,
            lanes=lanes,
            durable=durable,
            ending=rng.choice(endings),
            close_timeout=rng.choice([0.3, 1.0, 5.0]),
            max_retry_time=rng.choice([1_000, 60_000]),
            signal_handler=rng.random() < 0.5,
            mp_points=rng.choice([0, 0, 300]),
            burst=rng.choice([0, 0, BURST]),
        )
        for _ in range(rng.randint(1, 3)):
            at = round(rng.uniform(0.0, 2.0), 2)
            schedule.events.append((at, rng.choice(["kill", "stall", "503", "429", "slow", "hang", "reset", "down"])))
        schedule.events.sort()
        # Drawn last, so that the draws above stay what they were for every seed.
        schedule.max_queue_size = rng.choice([5_000, 5_000, 300])
        if rng.random() < 0.3:  # the disk under the spool, JSONL and store fills for a second
            schedule.events.append((round(rng.uniform(0.0, 2.0), 2), "disk_full"))
            schedule.events.sort()
        schedule.orphan = rng.random() < 0.3
        schedule.corrupt = rng.random() < 0.4
        if rng.random() < 0.25:  # a redirect elsewhere: a destination error, never bad data
            schedule.events.append((round(rng.uniform(0.0, 2.0), 2), "redirect"))
            schedule.events.sort()
        schedule.awkward = rng.random() < 0.4
        if rng.random() < 0.3:  # answers that refuse a line the sink must find and count
            schedule.events.append((round(rng.uniform(0.0, 2.0), 2), "partial"))
            schedule.events.sort()
        if schedule.ending == "close" and rng.random() < 0.4:
            schedule.linger = 2.0  # past a slow answer (0.7 s) and a hung one (1.5 s)
        schedule.through_close = schedule.ending == "close" and rng.random() < 0.4
        return schedule


class Run:
    """One seed's world: the proxy, the paths, the logging process and the fault events."""

    def __init__(self, schedule: Schedule, server: InfluxDB1, proxy: FaultProxy, tmp: Path, db: str) -> None:
        self.schedule = schedule
        self.server = server
        self.proxy = proxy
        self.db = db
        self.tmp = tmp
        self.out = tmp / "out"
        self.out.mkdir()
        files = tmp
        if any(name == "disk_full" for _, name in schedule.events):
            files = mount_tmpfs(tmp / "disk", "64M")
        self.disk = files
        self.env = {**os.environ, "PYTHONPATH": str(REPO), "TPLR_METRICS_HOME": str(tmp / "home")}
        self.config = {
            "url": proxy.url,
            "db": db,
            "lanes": schedule.lanes,
            "durable": schedule.durable,
            "ending": schedule.ending,
            "close_timeout": schedule.close_timeout,
            "max_retry_time": schedule.max_retry_time,
            "signal_handler": schedule.signal_handler,
            "mp_points": schedule.mp_points,
            "mp_ids": MP_IDS,
            "burst": schedule.burst,
            "max_queue_size": schedule.max_queue_size,
            "awkward": schedule.awkward,
            "linger": schedule.linger,
            "through_close": schedule.through_close,
            "through_ids": THROUGH_IDS,
            "burst_ids": BURST_IDS,
            "handler_ids": HANDLER_IDS,
            "points": POINTS,
            "base_ns": BASE_NS,
            "store": str(files / "store.sqlite"),
            "jsonl": str(files / "jsonl"),
            "spool": str(files / "spool"),
            "out": str(self.out),
        }
        self.acked = -1
        self.stalled = False
        self.corrupted: dict[str, int] = {}  # lane -> corrupt lines planted in its spool
        proxy.track_lines = any(name == "partial" for _, name in schedule.events)  # see Fault.partial

    def plant_orphan(self) -> None:
        """A logger for another database on the same server finds it refusing (503) and leaves
        its points in this run's spool directory, as a crashed run of another team would."""
        os.environ["TPLR_METRICS_HOME"] = self.env["TPLR_METRICS_HOME"]
        self.proxy.faults.append(Fault(503, times=1_000_000))
        other = MetricsLogger(
            url=self.proxy.url, database=self.orphan_db, api="v1", spool_dir=self.config["spool"], retry_interval=100
        )
        for j in range(ORPHAN_POINTS):
            i = ORPHAN_IDS + j
            other.log("fm", {"k": "orphan"}, {"pid": i, "v": float(i)}, timestamp=BASE_NS + i * 1000)
        other.close(0.5)
        self.proxy.faults.clear()
        assert other.stats()["spooled"] == ORPHAN_POINTS, other.stats()

    @property
    def orphan_db(self) -> str:
        return f"{self.db}_other"

    def check_orphan(self) -> None:
        """The orphan's own destination adopts it: every one of its points lands there."""
        self.server.create_database(self.orphan_db)
        other = MetricsLogger(url=self.proxy.url, database=self.orphan_db, api="v1", spool_dir=self.config["spool"])
        assert other.close(60)
        assert other.stats()["adopted"] == ORPHAN_POINTS, other.stats()
        rows = self.server.rows('SELECT "pid" FROM "fm"', self.orphan_db)
        assert sorted(int(r["pid"]) for r in rows) == list(range(ORPHAN_IDS, ORPHAN_IDS + ORPHAN_POINTS))

    def plant_corrupt_lines(self) -> None:
        """Append the corrupt lines to the first spool file of this run's lanes whose last line is
        whole (a torn last line would swallow the first of them)."""
        for manifest in sorted(Path(self.config["spool"]).rglob("destination.json")):
            describe = json.loads(manifest.read_text())
            if describe.get("database") == self.orphan_db:
                continue
            for path in sorted(p for p in manifest.parent.rglob("*") if p.suffix in (".jsonl", ".lp")):
                if path.read_bytes().endswith(b"\n"):
                    with path.open("ab") as f:
                        f.write(b"".join(line + b"\n" for line in CORRUPT_LINES))
                    self.corrupted[describe["kind"]] = len(CORRUPT_LINES)
                    return

    def dead_lettered(self, cause: str) -> set[int]:
        """The ids of the points in the dead letters (of every process) with this cause."""
        letters = Path(self.env["TPLR_METRICS_HOME"]) / "dead_letter"
        return {
            int(row["point"][2]["pid"])
            for path in letters.glob("*.jsonl")
            for row in map(json.loads, path.read_text().splitlines())
            if row["cause"] == cause and "point" in row
        }

    def quarantined(self) -> int:
        """The planted lines found in the dead letter, cause corrupt_spool_line."""
        planted = {line.decode() for line in CORRUPT_LINES}
        letters = Path(self.env["TPLR_METRICS_HOME"]) / "dead_letter"
        return sum(
            1
            for path in letters.glob("*.jsonl")
            for row in map(json.loads, path.read_text().splitlines())
            if row["cause"] == "corrupt_spool_line" and row["line"] in planted
        )

    def fault(self, name: str) -> None:
        proxy, server = self.proxy, self.server
        if name == "kill":
            server.kill()
            time.sleep(0.5)
            server.start()
        elif name == "down":
            server.kill()  # stays down until recovery
        elif name == "stall" and server.proc is not None and server.proc.poll() is None:
            server.proc.send_signal(signal.SIGSTOP)
            self.stalled = True
            time.sleep(0.8)
            server.proc.send_signal(signal.SIGCONT)
            self.stalled = False
        elif name == "partial":
            proxy.faults.append(Fault(400, partial=True, times=2))
        elif name == "redirect":
            elsewhere = f"http://127.0.0.1:{free_port()}/write"
            proxy.faults.append(Fault(307, times=3, location=elsewhere))
        elif name in ("503", "429", "reset"):
            status = {"503": 503, "429": 429, "reset": 0}[name]
            proxy.faults.append(Fault(status, retry_after=1 if status == 429 else None, times=3))
        elif name == "slow":
            proxy.delay = 0.7
        elif name == "hang":
            proxy.delay = 1.5  # answers after the client's 2 s timeout at times, and after short closes
        elif name == "disk_full":
            filler = fill(self.disk, leave=0)
            time.sleep(1.0)
            filler.unlink()

    def run(self) -> dict[str, Any]:
        child = subprocess.Popen(
            [sys.executable, "-c", CHILD, json.dumps(self.config)],
            env=self.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert child.stdout is not None
        lines: list[str] = []

        def read() -> None:
            assert child.stdout is not None
            for line in child.stdout:
                lines.append(line.strip())
                if line.startswith("acked "):
                    self.acked = int(line.split()[1])

        reader = threading.Thread(target=read, daemon=True)
        reader.start()
        started = time.monotonic()
        while "ready" not in lines and child.poll() is None and time.monotonic() - started < 30:
            time.sleep(0.01)
        started = time.monotonic()
        pending = list(self.schedule.events)
        pester = self.schedule.signal_handler
        while child.poll() is None:
            now = time.monotonic() - started
            while pending and pending[0][0] <= now:
                self.fault(pending.pop(0)[1])
            if pester and "logged" not in lines:
                try:
                    child.send_signal(signal.SIGUSR1)
                except ProcessLookupError:
                    pass
            if self.schedule.ending == "sigkill" and "logged" in lines:
                child.send_signal(signal.SIGKILL)
            if now > 90:
                child.kill()
                raise AssertionError("the logging process hung")
            time.sleep(0.02)
        reader.join(5)
        stderr = child.stderr.read() if child.stderr else ""
        if self.schedule.ending != "sigkill":
            assert child.returncode == 0, stderr[-3000:]
        for _, name in pending:  # events due after the process ended still happen before recovery
            self.fault(name)
        return {"returncode": child.returncode, "stderr": stderr}

    def recover(self) -> MetricsLogger:
        """Lift every fault, then let a logger for the same destinations adopt the spools."""
        self.proxy.faults.clear()
        self.proxy.delay = 0.0
        if self.server.proc is None or self.server.proc.poll() is not None:
            self.server.start()
        sinks: list[Any] = []
        for lane in self.schedule.lanes:
            if lane == "influxdb":
                sinks.append("influxdb-v1")
            elif lane == "local":
                sinks.append({"kind": "local", "params": {"path": self.config["store"]}})
            else:
                sinks.append({"kind": "jsonl", "params": {"log_dir": self.config["jsonl"]}})
        os.environ["TPLR_METRICS_HOME"] = self.env["TPLR_METRICS_HOME"]
        m = MetricsLogger(url=self.proxy.url, database=self.db, api="v1", sinks=sinks, spool_dir=self.config["spool"])
        m.close(120)
        return m

    # --- reading the destinations back ---------------------------------------------------

    def stored_ids(self, lane: str) -> list[int]:
        if lane == "influxdb":
            rows = self.server.rows('SELECT "pid" FROM "fm"', self.db)
            return [int(r["pid"]) for r in rows]
        if lane == "local":
            path = Path(self.config["store"])
            if not path.exists():
                return []
            with sqlite3.connect(path) as db:
                return [
                    int(json.loads(f)["pid"]) for (f,) in db.execute("SELECT fields FROM points WHERE measurement='fm'")
                ]
        rows = [
            json.loads(line)
            for path in Path(self.config["jsonl"]).rglob("metrics.jsonl")
            for line in path.read_text().splitlines()
        ]
        return [int(r["fields"]["pid"]) for r in rows if r["measurement"] == "fm"]


def lane_of(books: dict[str, Any], lane: str, *default: Any) -> Any:
    """A lane's figures by kind (lanes are named by their sink: influxdb-v1, local, jsonl), from
    accounting() (its per_lane) or from a mapping keyed by lane name."""
    name = {"influxdb": "influxdb-v1"}.get(lane, lane)
    found = books.get("per_lane", books)
    return found.get(name, *default) if default else found[name]


def check(schedule: Schedule, run: Run, recovery: MetricsLogger) -> None:
    main_path = run.out / "main.json"
    parts = [json.loads(p.read_text()) for p in sorted(run.out.glob("*.json"))]
    handled = json.loads(main_path.read_text())["handled"] if main_path.exists() else []
    through = json.loads(main_path.read_text())["through"] if main_path.exists() else 0
    mp_logged = schedule.mp_points if (run.out / "mp.json").exists() else 0
    logged_ids = set(range(POINTS)) | set(handled) | {MP_IDS + j for j in range(mp_logged)}
    logged_ids |= set(range(BURST_IDS, BURST_IDS + schedule.burst))
    logged_ids |= set(range(THROUGH_IDS, THROUGH_IDS + through))
    possible = set(range(POINTS)) | set(range(HANDLER_IDS, HANDLER_IDS + 100_000))
    possible |= set(range(THROUGH_IDS, THROUGH_IDS + through))
    possible |= set(range(BURST_IDS, BURST_IDS + schedule.burst))
    possible |= set(range(MP_IDS, MP_IDS + schedule.mp_points))
    recovered = recovery.accounting()
    assert recovered["balanced"], recovered
    if schedule.ending != "sigkill":
        assert main_path.exists(), "the logging process left no accounting"
    if schedule.ending == "close":
        # README: close(timeout) returns within about timeout + max(timeout, 1 s) + 1 s, plus the
        # time to write what is left (slack for that and a noisy machine), threads logging or not.
        took, timeout = json.loads(main_path.read_text())["close_s"], schedule.close_timeout
        assert took < timeout + max(timeout, 1.0) + 1.0 + 4.0, f"close({timeout}) took {took:.1f} s"
    if schedule.linger:
        # What close() returned is final: the next process may adopt the files at once.
        moved = ("written", "spooled", "adopted", "rejected")
        at_close, later = json.loads(main_path.read_text()), json.loads((run.out / "late.books").read_text())
        for name, lane in at_close["per_lane"].items():
            assert {k: lane[k] for k in moved} == {k: later["per_lane"][name][k] for k in moved}, (
                f"{name}: the books changed after close() returned: {lane} then {later['per_lane'][name]}"
            )
    for lane in schedule.lanes:
        stored = run.stored_ids(lane)
        unique = set(stored)
        assert unique <= possible, f"{lane}: {len(unique - possible)} stored ids nobody logged"
        if lane == "jsonl" and schedule.ending != "sigkill":
            assert len(stored) == len(unique), f"{lane}: {len(stored) - len(unique)} ids stored twice"
        rec = lane_of(recovered, lane)
        assert rec["spooled"] == 0, f"{lane}: {rec['spooled']} points still in the spool after recovery"
        lost = rec["dropped"] + rec["rejected"]
        planted = lane_of(run.corrupted, lane, 0)
        quarantined = lane_of(recovery.stats()["lanes"], lane)["rejected"].get("corrupt_spool_line", 0)
        assert quarantined >= planted, f"{lane}: {planted} corrupt lines planted, {quarantined} quarantined"
        lost -= planted  # not points anybody logged
        # A spool line torn by a full disk or a kill is quarantined too: only the points refused count.
        reasons = [lane_of(recovery.stats()["lanes"], lane)["rejected"]]
        reasons += [lane_of(part["rejected_by_lane"], lane) for part in parts]
        refused = {k: v for r in reasons for k, v in r.items() if k != "corrupt_spool_line"}
        # ... but the lines the proxy refused as unparseable: those are refused, and only those.
        kept_back = {int(m.group(1)) for m in map(_PID.search, run.proxy.kept_back) if m}
        if lane == "influxdb" and kept_back:
            letters = run.dead_lettered("bad_line")
            assert not kept_back & unique, f"{lane}: {len(kept_back & unique)} ids the server never got are stored"
            assert letters <= kept_back, f"{lane}: {len(letters - kept_back)} ids dead-lettered the proxy let through"
            # Counted by reason in the books a process wrote at its end; a killed process writes
            # none, and a late answer after close() counts after they were written.
            bad_lines = refused.pop("bad_line", 0)
            assert bad_lines <= len(letters) <= len(kept_back), (bad_lines, len(letters), len(kept_back))
        assert not refused, f"{lane}: points refused {refused} (awkward ones must be encoded to be stored)"
        unknown = lane_of(recovery.stats()["lanes"], lane)["dropped_maybe_stored"]  # the server may hold them
        for part in parts:
            assert part["balanced"], (
                f"unbalanced books: {json.dumps({k: v for k, v in part.items() if k != 'handled'})}"
            )
            lost += lane_of(part, lane)["dropped"] + lane_of(part, lane)["rejected"]
            unknown += lane_of(part["maybe_stored_by_lane"], lane)
        if schedule.ending == "sigkill":
            # Durable mode: every id whose log() returned before the kill is stored (or counted).
            # (A point whose WAL append failed, on a full disk, was counted wal_failed and is only
            # as safe as without durable mode.)
            refused = json.loads((run.out / "refused.books").read_text())
            not_durable = lane_of(refused["wal_failed"], lane)
            lost += lane_of(refused["lost"], lane)  # e.g. spool_write_failed, spool_evicted: a full disk
            missing = set(range(run.acked + 1)) - unique
            assert len(missing) <= lost + not_durable, (
                f"{lane}: {len(missing)} acknowledged ids lost, {lost} counted lost, {not_durable} wal_failed"
            )
            # ... and no id a full queue refused (the WAL held them, and recovery delivered them).
            main_ids = set(range(POINTS)) | set(range(BURST_IDS, BURST_IDS + schedule.burst))
            main_refused = refused["queue_full"] - refused["handled"]  # some refused may be the handler's
            assert len(unique & main_ids) <= len(main_ids) - main_refused, (
                f"{lane}: {len(unique & main_ids)} of the main thread's ids stored, but {main_refused}+ were refused"
            )
            continue
        logged = sum(part["logged"] for part in parts)
        assert logged == len(logged_ids), (logged, len(logged_ids))
        assert logged <= len(unique) + lost <= logged + unknown, (
            f"{lane}: stored {len(unique)} + lost {lost} != logged {logged}"
            + (f" (of the lost, {unknown} went out unanswered: stored or not)" if unknown else "")
        )
        assert unique <= logged_ids


def seeds(config: pytest.Config) -> list[int]:
    n = config.getoption("--fault-seeds")
    return list(range(1000, 1000 + n)) if n else CI_SEEDS


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "seed" in metafunc.fixturenames:
        metafunc.parametrize("seed", seeds(metafunc.config))


@pytest.fixture(scope="module")
def matrix_server(tmp_path_factory: pytest.TempPathFactory) -> Any:
    if not os.path.exists("/usr/bin/influxd"):
        pytest.skip("influxd is not installed")
    server = InfluxDB1(tmp_path_factory.mktemp("matrix-influx"))
    server.start()
    yield server
    server.cleanup()


def test_fault_schedule(seed: int, matrix_server: InfluxDB1, tmp_path: Path) -> None:
    schedule = Schedule.draw(seed)
    if matrix_server.proc is None or matrix_server.proc.poll() is not None:
        matrix_server.start()
    db = f"fm_{seed}_{os.getpid()}"
    matrix_server.create_database(db)
    with fault_proxy(matrix_server.port) as proxy:
        run = Run(schedule, matrix_server, proxy, tmp_path, db)
        try:
            if schedule.orphan:
                run.plant_orphan()
            outcome = run.run()
            if schedule.corrupt:
                run.plant_corrupt_lines()
            recovery = run.recover()
            check(schedule, run, recovery)
            if schedule.orphan:
                run.check_orphan()
            assert run.quarantined() == sum(run.corrupted.values()), "planted corrupt lines not in the dead letter"
        except AssertionError as exc:
            raise AssertionError(
                f"fault matrix seed {seed} failed: {exc}\nschedule: {json.dumps(asdict(schedule))}\n"
                + (outcome["stderr"][-2000:] if "outcome" in locals() else "")
            ) from None
        finally:
            if matrix_server.proc is not None and matrix_server.proc.poll() is None:
                matrix_server.proc.send_signal(signal.SIGCONT)
            if run.disk != tmp_path:
                unmount(run.disk)


def test_schedules_cover_every_fault() -> None:
    """The CI seeds, together, draw every fault and every ending at least once."""
    drawn = [Schedule.draw(seed) for seed in CI_SEEDS]
    faults = {name for s in drawn for _, name in s.events}
    expected = {"kill", "stall", "503", "429", "slow", "hang", "reset", "down", "disk_full", "redirect", "partial"}
    assert faults == expected, faults
    assert any(s.awkward for s in drawn) and any(s.linger for s in drawn)
    assert any(s.burst for s in drawn)
    assert any(s.orphan for s in drawn) and any(s.corrupt for s in drawn)
    # Refused points must stay refused: a burst into a small queue, then SIGKILL in durable mode.
    assert any(s.burst and s.max_queue_size < s.burst and s.ending == "sigkill" for s in drawn)
    assert {s.ending for s in drawn} == {"close", "exit", "sigkill"}
    assert any(s.signal_handler for s in drawn) and any(s.mp_points for s in drawn)
    assert any(set(s.lanes) == {"influxdb", "local", "jsonl"} for s in drawn)
    assert textwrap.dedent(CHILD)  # the child program is plain Python
