"""Fleet benchmark on 127.0.0.1: a simulated fleet (N agents x 4 cameras; each agent is the real outbox +
MQTT publisher code, events generated without video) -> one Mosquitto -> one control room
(``maskwatch serve --mqtt`` on a throwaway PostgreSQL), then the same with 2 ingest workers on the shared
subscription.

Rates step up (``--rates``, person events/s over the whole fleet; plus a stats bucket per camera every
``--stats-interval`` s). For each step: events/s stored, end-to-end lag (generated -> row visible in
PostgreSQL, polled every 50 ms) p50/p95, backlog left at the end of the step; ingest "falls behind" at the
first step whose stored rate is under 90 % of the offered rate or whose lag p95 passes 2 s. At the end every
generated event must be stored once (zero loss).

    python benchmarks/bench_fleet.py --agents 50 --seconds 20 --rates 100 200 400 800 --json runs/bench_fleet.json
    python benchmarks/bench_fleet.py --agents 10 --seconds 4 --rates 50 200 --workers 1 2        # smoke run

Bounded: every loop stops by itself; everything runs on 127.0.0.1 and is removed at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from maskwatch.fleet import topics  # noqa: E402
from maskwatch.fleet.broker import MosquittoBroker, free_port  # noqa: E402
from maskwatch.fleet.outbox import Outbox  # noqa: E402
from maskwatch.fleet.publisher import Publisher  # noqa: E402
from maskwatch.fleet.topics import BrokerURL  # noqa: E402
from maskwatch.stream.events import LagStats, StatsBucket, TrackEnded, new_event_id  # noqa: E402

USERS = {"agent": "agent-secret", "control": "control-secret"}
CLI = [sys.executable, "-c", "from maskwatch.cli import main; main()"]


def _person(source: str) -> TrackEnded:
    now = datetime.now(UTC)
    return TrackEnded(
        source=source,
        track_id=1,
        label="with_mask",
        probability=0.95,
        probabilities={"with_mask": 0.95, "without_mask": 0.05},
        compliant=True,
        votes={"with_mask": 5},
        n_frames=30,
        n_classified=6,
        first_frame=0,
        last_frame=29,
        first_timestamp=None,
        last_timestamp=None,
        first_seen=now,
        last_seen=now,
        best_score=0.9,
        best_box=(10.0, 10.0, 50.0, 60.0),
    )


def _stats(source: str, interval: float) -> StatsBucket:
    now = datetime.now(UTC)
    start = datetime.fromtimestamp(time.time() // interval * interval, UTC)
    return StatsBucket(
        source=source,
        start=start,
        end=now,
        interval=interval,
        people={"with_mask": 3},
        n_people=3,
        compliant_people=3,
        compliance=1.0,
        present_max=2,
        frames_analysed=120,
        frames_dropped=0,
        faces_classified=40,
        analysed_fps=12.0,
        lag=LagStats(p50=0.08, p95=0.12, max=0.2),
    )


class SimAgent:
    """One node: the real outbox + publisher, fed by the generator."""

    def __init__(self, node: str, folder: Path, url: str, cameras: int):
        self.node = node
        self.cameras = [f"cam{i}" for i in range(cameras)]
        self.outbox = Outbox(folder / f"{node}.db")
        self.publisher = Publisher(BrokerURL.parse(url), self.outbox, client_id=f"sim-{node}")
        self.publisher.start()

    def put(self, event) -> None:
        topic = topics.event_topic(self.node, event.type, event.source)
        assert topic is not None
        self.outbox.put(topic, event.to_json(), kind="stats" if event.type == "stats" else "event")
        self.publisher.wake()

    def stop(self) -> None:
        self.publisher.stop()
        self.outbox.close()


class Watcher:
    """Polls PostgreSQL for new person events; records when each became visible."""

    def __init__(self, url: str):
        import psycopg

        self.conn = psycopg.connect(url.replace("postgresql://", "postgresql://", 1), autocommit=True)
        self.seen: dict[str, float] = {}
        self.last_id = 0
        self._stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self._stop.wait(0.05):
            try:
                # with several writers, ids commit out of order: look back a margin (seen is a set)
                rows = self.conn.execute(
                    "SELECT id, event_id FROM events WHERE id > %s ORDER BY id", (self.last_id - 5000,)
                ).fetchall()
            except Exception:
                continue
            now = time.time()
            for row_id, event_id in rows:
                self.seen.setdefault(event_id, now)
                self.last_id = max(self.last_id, row_id)

    def all_ids(self) -> set[str]:
        return {r[0] for r in self.conn.execute("SELECT event_id FROM events").fetchall()}

    def stats_count(self) -> int:
        return int(self.conn.execute("SELECT COUNT(*) FROM ingested WHERE type = 'stats'").fetchone()[0])

    def close(self) -> None:
        self._stop.set()
        self.thread.join(2)
        self.conn.close()


def _pct(values: list[float], q: float) -> float | None:
    if not values:
        return None
    values = sorted(values)
    return round(values[min(len(values) - 1, int(q * len(values)))], 3)


def run_fleet(args: argparse.Namespace, workers: int, pg) -> dict:
    work = Path(tempfile.mkdtemp(prefix="mw-fleet-bench-"))
    broker = MosquittoBroker(work / "broker", USERS)
    broker.start()
    db_url = pg.create_db()
    servers = []
    try:
        for w in range(workers):
            data = work / f"control{w}"
            log = open(work / f"serve{w}.log", "ab")  # noqa: SIM115
            proc = subprocess.Popen(
                [
                    *CLI,
                    "serve",
                    "--no-demo",
                    "--port",
                    str(free_port()),
                    "--data-dir",
                    str(data),
                    "--db",
                    db_url,
                    "--mqtt",
                    broker.url("control") + "?shared=1",  # several workers split the load
                    "--mqtt-id",
                    f"bench-ingest-{w}",
                ],
                stdout=log,
                stderr=log,
                env={**os.environ, "MASKWATCH_ADMIN_TOKEN": "b" * 32},
            )
            servers.append(proc)
            deadline = time.monotonic() + 90
            while not (data / "fleet.json").exists():
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise RuntimeError(
                        f"control room {w} did not start: {(work / f'serve{w}.log').read_text()[-2000:]}"
                    )
                time.sleep(0.2)
        agents = [
            SimAgent(f"node{i:03d}", work / "agents", broker.url("agent"), args.cameras) for i in range(args.agents)
        ]
        while not all(a.publisher.connected.is_set() for a in agents):
            time.sleep(0.05)
        watcher = Watcher(db_url)
        generated: dict[str, float] = {}
        n_stats = 0
        steps = []
        next_stats = time.time() + args.stats_interval
        for rate in args.rates:
            t0 = time.time()
            phase_ids = []
            sent = 0
            while (now := time.time()) < t0 + args.seconds:
                due = int((now - t0) * rate)
                while sent < due:
                    agent = agents[sent % len(agents)]
                    event = _person(f"{agent.cameras[(sent // len(agents)) % len(agent.cameras)]}")
                    event = event.model_copy(update={"id": new_event_id()})
                    generated[event.id] = time.time()
                    phase_ids.append(event.id)
                    agent.put(event)
                    sent += 1
                if now >= next_stats:
                    next_stats += args.stats_interval
                    for agent in agents:
                        for camera in agent.cameras:
                            agent.put(_stats(camera, args.stats_interval))
                            n_stats += 1
                time.sleep(0.002)
            elapsed = time.time() - t0
            time.sleep(0.3)
            stored_in_phase = [i for i in phase_ids if i in watcher.seen and watcher.seen[i] <= t0 + elapsed + 0.3]
            lags = [watcher.seen[i] - generated[i] for i in phase_ids if i in watcher.seen]
            step = {
                "offered_per_s": rate,
                "generated": len(phase_ids),
                "stored_per_s": round(len(stored_in_phase) / (elapsed + 0.3), 1),
                "lag_p50_s": _pct(lags, 0.5),
                "lag_p95_s": _pct(lags, 0.95),
                "backlog_at_end": len(phase_ids) - len(stored_in_phase),
                "outbox_waiting": sum(len(a.outbox) for a in agents),
            }
            step["behind"] = step["stored_per_s"] < 0.9 * rate or (step["lag_p95_s"] or 0) > 2.0
            steps.append(step)
            print(
                f"  workers={workers} offered {rate}/s: stored {step['stored_per_s']}/s, lag p50 {step['lag_p50_s']} s "
                f"p95 {step['lag_p95_s']} s, backlog {step['backlog_at_end']}",
                flush=True,
            )
        deadline = time.monotonic() + args.drain
        while time.monotonic() < deadline and (
            len(watcher.all_ids()) < len(generated) or watcher.stats_count() < n_stats
        ):
            time.sleep(0.2)
        stored_ids = watcher.all_ids()
        missing = len(set(generated) - stored_ids)
        duplicates = int(watcher.conn.execute("SELECT COUNT(*) - COUNT(DISTINCT event_id) FROM events").fetchone()[0])
        stats_stored = watcher.stats_count()
        watcher.close()
        for agent in agents:
            agent.stop()
        behind = next((s["offered_per_s"] for s in steps if s["behind"]), None)
        sustained = max((s["stored_per_s"] for s in steps if not s["behind"]), default=None)
        return {
            "workers": workers,
            "steps": steps,
            "generated_person_events": len(generated),
            "missing": missing,
            "duplicates": duplicates,
            "stats_generated": n_stats,
            "stats_stored": stats_stored,
            "zero_loss": missing == 0 and stats_stored == n_stats and duplicates == 0,
            "falls_behind_at_per_s": behind,
            "sustained_per_s": sustained,
        }
    finally:
        for proc in servers:
            proc.terminate()
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
        broker.stop()
        shutil.rmtree(work, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--agents", type=int, default=50)
    parser.add_argument("--cameras", type=int, default=4)
    parser.add_argument("--seconds", type=float, default=20.0, help="per rate step")
    parser.add_argument("--rates", type=int, nargs="+", default=[100, 200, 400, 800], help="person events/s (fleet)")
    parser.add_argument("--stats-interval", type=float, default=10.0, help="seconds between stats buckets per camera")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--drain", type=float, default=60.0, help="seconds allowed to drain at the end")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    from conftest_service import PgServer, _pg_bin

    bindir = _pg_bin()
    if bindir is None:
        sys.exit("PostgreSQL server binaries not found (apt-get install postgresql)")
    pg = PgServer(bindir)
    try:
        runs = [run_fleet(args, workers, pg) for workers in args.workers]
    finally:
        pg.close()
    result = {
        "machine": {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count()},
        "args": {k: v for k, v in vars(args).items() if k != "json"},
        "runs": runs,
    }
    by = {r["workers"]: r for r in runs}
    if 1 in by and 2 in by and by[1]["sustained_per_s"] and by[2]["sustained_per_s"]:
        result["ratio_2_to_1"] = round(by[2]["sustained_per_s"] / by[1]["sustained_per_s"], 2)
    text = json.dumps(result, indent=2)
    print(text)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(text + "\n")


if __name__ == "__main__":
    main()
