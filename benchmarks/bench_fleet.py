"""Fleet benchmark on 127.0.0.1: a simulated fleet (N agents x 4 cameras; each agent is the real outbox +
MQTT publisher code, events generated without video, the agents split over ``--procs`` generator processes)
-> one Mosquitto -> one control room
(``maskwatch serve --mqtt`` on a throwaway PostgreSQL), then the same with 2 ingest workers on the shared
subscription.

Rates step up (``--rates``, person events/s over the whole fleet; plus a stats bucket per camera every
``--stats-interval`` s). For each step: events/s stored, end-to-end lag (generated -> row visible in
PostgreSQL, polled every 50 ms; every event of the step, also those stored after it) p50/p95, backlog left
at the end of the step; ingest "falls behind" at the
first step whose stored rate is under 90 % of the rate the generator managed or whose lag p95 passes 2 s (a
step whose generator fell under 95 % of the offered rate is marked ``generator_limited``). At the end every
generated event must be stored once (zero loss), and no worker may have dropped one (its ingest buffer slows
MQTT down when full instead). Everything shares the machine (generator, broker, workers, PostgreSQL), so
the load average is recorded with every step and both worker counts run in one invocation.

    python benchmarks/bench_fleet.py --agents 50 --seconds 20 --rates 100 200 400 800 \
        --json benchmarks/results/fleet.json
    python benchmarks/bench_fleet.py --agents 10 --seconds 4 --rates 50 200 --workers 1 2        # smoke run
    PYTHONPATH=/work/baseline/src python benchmarks/bench_fleet.py ...   # the code before issue 18 (PUBACK)

A node deletes a message once the control room has stored it (``maskwatch/{node}/ack``) when the code under
test has end-to-end acknowledgement, else on the broker's PUBACK (the JSON says which: ``code.ack``).

Bounded: every loop stops by itself; everything runs on 127.0.0.1 and is removed at the end.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
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

from maskwatch.core.events import LagStats, StatsBucket, TrackEnded, new_event_id  # noqa: E402
from maskwatch.fleet import topics  # noqa: E402
from maskwatch.fleet.broker import MosquittoBroker, free_port  # noqa: E402
from maskwatch.fleet.outbox import Outbox  # noqa: E402
from maskwatch.fleet.publisher import Publisher  # noqa: E402
from maskwatch.fleet.topics import BrokerURL  # noqa: E402

USERS = {"agent": "agent-secret", "control": "control-secret"}
TOKEN = "mw_bench_fleet_" + "0123456789abcdef" * 2  # a preset admin token must be strong
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


def ack_mode() -> str:
    """``end_to_end`` when this tree's nodes delete a message once the control room has stored it (issue 18),
    else ``broker`` (deleted on the broker's PUBACK: the code before)."""
    return "end_to_end" if hasattr(topics, "ack_topic") else "broker"


class SimAgent:
    """One node: the real outbox + publisher, fed by the generator (end-to-end acknowledgement when the tree
    has it, as a real agent of that tree runs)."""

    def __init__(self, node: str, folder: Path, url: str, cameras: int):
        self.node = node
        self.cameras = [f"cam{i}" for i in range(cameras)]
        self.outbox = Outbox(folder / f"{node}.db")
        acks = {"ack_topic": topics.ack_topic(node)} if ack_mode() == "end_to_end" else {}
        self.publisher = Publisher(BrokerURL.parse(url), self.outbox, client_id=f"sim-{node}", **acks)
        self.publisher.start()

    def put(self, event) -> None:
        topic = topics.event_topic(self.node, event.type, event.source)
        assert topic is not None
        self.outbox.put(topic, event.to_json(), kind="stats" if event.type == "stats" else "event")
        self.publisher.wake()

    def stop(self) -> None:
        self.publisher.stop()
        self.outbox.close()


def _cpu() -> str:
    """The CPU model (lscpu's 'Model name'), to read absolute figures against."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _load() -> float:
    return round(os.getloadavg()[0], 2)


def _get(port: int, path: str) -> str | None:
    import urllib.request

    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/api/v1{path}", headers={"Authorization": f"Bearer {TOKEN}"}
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.read().decode()
    except OSError:
        return None


def _worker_counts(port: int) -> tuple[int | None, float | None]:
    """A worker's MQTT messages accepted (its share of the shared subscription) and its
    ``maskwatch_ingest_dropped`` gauge (events refused by a full ingest buffer; must stay 0)."""
    fleet, metrics = _get(port, "/fleet"), _get(port, "/metrics")
    accepted = json.loads(fleet)["ingest"]["accepted"] if fleet else None
    dropped = None
    for line in (metrics or "").splitlines():
        if line.startswith("maskwatch_ingest_dropped "):
            dropped = float(line.split()[1])
    return accepted, dropped


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


GAP = 0.3  # seconds between rate steps


def _step_start(start: float, k: int, seconds: float) -> float:
    return start + k * (seconds + GAP)


def _generator(conn, index: int, procs: int, plan: dict, url: str, folder: str) -> None:
    """One generator process: its share of the agents (every ``procs``-th node), each the real outbox +
    publisher, runs the rate steps (its share of each rate) from the start time it is sent, reports what it
    generated (id, time, step), and stops its agents when told."""
    agents = [
        SimAgent(f"node{i:03d}", Path(folder), url, plan["cameras"])
        for i in range(plan["agents"])
        if i % procs == index
    ]
    while not all(a.publisher.connected.is_set() for a in agents):
        time.sleep(0.05)
    conn.send("ready")
    start = conn.recv()
    generated: list[tuple[str, float, int]] = []
    waiting, n_stats, sent_total = [], 0, 0
    next_stats = start + plan["stats_interval"]
    for k, rate in enumerate(plan["rates"]):
        t0 = _step_start(start, k, plan["seconds"])
        time.sleep(max(0.0, t0 - time.time()))
        share, sent = rate / procs, 0
        while (now := time.time()) < t0 + plan["seconds"]:
            due = int((now - t0) * share)
            while sent < due:
                agent = agents[sent_total % len(agents)]
                camera = agent.cameras[(sent_total // len(agents)) % len(agent.cameras)]
                event = _person(camera).model_copy(update={"id": new_event_id()})
                generated.append((event.id, time.time(), k))
                agent.put(event)
                sent += 1
                sent_total += 1
            if now >= next_stats:
                next_stats += plan["stats_interval"]
                for agent in agents:
                    for camera in agent.cameras:
                        agent.put(_stats(camera, plan["stats_interval"]))
                        n_stats += 1
            time.sleep(0.002)
        waiting.append(sum(len(a.outbox) for a in agents))
    conn.send({"generated": generated, "stats": n_stats, "outbox_waiting": waiting})
    conn.recv()  # "stop", once the control room has stored everything
    for agent in agents:
        agent.stop()


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
    ports = []
    generators: list = []
    load_before = _load()
    try:
        for w in range(workers):
            data = work / f"control{w}"
            log = open(work / f"serve{w}.log", "ab")  # noqa: SIM115
            ports.append(free_port())
            proc = subprocess.Popen(
                [
                    *CLI,
                    "serve",
                    "--no-demo",
                    "--port",
                    str(ports[-1]),
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
                env={**os.environ, "MASKWATCH_ADMIN_TOKEN": TOKEN},
            )
            servers.append(proc)
            deadline = time.monotonic() + 90
            while not (data / "fleet.json").exists():
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise RuntimeError(
                        f"control room {w} did not start: {(work / f'serve{w}.log').read_text()[-2000:]}"
                    )
                time.sleep(0.2)
        # the generator runs in --procs processes (real agents are separate machines; one Python process
        # with 100 MQTT threads tops out below the ingest rates measured here)
        context = multiprocessing.get_context("spawn")
        plan = {k: getattr(args, k) for k in ("agents", "cameras", "rates", "seconds", "stats_interval")}
        pipes = []
        for index in range(args.procs):
            parent, child = context.Pipe()
            proc = context.Process(
                target=_generator,
                args=(child, index, args.procs, plan, broker.url("agent"), str(work / "agents")),
                daemon=True,
            )
            proc.start()
            pipes.append(parent)
            generators.append(proc)
        for parent in pipes:
            if not parent.poll(180) or parent.recv() != "ready":
                raise RuntimeError("a generator process did not connect its agents")
        watcher = Watcher(db_url)
        start = time.time() + 1.0
        for parent in pipes:
            parent.send(start)
        loads = []
        for k in range(len(args.rates)):
            time.sleep(max(0.0, _step_start(start, k, args.seconds) + args.seconds + GAP - time.time()))
            loads.append(_load())
        reports = [parent.recv() if parent.poll(120) else None for parent in pipes]
        if any(r is None for r in reports):
            raise RuntimeError("a generator process did not report")
        generated: dict[str, tuple[float, int]] = {}
        for report in reports:
            generated.update({event_id: (at, k) for event_id, at, k in report["generated"]})
        n_stats = sum(r["stats"] for r in reports)
        steps = []
        for k, rate in enumerate(args.rates):
            phase_end = _step_start(start, k, args.seconds) + args.seconds
            phase_ids = [i for i, (_, kk) in generated.items() if kk == k]
            stored_in_phase = [i for i in phase_ids if watcher.seen.get(i, float("inf")) <= phase_end + GAP]
            step = {
                "offered_per_s": rate,
                "generated": len(phase_ids),
                "generated_per_s": round(len(phase_ids) / args.seconds, 1),
                "stored_per_s": round(len(stored_in_phase) / args.seconds, 1),  # stored by its end + GAP
                "backlog_at_end": len(phase_ids) - len(stored_in_phase),
                "outbox_waiting": sum(r["outbox_waiting"][k] for r in reports),
                "load1": loads[k],
            }
            steps.append(step)
        deadline = time.monotonic() + args.drain
        while time.monotonic() < deadline and (
            len(watcher.all_ids()) < len(generated) or watcher.stats_count() < n_stats
        ):
            time.sleep(0.2)
        for k, step in enumerate(steps):
            # every event of the step, also those stored after it ended (a step that falls behind shows it here)
            lags = [watcher.seen[i] - at for i, (at, kk) in generated.items() if kk == k and i in watcher.seen]
            step["lag_p50_s"], step["lag_p95_s"] = _pct(lags, 0.5), _pct(lags, 0.95)
            step["generator_limited"] = step["generated_per_s"] < 0.95 * step["offered_per_s"]
            step["behind"] = step["stored_per_s"] < 0.9 * step["generated_per_s"] or (step["lag_p95_s"] or 0) > 2.0
            print(
                f"  workers={workers} offered {step['offered_per_s']}/s: generated {step['generated_per_s']}/s, "
                f"stored {step['stored_per_s']}/s, lag p50 {step['lag_p50_s']} s p95 {step['lag_p95_s']} s, "
                f"backlog {step['backlog_at_end']}, outbox {step['outbox_waiting']}, load {step['load1']}",
                flush=True,
            )
        stored_ids = watcher.all_ids()
        missing = len(set(generated) - stored_ids)
        duplicates = int(watcher.conn.execute("SELECT COUNT(*) - COUNT(DISTINCT event_id) FROM events").fetchone()[0])
        stats_stored = watcher.stats_count()
        watcher.close()
        for parent in pipes:
            parent.send("stop")
        for proc in generators:
            proc.join(30)
        counts = [_worker_counts(port) for port in ports]
        accepted, dropped = [a for a, _ in counts], [d for _, d in counts]
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
            "accepted_per_worker": accepted,  # messages each worker took from the shared subscription
            "dropped_per_worker": dropped,  # events refused by a full ingest buffer (must be 0)
            "load1_before": load_before,
            "falls_behind_at_per_s": behind,
            "sustained_per_s": sustained,
        }
    finally:
        for gen in generators:
            if gen.is_alive():
                gen.kill()
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
    parser.add_argument("--procs", type=int, default=2, help="generator processes (the agents split between them)")
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
        "machine": {"cpu": _cpu(), "cores": os.cpu_count(), "note": "shared: other work runs on the same cores"},
        "code": {"maskwatch": str(Path(topics.__file__).parents[2]), "ack": ack_mode()},
        "command": "python " + " ".join(sys.argv),
        "args": {k: v for k, v in vars(args).items() if k != "json"},
        "runs": runs,
    }
    by = {r["workers"]: r for r in runs}
    if 1 in by and 2 in by and by[1]["sustained_per_s"] and by[2]["sustained_per_s"]:
        result["ratio_2_to_1"] = round(by[2]["sustained_per_s"] / by[1]["sustained_per_s"], 2)
    # the same step side by side: at the top steps the stored rate may be capped by the generator, where the
    # lag tells the worker counts apart
    result["by_step"] = [
        {
            "offered_per_s": rate,
            **{
                f"workers_{r['workers']}": {k: step[k] for k in ("stored_per_s", "lag_p50_s", "lag_p95_s", "behind")}
                for r in runs
                for step in r["steps"]
                if step["offered_per_s"] == rate
            },
        }
        for rate in args.rates
    ]
    text = json.dumps(result, indent=2)
    print(text)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(text + "\n")


if __name__ == "__main__":
    main()
