"""Chaos soak (issue 18, unattended operation): a whole installation on this machine, faults at random, then
exact checks of what was stored against what the engines reported.

What runs (every process real, every log under the run folder ``runs/soak-<time>/``):

* a throwaway PostgreSQL (``tests/conftest_service.py::PgServer``: initdb + pg_ctl, as ``postgres`` when root);
* Mosquitto configured as ``docs/deploy.md`` says (password file, the node ACL with ``pattern`` lines,
  ``persistence true``, ``autosave_interval 60``, queue and in-flight limits), on 127.0.0.1 without TLS;
* two ``maskwatch serve --mqtt ...?shared=1 --mqtt-id maskwatch-ingest-N`` workers on that PostgreSQL (the
  documented multi-worker setup), sharing one ``serve.yaml`` with two local cameras (RTSP and HTTP), the
  ``server.journal`` switched on, a ``camera_offline`` and an ``unmasked_person`` rule (besides the built-in
  ``node offline``) and ``jobs.allowed_dirs``;
* two ``maskwatch agent`` nodes (``journal: true``), two cameras each: ``edge-a`` an HTTP camera and a file
  played in real time, ``edge-b`` an RTSP and an HTTP camera, with a small ``outbox_mb`` budget;
* the cameras: real HTTP MJPEG and RTSP servers (``tests/camera_servers.py``) looping videos made at start
  from the shared scene images (each image held a few seconds, so people are tracked).

Faults (seeded; one at a time, a new one every ``--gap`` seconds, 60-180 by default, and at least
``--quiet`` seconds, 15, after the last one ended), each logged with its time: ``camera_stop`` (a camera's
stream server off for ``--camera-down`` s, 90), ``pg_kill`` (PostgreSQL
stopped with ``-m immediate`` for 30 s; ``pg_kill:serve-N`` also SIGKILLs that worker during the outage),
``broker_kill`` (SIGKILL, 15 s; ``broker_kill:stop``: SIGTERM), ``worker_kill`` (SIGKILL and restart; a job
is started on the other worker first), ``agent_kill`` (SIGKILL and restart), ``worker_stop`` (SIGSTOP 40 s),
``broker_kill_workers_down`` (both workers SIGKILLed, then the broker, then everything back),
``outbox_budget`` (the broker down 60 s while the small-budget node fills its outbox). Two poison messages
are published at the start (an unknown field; a camera name that fits MQTT but not the database column once
prefixed by its node).

Ground truth ("people the engines reported, per camera"):

* agents: their outbox ``journal`` table (``journal: true``): ``type:id`` and topic of every event, written
  in the same transaction as the outbox row, before it is published;
* the control room's own cameras: ``server.journal: true`` makes each ``serve`` process append every
  ``track_ended``, ``stats`` and ``source_status`` of its own engine to ``DATA_DIR/journal.jsonl`` (one
  ``maskwatch.event/1`` JSON per line, line-buffered, written before the event is handed on); the soak reads
  every ``journal*.jsonl`` under a worker's data dir, so per-camera processes may each keep their own;
* agent cameras' states: the ``source_status`` events on MQTT (an observer with its own persistent session,
  which also notes every person event the broker accepted: a loss is then "before the broker" or "after it").

Each lost person event is attributed to a fault: the last one started before it was reported (by time for
the control room's cameras, where one reported in the 10 s before a fault counts for that fault; by journal
position for a node's), "during" it or "after" its end.

Checks (PASS / FAIL / N/A, with the numbers, per camera where it applies): people stored exactly once;
budget drops reported exactly; no local camera analysed by two workers at once; every camera live again
within 30 s of its source returning; no camera left failed; every fired alert resolved once its cause is
gone; no duplicate or flapping alert; ``/healthz`` answered throughout (outside the windows where that worker
was down on purpose); ``/readyz`` not ready while the broker is down; RSS flat after warm-up (judged on
processes that lived 5 minutes past their warm-up); poison messages stored or dead-lettered; the dead-letter
table empty or explained; a job survives the other worker's restart; a restarted agent does not replay its
file source; every process exits 0 on SIGTERM at the end.

    PYTHONPATH=$PWD/src .venv/bin/python benchmarks/soak.py --minutes 30 --seed 1 --json benchmarks/results/soak.json
    PYTHONPATH=$PWD/src .venv/bin/python benchmarks/soak.py --minutes 3 --seed 7          # a short run
    PYTHONPATH=$PWD/src .venv/bin/python benchmarks/soak.py --faults camera_stop:cr-rtsp,agent_kill:edge-a --gap 10 20

Exit status: 0 every check passed (or N/A), 1 some check failed, 2 the harness could not run, 130 Ctrl-C.
Every process is stopped at the end, on Ctrl-C or on error; the report lists any left behind.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import os
import platform
import random
import shutil
import signal
import sqlite3
import statistics
import subprocess
import sys
import threading
import time
from collections import Counter, defaultdict
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Literal

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from camera_servers import MjpegCamera, RtspCamera, free_port, rtsp_unavailable, scene_images, scene_video  # noqa: E402

__all__ = ["CHECKS", "FAULT_KINDS", "Check", "SoakError", "SoakOptions", "SoakResult", "run"]

API = "/api/v1"
ADMIN = "mw_soak_admin_token_0123456789abcdef"
CONTROL_PASSWORD = "control-secret"
UNMASKED_WINDOW_S = 30.0  # the soak's unmasked_person rule: each alert stays firing this long after its person
# how long a person's event may take to be stored after they leave (the tracker ends a track up to 3 s after its
# last sighting, then the ingest): the rule waits this long (alerts.UNMASKED_SETTLE_S), and a resolution cannot
# know about a person who left less than this before it (still in view, or their event on its way)
EVENT_LATENCY_S = 5.0
SOAK_RULES = [  # besides the built-in "node offline" of serve --mqtt
    {"name": "soak camera offline", "kind": "camera_offline", "for_s": 15.0, "cooldown_s": 0.0},
    {"name": "soak unmasked", "kind": "unmasked_person", "window_s": UNMASKED_WINDOW_S, "cooldown_s": 0.0},
    # the built-in outbox rule stays firing 10 min after a drop (an operator must see it); the soak's own
    # resolves 20 s after the episode ends, so "resolved once its cause is gone" is checked within the run
    {"name": "soak outbox dropped", "kind": "outbox_dropped", "for_s": 0.0, "window_s": 20.0, "cooldown_s": 0.0},
]
FAULT_KINDS = (
    "camera_stop",
    "pg_kill",
    "broker_kill",
    "worker_kill",
    "agent_kill",
    "worker_stop",
    "broker_kill_workers_down",
    "outbox_budget",
)
CHECKS = (
    "people_seen",
    "people_exactly_once",
    "budget_drops_reported",
    "camera_exclusive",
    "camera_recovery",
    "no_camera_failed",
    "alerts_resolved",
    "alerts_not_duplicated",
    "healthz_answered",
    "readyz_sees_broker",
    "rss_flat",
    "poison_kept",
    "dead_letter_explained",
    "jobs_survive_restart",
    "file_not_replayed",
    "clean_shutdown",
)
Status = Literal["PASS", "FAIL", "N/A"]


class SoakError(RuntimeError):
    """The harness itself could not run (a process that never started, a missing tool)."""


# -- options and results ------------------------------------------------------------------------------------


@dataclass
class SoakOptions:
    minutes: float = 30.0  # chaos time (faults); warm-up, settling and the checks come on top
    seed: int = 0
    faults: list[str] | None = None  # fixed fault specs ``kind[:target]`` in order; None: at random
    gap: tuple[float, float] = (60.0, 180.0)  # seconds from one fault's start to the next (random)
    camera_down_s: float = 90.0
    pg_down_s: float = 30.0
    broker_down_s: float = 15.0
    worker_stop_s: float = 40.0
    budget_outage_s: float = 60.0  # broker outage of the outbox_budget fault
    budget_mb: float = 0.02  # outbox budget of the budget node (edge-b); a 60 s broker outage overflows it
    first_fault_s: float = 60.0  # after warm-up, before the first fault
    quiet_s: float = 15.0  # at least this long from one fault's end to the next one's start
    settle_s: float = 60.0  # after the last fault, before the final state is read
    recovery_s: float = 30.0  # a camera must be live again this soon after its source returns
    fps: float = 2.0  # camera frame rate (the machine is shared: keep analysis light)
    hold: float = 5.0  # seconds each scene image is shown
    stats_interval: float = 10.0
    run_dir: Path | None = None  # default runs/soak-<time>
    json_out: Path | None = None
    verbose: bool = True


@dataclass
class Check:
    name: str
    status: Status
    summary: str
    details: list[str] = field(default_factory=list)
    numbers: dict[str, Any] = field(default_factory=dict)

    def render(self) -> str:
        lines = [f"{self.status:4}  {self.name}: {self.summary}"]
        lines += [f"        {d}" for d in self.details[:20]]
        if len(self.details) > 20:
            lines.append(f"        ... {len(self.details) - 20} more")
        return "\n".join(lines)


@dataclass
class FaultRecord:
    kind: str
    target: str
    start: float
    end: float = 0.0
    detail: dict[str, Any] = field(default_factory=dict)
    down: list[tuple[str, float, float]] = field(default_factory=list)  # (worker, from, to): down on purpose
    touches: list[str] = field(default_factory=list)  # cameras and nodes it may disturb (alert bounds)
    marks: dict[str, dict[str, int]] = field(default_factory=dict)  # nodes' journal positions at start and end


@dataclass
class SoakResult:
    options: dict[str, Any]
    run_dir: str
    machine: dict[str, Any]
    started: str
    chaos_s: float
    faults: list[dict[str, Any]]
    cameras: dict[str, dict[str, Any]]
    checks: list[Check]
    processes: dict[str, Any]
    load: dict[str, Any]
    orphans: list[str]

    def check(self, name: str) -> Check:
        return next(c for c in self.checks if c.name == name)

    @property
    def failed(self) -> list[Check]:
        return [c for c in self.checks if c.status == "FAIL"]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# -- the installation -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CameraSpec:
    key: str  # as stored: "cr-rtsp" (control room) or "edge-a:door" (NODE:CAMERA)
    owner: str  # "control" or the node
    name: str  # on its owner
    kind: str  # http | rtsp | file

    @property
    def node(self) -> str | None:
        return None if self.owner == "control" else self.owner


CAMERAS = (
    CameraSpec("cr-rtsp", "control", "cr-rtsp", "rtsp"),
    CameraSpec("cr-http", "control", "cr-http", "http"),
    CameraSpec("edge-a:door", "edge-a", "door", "http"),
    CameraSpec("edge-a:lobby", "edge-a", "lobby", "file"),
    CameraSpec("edge-b:gate", "edge-b", "gate", "rtsp"),
    CameraSpec("edge-b:hall", "edge-b", "hall", "http"),
)
NODES = ("edge-a", "edge-b")
WORKERS = ("serve-1", "serve-2")
INGEST_IDS = tuple(f"maskwatch-ingest-{i}" for i in range(1, len(WORKERS) + 1))  # their MQTT client ids ("broker lost")
BUDGET_NODE = "edge-b"


def _die_with_us(argv: list[str]) -> list[str]:
    """Children die with the soak even if it is SIGKILLed: ``setpriv --pdeathsig KILL`` sets the parent-death
    signal and execs the command (the signal fires when the thread that started it ends: children are started
    from the main thread only)."""
    setpriv = shutil.which("setpriv")
    return [setpriv, "--pdeathsig", "KILL", *argv] if setpriv else argv


class Proc:
    """A child process with its log appended to ``log`` across restarts; its incarnations are kept."""

    def __init__(self, name: str, argv: list[str], log: Path, env: dict[str, str] | None = None) -> None:
        self.name, self.argv, self.log, self.env = name, argv, log, env
        self.popen: subprocess.Popen[bytes] | None = None
        self.history: list[dict[str, Any]] = []

    @property
    def pid(self) -> int | None:
        return self.popen.pid if self.alive and self.popen is not None else None

    @property
    def alive(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def start(self) -> None:
        self.log.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log, "ab") as log:
            log.write(f"\n=== soak: start {datetime.now().isoformat(timespec='seconds')} ===\n".encode())
            log.flush()
            self.popen = subprocess.Popen(
                _die_with_us(self.argv),
                stdout=log,
                stderr=subprocess.STDOUT,
                env=self.env,
                cwd=ROOT,
                start_new_session=True,
            )
        self.history.append({"pid": self.popen.pid, "started": time.time(), "ended": None, "rc": None, "how": None})

    def _ended(self, how: str) -> int | None:
        assert self.popen is not None
        rc = self.popen.returncode
        self.history[-1].update(ended=time.time(), rc=rc, how=how)
        return rc

    def send(self, sig: int) -> None:
        if self.alive and self.popen is not None:
            self.popen.send_signal(sig)

    def kill(self) -> None:
        if self.popen is None:
            return
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGKILL)
            self.popen.wait()
            self._ended("SIGKILL")
        elif self.history[-1]["ended"] is None:
            self._ended("exited")

    def terminate(self, timeout: float = 30.0) -> int | None:
        """SIGTERM (after SIGCONT, in case it is stopped); SIGKILL after ``timeout``. The exit status."""
        if self.popen is None:
            return None
        if self.popen.poll() is not None:
            return self._ended("exited") if self.history[-1]["ended"] is None else self.popen.returncode
        self.popen.send_signal(signal.SIGCONT)
        self.popen.send_signal(signal.SIGTERM)
        try:
            self.popen.wait(timeout)
            return self._ended("SIGTERM")
        except subprocess.TimeoutExpired:
            self.popen.kill()
            self.popen.wait()
            self._ended(f"SIGTERM, SIGKILL after {timeout:g} s")
            return None


class Broker:
    """Mosquitto as ``docs/deploy.md`` configures it (listener on 127.0.0.1 without TLS)."""

    def __init__(self, folder: Path, users: dict[str, str]) -> None:
        from maskwatch.fleet.broker import find_mosquitto

        found = find_mosquitto()
        if found is None:
            raise SoakError("mosquitto is not installed (apt-get install mosquitto mosquitto-clients)")
        binary, passwd = found
        folder.mkdir(parents=True, exist_ok=True)
        self.folder, self.users, self.port = folder, users, free_port()
        pwfile = folder / "passwd"
        for i, (user, password) in enumerate(users.items()):
            cmd = [passwd, "-b", *(["-c"] if i == 0 else []), str(pwfile), user, password]
            subprocess.run(cmd, check=True, capture_output=True)
        (folder / "acl").write_text(
            "user control\ntopic readwrite maskwatch/#\n\n"
            "pattern write maskwatch/%u/#\npattern read  maskwatch/%u/cmd/#\npattern read  maskwatch/%u/ack\n"
        )  # as docs/deploy.md writes it (the ack line: a node hears what the control room stored)
        for path in (pwfile, folder / "acl"):
            path.chmod(0o600)
        conf = folder / "mosquitto.conf"
        conf.write_text(
            ("user root\n" if os.geteuid() == 0 else "") + f"listener {self.port} 127.0.0.1\n"
            "allow_anonymous false\n"
            f"password_file {pwfile}\n"
            f"acl_file {folder / 'acl'}\n"
            "persistence true\n"
            f"persistence_location {folder}/\n"
            "autosave_interval 60\n"
            "max_queued_messages 1000000\n"
            "max_inflight_messages 1000\n"
            "max_packet_size 1048576\n"
            "log_dest stderr\nlog_type error\nlog_type warning\nlog_type notice\nlog_timestamp_format %H:%M:%S\n"
        )
        self.proc = Proc("mosquitto", [binary, "-c", str(conf)], folder.parent / "logs" / "mosquitto.log")

    def url(self, user: str) -> str:
        return f"mqtt://{user}:{self.users[user]}@127.0.0.1:{self.port}"

    def start(self) -> None:
        self.proc.start()
        if not _wait(lambda: _port_open(self.port), 15):
            raise SoakError(f"mosquitto did not listen on {self.port} (log: {self.proc.log})")

    def kill(self) -> None:
        self.proc.kill()


def _port_open(port: int) -> bool:
    import socket

    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.3):
            return True
    except OSError:
        return False


def _wait(predicate: Any, timeout: float, interval: float = 0.25) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    return predicate()


def _postgres() -> Any:
    from conftest_service import PgServer, _pg_bin

    bindir = _pg_bin()
    if bindir is None:
        raise SoakError("PostgreSQL server binaries not found under /usr/lib/postgresql (apt-get install postgresql)")

    class Postgres(PgServer):
        def kill(self) -> None:
            """An immediate shutdown: no checkpoint, crash recovery at the next start (what a crash does)."""
            self._run("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "-t", "30", "stop")

        def postmaster_pid(self) -> int | None:
            try:
                return int((self.data / "postmaster.pid").read_text().split()[0])
            except (OSError, ValueError, IndexError):
                return None

    return Postgres(bindir)


def _rss_kb(pid: int) -> int | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except (OSError, ValueError):
        return None
    return None


class Installation:
    """Everything the soak runs, and the watchers that record what happens."""

    def __init__(self, options: SoakOptions, run_dir: Path) -> None:
        self.o = options
        self.dir = run_dir
        self.logs = run_dir / "logs"
        self.logs.mkdir(parents=True, exist_ok=True)
        self.media = run_dir / "media"
        self.rng = random.Random(options.seed)
        self.pg: Any = None
        self.broker: Broker | None = None
        self.cams: dict[str, MjpegCamera | RtspCamera] = {}
        self.sources: dict[str, str] = {}  # camera key -> URL or file
        self.workers: dict[str, Proc] = {}
        self.ports: dict[str, int] = {}
        self.agents: dict[str, Proc] = {}
        self.notes: list[str] = []
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.health: list[tuple[str, float, bool]] = []
        self.samples: list[dict[str, Any]] = []
        self.rss: list[tuple[str, int, float, int]] = []
        self.loads: list[tuple[float, float]] = []
        self.statuses: list[tuple[str, str, float, float]] = []  # (camera key, state, event time, received)
        self.node_states: list[tuple[str, str, float]] = []
        self.on_broker: set[str] = set()  # person events the observer received
        self.unmasked_seen: list[tuple[str, float]] = []  # (camera key, last seen) of unmasked people on MQTT
        self.threads: list[threading.Thread] = []
        self.observer: Any = None
        self.db_url = ""
        self.job_video = ""

    # -- set-up ----------------------------------------------------------------------------------------------

    def say(self, text: str) -> None:
        if self.o.verbose:
            print(f"[{datetime.now().strftime('%H:%M:%S')}] {text}", flush=True)

    def make_media(self, chaos_s: float) -> None:
        """One video per camera from different scene images; the file camera lasts the whole run."""
        reason = rtsp_unavailable()
        if reason:
            self.notes.append(f"RTSP cameras served over HTTP instead: {reason}")
        per_loop = 12
        for i, cam in enumerate(CAMERAS):
            if cam.kind == "file":
                n = int((chaos_s + 600) / self.o.hold) + 1  # longer than the run: it must not end meanwhile
                images = scene_images(n=n, seed=self.o.seed * 100 + i)
                images = [images[k % len(images)] for k in range(n)]
                path = scene_video(self.media / f"{cam.name}.avi", images, hold=self.o.hold, fps=self.o.fps)
                self.sources[cam.key] = str(path)
                self.job_video = path.name
                continue
            video = scene_video(
                self.media / f"{cam.key.replace(':', '-')}.avi",
                scene_images(n=per_loop, seed=self.o.seed * 100 + i),
                hold=self.o.hold,
                fps=self.o.fps,
            )
            server: MjpegCamera | RtspCamera
            if cam.kind == "rtsp" and not reason:
                server = RtspCamera(video, log=self.logs / f"camera-{cam.key.replace(':', '-')}.log")
            else:
                server = MjpegCamera(video)
            server.start()
            self.cams[cam.key] = server
            self.sources[cam.key] = server.url

    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT / "src"), env.get("PYTHONPATH")) if p)
        env.update(MASKWATCH_ADMIN_TOKEN=ADMIN, MASKWATCH_OFFLINE="1", PYTHONUNBUFFERED="1")
        return env

    def start(self, chaos_s: float) -> None:
        import yaml

        self.say(f"run folder {self.dir}")
        self.make_media(chaos_s)
        self.say("media and cameras ready; starting PostgreSQL and Mosquitto")
        self.pg = _postgres()
        self.db_url = self.pg.create_db()
        users = {"control": CONTROL_PASSWORD, **{node: f"{node}-secret" for node in NODES}}
        self.broker = Broker(self.dir / "broker", users)
        self.broker.start()
        self.start_observer()
        cli = [sys.executable, "-m", "maskwatch.cli"]
        serve_yaml = self.dir / "serve.yaml"
        local = [c for c in CAMERAS if c.owner == "control"]
        serve_yaml.write_text(
            yaml.safe_dump(
                {
                    "model": {"threads": 1},
                    "server": {"journal": True},
                    "engine": {"stats_interval": self.o.stats_interval},
                    "demo": {"enabled": False},
                    "cameras": [{"name": c.name, "url": self.sources[c.key], "target_fps": self.o.fps} for c in local],
                    "alerts": {"rules": SOAK_RULES},
                    "jobs": {"allowed_dirs": [str(self.media)], "max_running": 1},
                },
                sort_keys=False,
            )
        )
        for i, name in enumerate(WORKERS, 1):
            port = free_port()
            self.ports[name] = port
            argv = [
                *cli,
                "serve",
                "--config",
                str(serve_yaml),
                "--port",
                str(port),
                "--data-dir",
                str(self.dir / name),
                "--db",
                self.db_url,
                "--mqtt",
                self.broker.url("control") + "?shared=1",
                "--mqtt-id",
                INGEST_IDS[i - 1],
                "--no-demo",
            ]
            self.workers[name] = Proc(name, argv, self.logs / f"{name}.log", self.env())
        for name in WORKERS:  # one after the other: both migrate the same database at start
            self.workers[name].start()
            self.wait_healthy(name, 240)
            self.say(f"{name} up on port {self.ports[name]}")
        for node in NODES:
            budget = self.o.budget_mb if node == BUDGET_NODE else 256.0
            config = {
                "broker": self.broker.url(node),
                "node": node,
                "cameras": {c.name: self.sources[c.key] for c in CAMERAS if c.owner == node},
                "data_dir": str(self.dir / f"agent-{node}"),
                "journal": True,
                "engine": {
                    "stats_interval": self.o.stats_interval,
                    "camera_defaults": {"realtime": True, "loop": False},
                },
                "status_every": 5.0,
                "outbox_mb": budget,
            }
            path = self.dir / f"agent-{node}.yaml"
            path.write_text(yaml.safe_dump(config, sort_keys=False))
            self.agents[node] = Proc(
                f"agent-{node}", [*cli, "agent", "--config", str(path)], self.logs / f"agent-{node}.log", self.env()
            )
            self.agents[node].start()
        for target, name in ((self._poll_health, "health"), (self._poll_api, "api"), (self._poll_rss, "rss")):
            thread = threading.Thread(target=target, name=f"soak-{name}", daemon=True)
            thread.start()
            self.threads.append(thread)

    def wait_healthy(self, worker: str, timeout: float = 180.0) -> float:
        import httpx

        def up() -> bool:
            if not self.workers[worker].alive:
                raise SoakError(f"{worker} exited (log: {self.workers[worker].log})")
            try:
                return httpx.get(f"http://127.0.0.1:{self.ports[worker]}{API}/healthz", timeout=2).status_code == 200
            except httpx.HTTPError:
                return False

        if not _wait(up, timeout, 0.5):
            raise SoakError(f"{worker} did not answer /healthz within {timeout:g} s (log: {self.workers[worker].log})")
        return time.time()

    # -- watchers ----------------------------------------------------------------------------------------

    def start_observer(self) -> None:
        """What the broker accepted from the nodes (its own persistent session): every camera's source_status
        (engine time), every node status, and every person event (to tell a loss before the broker from one
        after it)."""
        from maskwatch.fleet.publisher import make_client
        from maskwatch.fleet.topics import BrokerURL

        assert self.broker is not None
        client = make_client(BrokerURL.parse(self.broker.url("control")), "soak-observer", clean_session=False)

        def on_connect(c: Any, *_: Any) -> None:
            c.subscribe([("maskwatch/+/+/status", 1), ("maskwatch/+/status", 1), ("maskwatch/+/+/events", 1)])

        def on_message(_c: Any, _u: Any, message: Any) -> None:
            try:
                body = json.loads(message.payload)
            except ValueError:
                return
            parts = message.topic.split("/")
            now = time.time()
            with self.lock:
                if len(parts) == 4 and body.get("type") == "source_status":
                    when = datetime.fromisoformat(body["time"]).timestamp()
                    self.statuses.append((f"{parts[1]}:{parts[2]}", body.get("state", "?"), when, now))
                elif len(parts) == 3 and body.get("state"):
                    self.node_states.append((parts[1], body["state"], now))
                elif len(parts) == 4 and body.get("type") == "track_ended":
                    self.on_broker.add(str(body.get("id")))
                    if body.get("compliant") is False:
                        self.unmasked_seen.append((f"{parts[1]}:{parts[2]}", _epoch(body["last_seen"])))

        client.on_connect = on_connect
        client.on_message = on_message
        client.connect_async("127.0.0.1", self.broker.port, keepalive=10)
        client.loop_start()
        self.observer = client

    def _poll_health(self) -> None:
        import httpx

        with httpx.Client(timeout=2.0) as http:
            while not self.stop.wait(1.0):
                for name in WORKERS:
                    try:
                        ok = http.get(f"http://127.0.0.1:{self.ports[name]}{API}/healthz").status_code == 200
                    except httpx.HTTPError:
                        ok = False
                    with self.lock:
                        self.health.append((name, time.time(), ok))

    def _poll_api(self) -> None:
        """Every 2 s per worker: /readyz, local cameras' states, the fleet view (node and camera states)."""
        import httpx

        headers = {"Authorization": f"Bearer {ADMIN}"}
        with httpx.Client(timeout=3.0, headers=headers) as http, open(self.dir / "api-samples.jsonl", "a") as out:
            while not self.stop.wait(2.0):
                for name in WORKERS:
                    base = f"http://127.0.0.1:{self.ports[name]}{API}"
                    sample: dict[str, Any] = {"worker": name, "t": time.time()}
                    try:
                        ready = http.get(f"{base}/readyz")
                        sample["readyz"], sample["readyz_at"] = ready.status_code, time.time()
                        if ready.headers.get("content-type", "").startswith("application/json"):
                            sample["readyz_broker"] = ready.json().get("checks", {}).get("broker")
                        cams = http.get(f"{base}/cameras")
                        if cams.status_code == 200:
                            sample["cameras"] = {c["name"]: c.get("state") for c in cams.json()}
                        fleet = http.get(f"{base}/fleet", params={"window_s": 3600})
                        if fleet.status_code == 200:
                            view = fleet.json()
                            sample["nodes"] = {
                                n["name"]: {
                                    "state": n["state"],
                                    "outbox": n.get("outbox"),
                                    "cameras": {c["camera"]: c["state"] for c in n["cameras"]},
                                }
                                for n in view["nodes"]
                            }
                    except (httpx.HTTPError, ValueError, KeyError) as exc:
                        sample["error"] = type(exc).__name__
                    with self.lock:
                        self.samples.append(sample)
                    out.write(json.dumps(sample) + "\n")
                    out.flush()

    def pids(self) -> dict[str, int]:
        out = {p.name: p.pid for p in (*self.workers.values(), *self.agents.values()) if p.pid}
        if self.broker and self.broker.proc.pid:
            out["mosquitto"] = self.broker.proc.pid
        if self.pg is not None and (pid := self.pg.postmaster_pid()):
            out["postgres"] = pid
        for key, cam in self.cams.items():
            if isinstance(cam, RtspCamera) and cam.pid:
                out[f"camera-{key}"] = cam.pid
        return out

    def _poll_rss(self) -> None:
        while not self.stop.wait(5.0):
            now = time.time()
            for name, pid in self.pids().items():
                kb = _rss_kb(pid)
                if kb is not None:
                    with self.lock:
                        self.rss.append((name, pid, now, kb))
            with contextlib.suppress(OSError, ValueError):
                self.loads.append((now, float(Path("/proc/loadavg").read_text().split()[0])))

    # -- fault primitives ----------------------------------------------------------------------------------

    def restart_worker(self, name: str) -> float:
        self.workers[name].start()
        return self.wait_healthy(name, 240)

    def node_journal_max(self, node: str) -> int:
        path = self.dir / f"agent-{node}" / "outbox.db"
        with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10)) as db:
            return int(db.execute("SELECT COALESCE(MAX(n), 0) FROM journal").fetchone()[0])

    def journal_marks(self) -> dict[str, int]:
        """Each node's journal position now: where an agent event (which carries no time there) was produced."""
        marks = {}
        for node in NODES:
            with contextlib.suppress(sqlite3.Error):
                marks[node] = self.node_journal_max(node)
        return marks

    def node_counters(self, node: str) -> dict[str, int]:
        path = self.dir / f"agent-{node}" / "outbox.db"
        try:
            with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10)) as db:
                return {k: int(v) for k, v in db.execute("SELECT name, value FROM counters")}
        except sqlite3.Error:
            return {}

    def start_job(self, worker: str) -> str | None:
        import httpx

        try:
            r = httpx.post(
                f"http://127.0.0.1:{self.ports[worker]}{API}/jobs",
                json={"path": self.job_video},
                headers={"Authorization": f"Bearer {ADMIN}"},
                timeout=10,
            )
        except httpx.HTTPError as exc:
            self.notes.append(f"job not started on {worker}: {exc}")
            return None
        if r.status_code >= 300:
            self.notes.append(f"job not started on {worker}: {r.status_code} {r.text[:200]}")
            return None
        return str(r.json()["id"])

    def job_state(self, worker: str, job_id: str) -> str | None:
        """A job's state as ``worker`` tells it (None when it cannot be asked)."""
        import httpx

        try:
            r = httpx.get(
                f"http://127.0.0.1:{self.ports[worker]}{API}/jobs/{job_id}",
                headers={"Authorization": f"Bearer {ADMIN}"},
                timeout=10,
            )
        except httpx.HTTPError:
            return None
        return str(r.json().get("state")) if r.status_code == 200 else None

    def save_observations(self, path: Path) -> None:
        """What the watchers saw, for a second look at a run: camera and node states on MQTT, the person events
        the broker accepted, /healthz failures, RSS and load samples."""
        with self.lock:
            data = {
                "statuses": self.statuses,
                "node_states": self.node_states,
                "person_events_on_broker": sorted(self.on_broker),
                "unmasked_on_broker": self.unmasked_seen,
                "healthz_failures": [h for h in self.health if not h[2]],
                "healthz_polls": len(self.health),
                "rss_kb": self.rss,
                "load_1min": self.loads,
            }
        path.write_text(json.dumps(data))

    def close(self) -> dict[str, int | None]:
        """Stop everything; the exit status of each maskwatch process on SIGTERM."""
        codes: dict[str, int | None] = {}
        self.stop.set()
        for proc in (*self.agents.values(), *self.workers.values()):
            if proc.alive:
                codes[proc.name] = proc.terminate(30)
        for thread in self.threads:
            thread.join(5)
        if self.observer is not None:
            with contextlib.suppress(Exception):
                self.observer.disconnect()
                self.observer.loop_stop()
        for cam in self.cams.values():
            with contextlib.suppress(Exception):
                cam.stop()
        if self.broker is not None:
            with contextlib.suppress(Exception):
                self.broker.proc.terminate(10)
        if self.pg is not None:
            with contextlib.suppress(Exception):
                shutil.copy(self.pg.log, self.logs / "postgresql.log")
            self.pg.close()
        return codes

    def leftovers(self) -> list[str]:
        """Processes still running whose command line names this run (or its PostgreSQL folder)."""
        marks = [str(self.dir)] + ([str(self.pg.root)] if self.pg is not None else [])
        ours, pid = set(), os.getpid()  # this process and those that started it (a shell, timeout, pytest)
        while pid > 1 and pid not in ours:
            ours.add(pid)
            try:
                pid = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                break
        found = []
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit() or int(entry.name) in ours:
                continue
            try:
                cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue
            if any(mark in cmdline for mark in marks):
                found.append(f"{entry.name}: {cmdline[:160]}")
        return found


# -- faults ------------------------------------------------------------------------------------------------


def _camera_targets(text: str) -> list[str]:
    keys = [c.key for c in CAMERAS if c.kind != "file"]
    targets = [t.replace("/", ":") for t in text.split("+") if t]
    unknown = [t for t in targets if t not in keys]
    if unknown:
        raise SoakError(f"camera_stop: unknown camera(s) {unknown} (stream cameras: {', '.join(keys)})")
    return targets


def parse_fault(spec: str) -> tuple[str, str]:
    kind, _, target = spec.partition(":")
    if kind not in FAULT_KINDS:
        raise SoakError(f"unknown fault {kind!r} (known: {', '.join(FAULT_KINDS)})")
    if kind == "camera_stop" and target:
        _camera_targets(target)
    if kind in ("worker_kill", "worker_stop") and target and target not in WORKERS:
        raise SoakError(f"{kind}: unknown worker {target!r} ({', '.join(WORKERS)})")
    if kind == "pg_kill" and target and target not in WORKERS:
        raise SoakError(f"pg_kill: unknown worker {target!r} ({', '.join(WORKERS)})")
    if kind == "broker_kill" and target not in ("", "stop"):
        raise SoakError("broker_kill: the target is empty (SIGKILL) or 'stop' (SIGTERM)")
    if kind == "agent_kill" and target and target not in NODES:
        raise SoakError(f"agent_kill: unknown node {target!r} ({', '.join(NODES)})")
    return kind, target


class Chaos:
    def __init__(self, inst: Installation) -> None:
        self.i = inst
        self.o = inst.o
        self.records: list[FaultRecord] = []
        self.kill_marks: dict[str, list[int]] = defaultdict(list)  # node -> journal n at each SIGKILL
        self.jobs: list[dict[str, Any]] = []
        self.camera_outages: list[dict[str, Any]] = []
        self.broker_down: list[tuple[float, float]] = []
        self.budget_counters_at_start: dict[str, int] = {}

    def pick_target(self, kind: str) -> str:
        rng = self.i.rng
        if kind == "camera_stop":
            return rng.choice([c.key for c in CAMERAS if c.kind != "file"])
        if kind in ("worker_kill", "worker_stop"):
            return rng.choice(WORKERS)
        if kind == "pg_kill":
            return rng.choice(["", *WORKERS])
        if kind == "agent_kill":
            return rng.choice(NODES)
        if kind == "outbox_budget":
            return BUDGET_NODE
        if kind == "broker_kill":
            return rng.choice(["", "stop"])
        return ""

    def nominal_s(self, kind: str) -> float:
        o = self.o
        return {
            "camera_stop": o.camera_down_s,
            "pg_kill": o.pg_down_s + 30,
            "broker_kill": o.broker_down_s,
            "worker_kill": 45,
            "agent_kill": 10,
            "worker_stop": o.worker_stop_s,
            "broker_kill_workers_down": 60,
            "outbox_budget": o.budget_outage_s,
        }[kind]

    def run(self, t0: float, chaos_s: float) -> None:
        self.budget_counters_at_start = self.i.node_counters(BUDGET_NODE)
        fixed = [parse_fault(s) for s in self.o.faults] if self.o.faults is not None else None
        cycle: list[str] = []
        next_at = t0 + self.o.first_fault_s  # people seen on every camera first
        index = 0
        while True:
            if fixed is not None:
                if index >= len(fixed):
                    break
                kind, target = fixed[index]
                target = target or self.pick_target(kind)
            else:
                if not cycle:
                    cycle = list(FAULT_KINDS)
                    self.i.rng.shuffle(cycle)
                kind = cycle.pop()
                target = self.pick_target(kind)
                if next_at + self.nominal_s(kind) > t0 + chaos_s:
                    break
            index += 1
            time.sleep(max(0.0, next_at - time.time()))
            record = FaultRecord(kind, target, time.time())
            record.marks["start"] = self.i.journal_marks()
            self.i.say(f"fault {index}: {kind} {target}".rstrip())
            getattr(self, kind)(record, target)
            record.end = time.time()
            record.marks["end"] = self.i.journal_marks()
            self.records.append(record)
            self.i.say(f"fault {index} over after {record.end - record.start:.0f} s")
            with open(self.i.dir / "faults.jsonl", "a") as out:
                out.write(json.dumps(asdict(record)) + "\n")
            next_at = max(record.start + self.i.rng.uniform(*self.o.gap), record.end + self.o.quiet_s)
        if fixed is None:
            time.sleep(max(0.0, t0 + chaos_s - time.time()))

    # each fault blocks until it is over

    def camera_stop(self, r: FaultRecord, target: str) -> None:
        keys = _camera_targets(target)
        stopped = {}
        for key in keys:
            self.i.cams[key].stop()
            stopped[key] = time.time()
        time.sleep(self.o.camera_down_s)
        for key in keys:
            self.i.cams[key].start()
            back = time.time()
            self.camera_outages.append({"camera": key, "stopped": stopped[key], "back": back})
        r.touches = list(keys)
        r.detail = {"down_s": self.o.camera_down_s}

    def pg_kill(self, r: FaultRecord, target: str) -> None:
        self.i.pg.kill()
        killed_at = None
        if target:
            time.sleep(min(10.0, self.o.pg_down_s / 2))
            self.i.workers[target].kill()
            killed_at = time.time()
            time.sleep(max(0.0, self.o.pg_down_s - min(10.0, self.o.pg_down_s / 2)))
        else:
            time.sleep(self.o.pg_down_s)
        self.i.pg.start()
        r.detail = {"down_s": self.o.pg_down_s}
        if target and killed_at is not None:
            up = self.i.restart_worker(target)
            r.down.append((target, killed_at, up))
            r.detail["worker_killed"] = target
        r.touches = [c.key for c in CAMERAS] + list(NODES)

    def broker_kill(self, r: FaultRecord, target: str) -> None:
        """SIGKILL (a crash: what was not autosaved is gone), or ``broker_kill:stop``: SIGTERM (a restart)."""
        assert self.i.broker is not None
        if target == "stop":
            self.i.broker.proc.terminate(15)
        else:
            self.i.broker.kill()
        down = time.time()
        time.sleep(self.o.broker_down_s)
        self.broker_down.append((down, time.time()))  # before start(): it may take clients before it returns
        self.i.broker.start()
        r.touches = [c.key for c in CAMERAS if c.node] + list(NODES) + list(INGEST_IDS)  # every worker lost it

    def worker_kill(self, r: FaultRecord, target: str) -> None:
        other = next(w for w in WORKERS if w != target)
        job = self.i.start_job(other) if self.i.workers[other].alive else None
        if job:
            self.jobs.append({"job": job, "worker": other, "restarted": target, "at": time.time()})
            time.sleep(2.0)  # running, not just queued
        self.i.workers[target].kill()
        killed = time.time()
        time.sleep(3.0)
        up = self.i.restart_worker(target)
        r.down.append((target, killed, up))
        if job:  # judged now: the restarted worker's first lease round ran before it answered /healthz. (Its
            # final state may be `interrupted` for another reason: a later fault that kills its own worker
            # while a loaded machine still runs it; that is the job's own worker stopping, not this restart.)
            self.jobs[-1]["after_restart"] = self.i.job_state(other, job)
        r.detail = {"job_on_other_worker": job}
        r.touches = [c.key for c in CAMERAS] + list(NODES)

    def agent_kill(self, r: FaultRecord, target: str) -> None:
        self.i.agents[target].kill()
        self.kill_marks[target].append(self.i.node_journal_max(target))
        time.sleep(3.0)
        self.i.agents[target].start()
        r.touches = [c.key for c in CAMERAS if c.node == target] + [target]

    def worker_stop(self, r: FaultRecord, target: str) -> None:
        self.i.workers[target].send(signal.SIGSTOP)
        stopped = time.time()
        time.sleep(self.o.worker_stop_s)
        self.i.workers[target].send(signal.SIGCONT)
        r.down.append((target, stopped, time.time() + 5.0))
        r.touches = [c.key for c in CAMERAS] + list(NODES)

    def broker_kill_workers_down(self, r: FaultRecord, _target: str) -> None:
        assert self.i.broker is not None
        killed = time.time()
        for name in WORKERS:
            self.i.workers[name].kill()
        time.sleep(10.0)  # the agents publish meanwhile: only the broker holds it
        self.i.broker.kill()
        down = time.time()
        time.sleep(3.0)
        self.broker_down.append((down, time.time()))
        self.i.broker.start()
        time.sleep(2.0)
        for name in WORKERS:
            up = self.i.restart_worker(name)
            r.down.append((name, killed, up))
        r.touches = [c.key for c in CAMERAS] + list(NODES) + list(INGEST_IDS)

    def outbox_budget(self, r: FaultRecord, target: str) -> None:
        assert self.i.broker is not None
        before = self.i.node_counters(target)
        self.i.broker.kill()
        down = time.time()
        time.sleep(self.o.budget_outage_s)
        after = self.i.node_counters(target)
        self.broker_down.append((down, time.time()))
        self.i.broker.start()
        r.detail = {"node": target, "budget_mb": self.o.budget_mb, "counters_before": before, "counters_after": after}
        r.touches = [c.key for c in CAMERAS if c.node] + list(NODES) + list(INGEST_IDS)  # a broker outage too


# -- reading what happened ----------------------------------------------------------------------------------


def _epoch(text: str) -> float:
    return datetime.fromisoformat(text).timestamp()


def read_service_journals(worker_dir: Path, limits: dict[str, int] | None = None) -> list[dict[str, Any]]:
    """Every event in the ``journal*.jsonl`` files under a worker's data dir (the first ``limits[path]`` lines
    of each, when given)."""
    events = []
    for path in sorted(worker_dir.rglob("journal*.jsonl")):
        limit = None if limits is None else limits.get(str(path), 0)
        with open(path, encoding="utf-8") as f:
            for i, line in enumerate(f):
                if limit is not None and i >= limit:
                    break
                try:
                    events.append(json.loads(line))
                except ValueError:
                    continue  # a line cut by a kill
    return events


def journal_sizes(worker_dir: Path) -> dict[str, int]:
    sizes = {}
    for path in worker_dir.rglob("journal*.jsonl"):
        with open(path, "rb") as f:
            sizes[str(path)] = sum(1 for _ in f)
    return sizes


def read_node_journal(path: Path, upto: int | None = None) -> list[tuple[int, str, str, str]]:
    """(n, type, id, camera key) of every journaled event of a node's outbox."""
    if not path.exists():
        return []
    with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10)) as db:
        rows = db.execute("SELECT n, key, topic FROM journal WHERE n <= ? ORDER BY n", (upto or 1 << 62,)).fetchall()
    out = []
    for n, key, topic in rows:
        kind, _, event_id = key.partition(":")
        parts = topic.split("/")
        out.append((int(n), kind, event_id, f"{parts[1]}:{parts[2]}" if len(parts) >= 4 else topic))
    return out


def node_dropped_ids(path: Path) -> set[str] | None:
    """The person ids a node says it dropped, when its outbox keeps them (its ``dropped`` table: one row per
    message, with ``event_id`` and ``type``); None when it keeps only counts (older outboxes)."""
    if not path.exists():
        return None
    with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10)) as db:
        tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        if "dropped" not in tables:
            return None
        columns = {r[1] for r in db.execute("PRAGMA table_info(dropped)")}
        if {"event_id", "type"} <= columns:
            rows = db.execute("SELECT event_id FROM dropped WHERE type = 'track_ended' AND event_id IS NOT NULL")
            return {str(event_id) for (event_id,) in rows}
        if "key" not in columns:
            return None
        return {
            str(k).partition(":")[2]
            for (k,) in db.execute("SELECT key FROM dropped")
            if str(k).startswith("track_ended:")
        }


def _pg(url: str) -> Any:
    import psycopg

    return psycopg.connect(url, autocommit=True, connect_timeout=10)


def read_stored(url: str) -> dict[str, Any]:
    with _pg(url) as conn:
        people = conn.execute(
            "SELECT event_id, camera, (data->>'first_frame')::int, (data->>'last_frame')::int, compliant, ts "
            "FROM events"
        ).fetchall()
        ingested = [r[0] for r in conn.execute("SELECT event_id FROM ingested")]
        alerts = conn.execute(
            "SELECT id, rule_name, kind, camera, state, started_ts, resolved_ts FROM alerts ORDER BY id"
        ).fetchall()
        jobs = dict(conn.execute("SELECT id, state FROM jobs").fetchall())
        dead: dict[str, list[str]] = {}
        for (table,) in conn.execute(
            "SELECT table_name FROM information_schema.tables "
            "WHERE table_schema = 'public' AND table_name LIKE '%dead%'"
        ):
            dead[table] = [r[0] for r in conn.execute(f'SELECT row_to_json(t)::text FROM "{table}" t LIMIT 1000')]
    return {"people": people, "ingested": ingested, "alerts": alerts, "jobs": jobs, "dead": dead}


# -- the checks ---------------------------------------------------------------------------------------------


def _overlap(a: list[tuple[float, float]], b: list[tuple[float, float]]) -> float:
    total = 0.0
    for s1, e1 in a:
        for s2, e2 in b:
            total += max(0.0, min(e1, e2) - max(s1, s2))
    return total


def _in_windows(t: float, windows: list[tuple[float, float]]) -> bool:
    return any(s <= t <= e for s, e in windows)


class Analysis:
    def __init__(
        self,
        inst: Installation,
        chaos: Chaos,
        cutoff: dict[str, Any],
        stored: dict[str, Any],
        shutdown: dict[str, int | None],
        final_samples: dict[str, dict[str, Any]],
        poison: dict[str, str],
    ) -> None:
        self.i, self.c, self.o = inst, chaos, inst.o
        self.cutoff, self.stored, self.shutdown, self.final, self.poison = (
            cutoff,
            stored,
            shutdown,
            final_samples,
            poison,
        )
        self.cameras: dict[str, dict[str, Any]] = {c.key: {"kind": c.kind, "owner": c.owner} for c in CAMERAS}
        self.checks: list[Check] = []
        # produced at the cut-off (what must be stored) and in all (what may be)
        self.produced: dict[str, set[str]] = defaultdict(set)
        self.produced_all: dict[str, set[str]] = defaultdict(set)
        self.by_worker: dict[str, Counter[str]] = defaultdict(Counter)
        self.local_stats: dict[str, dict[str, list[tuple[float, float]]]] = defaultdict(lambda: defaultdict(list))
        self.local_status: list[tuple[str, str, str, float]] = []  # (worker, camera, state, time)
        for worker in WORKERS:
            folder = inst.dir / worker
            for limited, target in ((True, self.produced), (False, self.produced_all)):
                for e in read_service_journals(folder, cutoff["local"][worker] if limited else None):
                    if e.get("type") == "track_ended":
                        target[e["source"]].add(e["id"])
                        if not limited:
                            self.by_worker[e["source"]][worker] += 1
            for e in read_service_journals(folder):
                if e.get("type") == "stats" and e.get("frames_analysed", 0) > 0:
                    self.local_stats[e["source"]][worker].append((_epoch(e["start"]), _epoch(e["end"])))
                elif e.get("type") == "source_status":
                    self.local_status.append((worker, e["source"], e["state"], _epoch(e["time"])))
        self.node_events: dict[str, list[tuple[int, str, str, str]]] = {}
        for node in NODES:
            path = inst.dir / f"agent-{node}" / "outbox.db"
            for limited, target in ((True, self.produced), (False, self.produced_all)):
                rows = read_node_journal(path, cutoff["nodes"][node] if limited else None)
                for _n, kind, event_id, camera in rows:
                    if kind == "track_ended":
                        target[camera].add(event_id)
            self.node_events[node] = read_node_journal(path)
        self.node_n = {eid: n for events in self.node_events.values() for n, _k, eid, _c in events}
        self.stored_by_camera: dict[str, list[str]] = defaultdict(list)
        self.frames: dict[str, tuple[int | None, int | None]] = {}
        # camera -> when each unmasked person left: stored, journaled or seen on MQTT (the alert rule's cause)
        self.unmasked: dict[str, list[float]] = defaultdict(list)
        for event_id, camera, first, last, compliant, ts in stored["people"]:
            self.stored_by_camera[camera].append(event_id)
            self.frames[event_id] = (first, last)
            if not compliant:
                self.unmasked[camera].append(ts)
        self.stored_ids = {event_id for event_id, *_ in stored["people"]}
        self.local_times: dict[str, float] = {}  # event id -> time, control room's people
        for worker in WORKERS:
            for e in read_service_journals(inst.dir / worker):
                if e.get("type") == "track_ended":
                    self.local_times[e["id"]] = _epoch(e["time"])
                    if e.get("compliant") is False:
                        self.unmasked[e["source"]].append(_epoch(e["last_seen"]))
        with inst.lock:
            for camera, t in inst.unmasked_seen:
                self.unmasked[camera].append(t)
        self.unmasked = {k: sorted(set(v)) for k, v in self.unmasked.items()}

    def add(self, name: str, status: Status, summary: str, details: list[str] | None = None, **numbers: Any) -> None:
        self.checks.append(Check(name, status, summary, details or [], numbers))

    def rel(self, t: float) -> str:
        return f"t+{t - self.c_t0:.0f}s"

    def run(self, t0: float) -> list[Check]:
        self.c_t0 = t0
        for name in CHECKS:
            getattr(self, f"check_{name}")()
        return self.checks

    # people

    def dropped(self) -> tuple[set[str] | None, dict[str, int]]:
        path = self.i.dir / f"agent-{BUDGET_NODE}" / "outbox.db"
        return node_dropped_ids(path), self.i.node_counters(BUDGET_NODE)

    def check_people_seen(self) -> None:
        empty = [key for key in self.cameras if not self.produced[key]]
        for key in self.cameras:
            self.cameras[key]["produced"] = len(self.produced[key])
        if empty:
            self.add(
                "people_seen",
                "FAIL",
                f"no person reported on {', '.join(empty)}: the other checks say little about them",
                numbers={k: len(v) for k, v in self.produced.items()},
            )
        else:
            self.add("people_seen", "PASS", f"every camera reported people ({sum(map(len, self.produced.values()))})")

    def check_people_exactly_once(self) -> None:
        dropped_ids, _counters = self.dropped()
        details, bad = [], 0
        poison = set(self.poison.values())
        for cam in CAMERAS:
            produced, everything = self.produced[cam.key], self.produced_all[cam.key]
            stored = self.stored_by_camera.get(cam.key, [])
            stored_set = set(stored)
            missing = produced - stored_set
            explained = missing & dropped_ids if (dropped_ids is not None and cam.node == BUDGET_NODE) else set()
            extra = stored_set - everything - poison
            duplicates = len(stored) - len(stored_set)
            info = self.cameras[cam.key]
            info.update(
                stored=len(stored_set),
                missing=len(missing),
                missing_explained_by_budget=len(explained),
                extra=len(extra),
                duplicates=duplicates,
            )
            if cam.owner == "control":
                info["reported_by_worker"] = dict(self.by_worker[cam.key])
            unexplained = missing - explained
            by_fault = Counter(self.attribute(cam, event_id) for event_id in unexplained)
            info["lost_by_fault"] = dict(by_fault)
            if cam.node is not None:
                with self.i.lock:
                    info["lost_after_the_broker_accepted_them"] = len(unexplained & self.i.on_broker)
            if unexplained or extra or duplicates:
                bad += 1
                details.append(
                    f"{cam.key}: {len(produced)} reported, {len(stored_set)} stored, {len(unexplained)} lost"
                    f"{f' ({len(explained)} dropped by the budget, reported)' if explained else ''}, "
                    f"{len(extra)} stored that no engine reported, {duplicates} duplicates"
                    + (f"; lost by fault {dict(by_fault)}" if by_fault else "")
                    + (
                        f"; {info['lost_after_the_broker_accepted_them']} of them had reached the broker"
                        if cam.node is not None and unexplained
                        else ""
                    )
                )
        lost = sum(self.cameras[k]["missing"] - self.cameras[k]["missing_explained_by_budget"] for k in self.cameras)
        if bad:
            total: Counter[str] = Counter()
            for info in self.cameras.values():
                total.update(info.get("lost_by_fault", {}))
            self.add(
                "people_exactly_once",
                "FAIL",
                f"{bad} camera(s) not exactly once; {lost} person events lost",
                details,
                lost=lost,
                lost_by_fault=dict(total),
            )
        else:
            self.add("people_exactly_once", "PASS", "every reported person stored once (budget drops excepted)")

    def attribute(self, cam: CameraSpec, event_id: str) -> str:
        """Which fault a lost person event belongs to: the last one started before it was reported (by time for
        the control room's cameras, by journal position for a node's), during it or after its end."""
        if cam.node is None:
            t = self.local_times.get(event_id)
            if t is None:
                return "?"
            coming = [(k, r) for k, r in enumerate(self.c.records, 1) if r.start - 10.0 <= t < r.start]
            if coming:  # reported in the 10 s before a fault: most likely still on its way when it hit
                k, r = coming[0]
                return f"{k}:{r.kind}{':' + r.target if r.target else ''} (just before)"
            started = [(k, r) for k, r in enumerate(self.c.records, 1) if r.start <= t]
            if not started:
                return "before any fault"
            k, r = started[-1]
            return f"{k}:{r.kind}{':' + r.target if r.target else ''} ({'during' if t <= r.end else 'after'})"
        n = self.node_n.get(event_id)
        if n is None:
            return "?"
        started = [
            (k, r) for k, r in enumerate(self.c.records, 1) if r.marks.get("start", {}).get(cam.node, 1 << 62) < n
        ]
        if not started:
            return "before any fault"
        k, r = started[-1]
        during = n <= r.marks.get("end", {}).get(cam.node, 0)
        return f"{k}:{r.kind}{':' + r.target if r.target else ''} ({'during' if during else 'after'})"

    def check_budget_drops_reported(self) -> None:
        """The person events the budget node lost before they reached the broker (the observer never saw them)
        are what its outbox dropped: they must be what it reports, by id when it keeps ids (a ``dropped`` table),
        else by a count of person events (``dropped_people``); ``dropped_events`` (today) counts messages of
        every kind (person events, track starts, statuses, alerts) and cannot match exactly."""
        dropped_ids, counters = self.dropped()
        node_cams = [c.key for c in CAMERAS if c.node == BUDGET_NODE]
        missing = set().union(*(self.produced[k] - set(self.stored_by_camera.get(k, [])) for k in node_cams))
        with self.i.lock:
            before_broker = missing - self.i.on_broker
        reported = [s.get("nodes", {}).get(BUDGET_NODE, {}).get("outbox") for s in self.final.values()]
        numbers: dict[str, Any] = {
            "missing_person_events": len(missing),
            "lost_before_the_broker": len(before_broker),
            "outbox_counters": counters,
            "outbox_counters_at_chaos_start": self.c.budget_counters_at_start,
            "fleet_view": [r for r in reported if r][:1],
        }
        if not counters.get("dropped_events") and not before_broker:
            stats = f" (only {counters['dropped_stats']} stats messages)" if counters.get("dropped_stats") else ""
            self.add(
                "budget_drops_reported",
                "N/A",
                f"{BUDGET_NODE}'s outbox budget dropped no person event{stats}: lower --budget-mb to test it",
                **numbers,
            )
            return
        if dropped_ids is not None:
            # With end-to-end acknowledgement a message may reach the broker and still be lost (never stored,
            # so never acknowledged, then dropped by the budget): what is missing must be exactly what the node
            # says it dropped (among the events made before the checks' cutoff), and nothing dropped was stored.
            produced = set().union(*(self.produced[k] for k in node_cams))
            reported = dropped_ids & produced
            stored = {i for k in node_cams for i in self.stored_by_camera.get(k, [])}
            ok = reported == missing and not dropped_ids & stored
            numbers["reported_dropped_after_cutoff"] = len(dropped_ids - produced)
            self.add(
                "budget_drops_reported",
                "PASS" if ok else "FAIL",
                f"{BUDGET_NODE}: {len(reported)} person events reported dropped (by id), {len(missing)} never "
                f"stored ({len(before_broker)} of them never reached the broker), "
                f"{len(dropped_ids & stored)} reported dropped yet stored",
                sorted((missing ^ reported) | (dropped_ids & stored))[:20],
                **numbers,
            )
            return
        person_counter = next((k for k in ("dropped_people", "dropped_track_ended") if k in counters), None)
        ok = person_counter is not None and counters[person_counter] == len(before_broker)
        self.add(
            "budget_drops_reported",
            "PASS" if ok else "FAIL",
            f"{BUDGET_NODE}: {len(before_broker)} person events lost before reaching the broker; its outbox reports "
            + ", ".join(f"{k}={v}" for k, v in sorted(counters.items())),
            []
            if ok
            else [
                "the node does not say which person events it dropped: no ids, and dropped_events counts messages "
                "of every kind (person events, track starts and changes, statuses, alerts)"
            ],
            **numbers,
        )

    def check_camera_exclusive(self) -> None:
        details = []
        for cam in CAMERAS:
            if cam.owner != "control":
                continue
            per_worker = self.local_stats.get(cam.key, {})
            both = _overlap(per_worker.get(WORKERS[0], []), per_worker.get(WORKERS[1], []))
            self.cameras[cam.key]["analysed_by_two_workers_s"] = round(both, 1)
            if both > 2 * self.o.stats_interval:
                people = dict(self.by_worker[cam.key])
                details.append(
                    f"{cam.key}: analysed by {' and '.join(WORKERS)} at once for {both:.0f} s; "
                    f"people reported per worker {people}"
                )
        if details:
            self.add(
                "camera_exclusive",
                "FAIL",
                "local cameras run on every worker (each person stored once per worker)",
                details,
            )
        else:
            self.add("camera_exclusive", "PASS", "each local camera analysed by one worker at a time")

    def states(self, key: str) -> list[tuple[str, float, str]]:
        """(state, engine time, who) of a camera up to the final look (before the processes are stopped): the
        local journals, or the agents' published statuses."""
        end = self.cutoff["final_time"]
        if any(c.key == key and c.owner == "control" for c in CAMERAS):
            found = [(s, t, w) for w, cam, s, t in self.local_status if cam == key and t <= end]
        else:
            with self.i.lock:
                found = [(s, t, "agent") for cam, s, t, _ in self.i.statuses if cam == key and t <= end]
        return sorted(found, key=lambda x: x[1])

    def check_camera_recovery(self) -> None:
        if not self.c.camera_outages:
            self.add("camera_recovery", "N/A", "no camera was stopped")
            return
        details, bad = [], 0
        rows = []
        for outage in self.c.camera_outages:
            key, back = outage["camera"], outage["back"]
            states = self.states(key)
            during = sorted({s for s, t, _ in states if outage["stopped"] <= t <= back})
            live = [t for s, t, _ in states if s == "live" and t >= back - 1.0]
            delay = (live[0] - back) if live else None
            rows.append(
                {
                    "camera": key,
                    "stopped": self.rel(outage["stopped"]),
                    "back": self.rel(back),
                    "states_while_down": during,
                    "live_after_s": None if delay is None else round(delay, 1),
                }
            )
            if delay is None or delay > self.o.recovery_s:
                bad += 1
                last = states[-1][0] if states else "?"
                details.append(
                    f"{key}: source back at {self.rel(back)}, "
                    + ("never live again" if delay is None else f"live after {delay:.0f} s")
                    + f" (states while down: {during}; last state {last})"
                )
        status: Status = "FAIL" if bad else "PASS"
        self.add(
            "camera_recovery",
            status,
            f"{len(rows) - bad} of {len(rows)} camera outages live again within "
            f"{self.o.recovery_s:g} s of the source returning",
            details,
            outages=rows,
        )

    def check_no_camera_failed(self) -> None:
        details = []
        stuck = ("failed", "lost", "reconnecting", "connecting")
        for cam in CAMERAS:
            states = self.states(cam.key)
            if cam.owner == "control":  # per worker: none stuck, one live (the others may have handed it over)
                last = {
                    w: [s for s, _, who in states if who == w][-1] for w in WORKERS if any(x[2] == w for x in states)
                }
                details += [f"{cam.key}: last state on {w}'s engine is {s}" for w, s in last.items() if s in stuck]
                if "live" not in last.values():
                    details.append(f"{cam.key}: live on no worker ({last})")
            elif states and states[-1][0] not in ("live", "ended" if cam.kind == "file" else "live"):
                details.append(f"{cam.key}: last published state {states[-1][0]}")
            self.cameras[cam.key]["final_state"] = states[-1][0] if states else None
        for worker, sample in self.final.items():
            for name, state in (sample.get("cameras") or {}).items():
                if state in ("failed", "lost", "reconnecting"):
                    details.append(f"{name}: {worker}'s API says {state}")
            for view in (sample.get("nodes") or {}).values():
                for camera, state in view.get("cameras", {}).items():
                    if state in ("failed", "lost") and camera in self.cameras:  # (not the poison messages' camera)
                        details.append(f"{camera}: {worker}'s fleet view says {state} (node {view.get('state')})")
        if details:
            self.add("no_camera_failed", "FAIL", f"{len(details)} camera view(s) not live at the end", details)
        else:
            self.add(
                "no_camera_failed", "PASS", "every camera live at the end, in the engines and in every worker's API"
            )

    # alerts

    def cause_present(self, kind: str, camera: str) -> bool:
        if kind == "node_offline":
            with self.i.lock:
                mine = [s for n, s, _ in self.i.node_states if n == camera]
            return bool(mine) and mine[-1] != "online"
        if kind == "camera_offline":
            states = self.states(camera)
            return bool(states) and states[-1][0] not in ("live",)
        if kind == "unmasked_person":  # an unmasked person seen within the rule's window (+ a little slack)
            return any(t >= self.cutoff["final_time"] - UNMASKED_WINDOW_S - 5 for t in self.unmasked.get(camera, []))
        return False

    def premature(self, alert: Any) -> bool:
        """An unmasked_person alert resolved while its known cause was still there: an unmasked person on its
        camera left less than the rule's window (minus 5 s of slack for the clocks) before the resolution, and
        at least EVENT_LATENCY_S before it (someone who left later could not be known: a resolution 0.1 s
        after a person left, whose event came 2 s later, is the pipeline's latency, not a flapping rule)."""
        resolved = alert[6]
        if resolved is None:
            return False
        window = (resolved - UNMASKED_WINDOW_S + 5, resolved - EVENT_LATENCY_S)
        return any(window[0] <= t <= window[1] for t in self.unmasked.get(alert[3], []))

    def check_alerts_resolved(self) -> None:
        firing = [a for a in self.stored["alerts"] if a[4] == "firing"]
        recent = self.cutoff["final_time"] - UNMASKED_WINDOW_S - 10  # an unmasked_person alert fires for its window
        # the soak's outbox_dropped rule holds 20 s after the node's last drop
        windowed = ("unmasked_person", "outbox_dropped")
        stale = [
            a for a in firing if not self.cause_present(a[2], a[3]) and not (a[2] in windowed and a[5] >= recent)
        ]
        details = [f"alert {a[0]} {a[1]!r} on {a[3]}: firing since {self.rel(a[5])}, cause gone" for a in stale]
        details += [f"alert {a[0]} {a[1]!r} on {a[3]}: firing, cause still present" for a in firing if a not in stale]
        n = len(self.stored["alerts"])
        self.add(
            "alerts_resolved",
            "FAIL" if stale else "PASS",
            f"{n} alert(s) fired, {len(firing)} still firing at the end ({len(stale)} whose cause is gone)",
            details,
            alerts=n,
            firing=len(firing),
        )

    def check_alerts_not_duplicated(self) -> None:
        """Per rule and camera, a new alert after one resolved needs a new cause: a fault that touched the
        camera (or node) since the previous one fired, or, for unmasked_person, a previous one that resolved
        when no unmasked person had been seen for its window. Otherwise it is a repeat (flapping)."""
        by_key: dict[tuple[str, str], list[Any]] = defaultdict(list)
        for alert in self.stored["alerts"]:
            by_key[(alert[1], alert[3])].append(alert)
        details, repeats = [], 0
        for (rule, camera), alerts in sorted(by_key.items()):
            alerts.sort(key=lambda a: a[5])
            spans = [(a[5], a[6] or time.time()) for a in alerts]
            overlapping = sum(1 for i, a in enumerate(spans) for b in spans[i + 1 :] if _overlap([a], [b]) > 0)
            flaps = []
            for previous, alert in itertools.pairwise(alerts):
                fault = any(camera in r.touches and previous[5] - 5 <= r.start <= alert[5] for r in self.c.records)
                if fault:
                    continue
                if alert[2] == "unmasked_person" and not self.premature(previous):
                    continue
                flaps.append(
                    f"{self.rel(previous[5])}..{self.rel(previous[6] or time.time())} then {self.rel(alert[5])}"
                )
            if flaps or overlapping:
                repeats += len(flaps) + overlapping
                details.append(
                    f"{rule!r} on {camera}: {len(alerts)} alerts, {len(flaps)} fired again without a new cause"
                    f"{f', {overlapping} overlapping' if overlapping else ''}: " + "; ".join(flaps[:5])
                )
        self.add(
            "alerts_not_duplicated",
            "FAIL" if details else "PASS",
            f"{repeats} alert(s) fired again without a new cause (flapping) or overlapping"
            if details
            else "no alert fired twice for one cause",
            details,
            alerts=len(self.stored["alerts"]),
            repeats=repeats,
        )

    # processes

    def check_healthz_answered(self) -> None:
        windows: dict[str, list[tuple[float, float]]] = defaultdict(list)
        for r in self.c.records:
            for worker, start, end in r.down:
                windows[worker].append((start - 1.0, end + 3.0))
        with self.i.lock:
            health = list(self.i.health)
        bad = [(w, t) for w, t, ok in health if not ok and not _in_windows(t, windows[w]) and t >= self.c_t0]
        asked = sum(1 for _w, t, _ in health if t >= self.c_t0)
        details = [f"{w}: no answer at {self.rel(t)}" for w, t in bad]
        self.add(
            "healthz_answered",
            "FAIL" if bad else "PASS",
            f"{asked - len(bad)} of {asked} polls answered (outside {sum(map(len, windows.values()))} planned "
            f"outage window(s))",
            details,
            polls=asked,
            failures=len(bad),
        )

    def check_readyz_sees_broker(self) -> None:
        windows = [(s + 10.0, e) for s, e in self.c.broker_down if e - s > 12.0]
        if not windows:
            self.add("readyz_sees_broker", "N/A", "no broker outage over 12 s")
            return
        with self.i.lock:  # asked and answered within one outage (an answer that came after the broker was
            # back, from a worker slowed by the recovery, is right to say ready)
            samples = [
                s for s in self.i.samples
                if "readyz" in s and any(a <= s["t"] and s["readyz_at"] <= b for a, b in windows)
            ]  # fmt: skip
        ready = [s for s in samples if s["readyz"] == 200]
        details = [
            f"{s['worker']}: /readyz 200 asked at {self.rel(s['t'])}, answered at {self.rel(s['readyz_at'])} with "
            f"the broker down (its broker check: {s.get('readyz_broker')})"
            for s in ready[:10]
        ]
        self.add(
            "readyz_sees_broker",
            "FAIL" if ready else ("PASS" if samples else "N/A"),
            f"{len(ready)} of {len(samples)} /readyz answers during broker outages said ready",
            details,
        )

    def check_rss_flat(self) -> None:
        with self.i.lock:
            rss = list(self.i.rss)
        series: dict[tuple[str, int], list[tuple[float, int]]] = defaultdict(list)
        for name, pid, t, kb in rss:
            series[(name, pid)].append((t, kb))
        longest: dict[str, list[tuple[float, int]]] = {}
        for (name, _pid), points in series.items():
            if len(points) > len(longest.get(name, [])):
                longest[name] = points
        details, table, judged = [], {}, 0
        for name, points in sorted(longest.items()):
            span = points[-1][0] - points[0][0]
            warm = points[0][0] + max(120.0, span / 3)
            timed = [(t, kb) for t, kb in points if t >= warm]
            entry: dict[str, Any] = {
                "first_mb": round(points[0][1] / 1024),
                "peak_mb": round(max(kb for _, kb in points) / 1024),
                "last_mb": round(points[-1][1] / 1024),
                "span_s": round(span),
            }
            if name in WORKERS and timed:
                # a worker that takes over the other's cameras loads their models and state once (a step, not a
                # leak; freed memory is not given back when they move away): judge from a minute after it first
                # ran the most local cameras it ever ran
                counts = [(t, self._local_cameras_run(name, t)) for t, _kb in points]
                most = max(n for _t, n in counts)
                loaded = next(t for t, n in counts if n == most) + 60.0
                entry["judged_after_running_local_cameras"] = most
                timed = [(t, kb) for t, kb in timed if t >= loaded]
            after = [kb for _t, kb in timed]
            judged_span = timed[-1][0] - timed[0][0] if timed else 0.0
            if len(after) >= 12 and judged_span >= 300 and not name.startswith("camera-"):
                q = max(3, len(after) // 4)
                early, late = statistics.median(after[:q]), statistics.median(after[-q:])
                growth = (late - early) / 1024
                entry["growth_after_warmup_mb"] = round(growth, 1)
                judged += 1
                if growth > max(50.0, 0.2 * early / 1024):
                    details.append(f"{name}: RSS {early / 1024:.0f} -> {late / 1024:.0f} MB after warm-up")
            table[name] = entry
        if judged == 0:
            self.add(
                "rss_flat",
                "N/A",
                "run too short to judge RSS (needs 5 min of one incarnation after warm-up)",
                rss=table,
            )
            return
        self.add(
            "rss_flat",
            "FAIL" if details else "PASS",
            f"{judged} process(es) judged; {len(details)} grew after warm-up",
            details,
            rss=table,
        )

    def _local_cameras_run(self, worker: str, t: float) -> int:
        """How many local cameras ``worker`` was analysing at ``t`` (its stats buckets, a bucket's length of slack)."""
        slack = self.o.stats_interval
        return sum(
            any(start - slack <= t <= end + slack for start, end in per_worker.get(worker, []))
            for per_worker in self.local_stats.values()
        )

    def check_poison_kept(self) -> None:
        if not self.poison:
            self.add("poison_kept", "N/A", "no poison message published")
            return
        dead_text = "\n".join(row for rows in self.stored["dead"].values() for row in rows)
        lost = {what: eid for what, eid in self.poison.items() if eid not in self.stored_ids and eid not in dead_text}
        details = [
            f"{what} (event {eid}): acknowledged, neither stored nor dead-lettered" for what, eid in lost.items()
        ]
        self.add(
            "poison_kept",
            "FAIL" if lost else "PASS",
            f"{len(self.poison) - len(lost)} of {len(self.poison)} poison messages stored or dead-lettered",
            details,
        )

    def check_dead_letter_explained(self) -> None:
        dead = self.stored["dead"]
        if not dead:
            self.add("dead_letter_explained", "N/A", "no dead-letter table in this database")
            return
        poison = set(self.poison.values())
        rows = [(t, row) for t, rs in dead.items() for row in rs]
        unexplained = [f"{t}: {row[:200]}" for t, row in rows if not any(p in row for p in poison)]
        self.add(
            "dead_letter_explained",
            "FAIL" if unexplained else "PASS",
            f"{len(rows)} dead letter(s), {len(unexplained)} not explained by the poison messages",
            unexplained,
        )

    def check_jobs_survive_restart(self) -> None:
        if not self.c.jobs:
            self.add("jobs_survive_restart", "N/A", "no job ran across a worker restart")
            return
        details, states = [], {}
        for job in self.c.jobs:
            state = job.get("after_restart") or self.stored["jobs"].get(job["job"])
            states[job["job"]] = state
            if state == "interrupted":
                details.append(f"job {job['job']} on {job['worker']}: interrupted when {job['restarted']} restarted")
            elif state not in ("done", "running", "queued"):
                details.append(f"job {job['job']} on {job['worker']}: {state}")
        self.add(
            "jobs_survive_restart",
            "FAIL" if details else "PASS",
            f"{len(self.c.jobs)} job(s) running while the other worker restarted",
            details,
            states=states,
        )

    def check_file_not_replayed(self) -> None:
        tolerance = 2 * self.o.hold * self.o.fps
        details, judged = [], 0
        for cam in CAMERAS:
            if cam.kind != "file" or cam.node is None or not self.c.kill_marks.get(cam.node):
                continue
            events = [
                (n, eid) for n, kind, eid, key in self.node_events[cam.node] if kind == "track_ended" and key == cam.key
            ]
            marks = [0, *self.c.kill_marks[cam.node], 1 << 62]
            runs = [[eid for n, eid in events if marks[k] < n <= marks[k + 1]] for k in range(len(marks) - 1)]
            for k in range(len(runs) - 1):
                before = [f for e in runs[k] if (f := self.frames.get(e, (None, None))[1]) is not None]
                after = [f for e in runs[k + 1] if (f := self.frames.get(e, (None, None))[0]) is not None]
                if not before or not after:
                    continue
                judged += 1
                if min(after) < max(before) - tolerance:
                    details.append(
                        f"{cam.key}: after restart {k + 1} the file started again at frame {min(after)} "
                        f"(had reached frame {max(before)})"
                    )
        if judged == 0:
            self.add("file_not_replayed", "N/A", "no agent with a file camera was restarted mid-file")
            return
        self.add(
            "file_not_replayed",
            "FAIL" if details else "PASS",
            f"{judged} restart(s) of an agent playing a file",
            details,
        )

    def check_clean_shutdown(self) -> None:
        bad = {name: rc for name, rc in self.shutdown.items() if rc != 0}
        details = [
            f"{name}: exit status {rc if rc is not None else 'none (SIGKILLed after 30 s)'} on SIGTERM"
            for name, rc in bad.items()
        ]
        self.add(
            "clean_shutdown",
            "FAIL" if bad else "PASS",
            f"{len(self.shutdown) - len(bad)} of {len(self.shutdown)} processes exited 0 on SIGTERM",
            details,
            exit_status=self.shutdown,
        )


# -- poison messages -----------------------------------------------------------------------------------------


def publish_poison(inst: Installation) -> dict[str, str]:
    """Messages a node may send that the control room must store or dead-letter, never acknowledge and lose:
    a person event with a field this version does not know, and one from a camera whose name is valid on MQTT
    (64 characters) but too long for the database once prefixed with its node."""
    from maskwatch.core.events import TrackEnded, new_event_id
    from maskwatch.fleet.publisher import make_client
    from maskwatch.fleet.topics import BrokerURL

    assert inst.broker is not None
    node = NODES[0]
    now = datetime.now(UTC)

    def person(camera: str) -> TrackEnded:
        return TrackEnded(
            id=new_event_id(),
            source=camera,
            time=now,
            track_id=999_000,
            label="with_mask",
            probability=0.9,
            probabilities={"with_mask": 0.9, "without_mask": 0.1},
            compliant=True,
            votes={"with_mask": 3},
            n_frames=9,
            n_classified=3,
            first_frame=0,
            last_frame=8,
            first_timestamp=None,
            last_timestamp=None,
            first_seen=now - timedelta(seconds=3),
            last_seen=now,
            best_score=0.9,
            best_box=(1.0, 1.0, 40.0, 40.0),
        )

    unknown = person("door")
    body = unknown.to_dict()
    body["firmware"] = "2.1"  # a newer agent's extra field
    long_name = "c" * 64
    overlong = person(long_name)
    client = make_client(BrokerURL.parse(inst.broker.url(node)), "soak-poison")
    client.connect("127.0.0.1", inst.broker.port)
    client.loop_start()
    try:
        client.publish(f"maskwatch/{node}/door/events", json.dumps(body), qos=1).wait_for_publish(10)
        client.publish(f"maskwatch/{node}/{long_name}/events", overlong.to_json(), qos=1).wait_for_publish(10)
    finally:
        client.disconnect()
        client.loop_stop()
    return {"unknown_field": unknown.id, "camera_name_64": overlong.id}


# -- the run ------------------------------------------------------------------------------------------------


def _machine() -> dict[str, Any]:
    model = platform.processor()
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        for line in subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10).stdout.splitlines():
            if line.startswith("Model name:"):
                model = line.split(":", 1)[1].strip()
    return {"cpu": model, "cores": os.cpu_count(), "python": platform.python_version()}


def _warm_up(inst: Installation, timeout: float = 300.0) -> None:
    """Until every camera has been live once (the local ones on every worker)."""

    def ready() -> list[str]:
        waiting = []
        for cam in CAMERAS:
            if cam.owner == "control":
                seen = {
                    w
                    for w in WORKERS
                    for e in read_service_journals(inst.dir / w)
                    if e.get("type") == "source_status" and e["source"] == cam.key and e["state"] == "live"
                }
                if not seen:
                    waiting.append(cam.key)
            else:
                with inst.lock:
                    if not any(k == cam.key and s == "live" for k, s, _, _ in inst.statuses):
                        waiting.append(cam.key)
        return waiting

    deadline = time.monotonic() + timeout
    while (waiting := ready()) and time.monotonic() < deadline:
        for proc in (*inst.workers.values(), *inst.agents.values()):
            if not proc.alive:
                raise SoakError(f"{proc.name} exited during warm-up (log: {proc.log})")
        time.sleep(2.0)
    if waiting:
        raise SoakError(f"camera(s) never live after {timeout:g} s: {', '.join(waiting)} (logs: {inst.logs})")


def _drain(inst: Installation, produced: dict[str, set[str]], timeout: float = 150.0) -> None:
    """Wait until what was produced by the cut-off is stored, or nothing more arrives for 30 s."""
    want = set().union(*produced.values()) if produced else set()
    last, last_change = -1, time.monotonic()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with _pg(inst.db_url) as conn:
            have = {r[0] for r in conn.execute("SELECT event_id FROM events")}
        got = len(want & have)
        if got == len(want):
            return
        if got != last:
            last, last_change = got, time.monotonic()
        elif time.monotonic() - last_change > 30:
            return
        time.sleep(3.0)


def run(options: SoakOptions) -> SoakResult:
    """The whole soak; everything it started is stopped before it returns or raises."""
    started = datetime.now()
    run_dir = (options.run_dir or ROOT / "runs" / f"soak-{started.strftime('%Y%m%d-%H%M%S')}").resolve()
    run_dir.mkdir(parents=True, exist_ok=True)
    chaos_s = options.minutes * 60
    inst = Installation(options, run_dir)
    chaos = Chaos(inst)
    load_start = os.getloadavg()
    shutdown: dict[str, int | None] = {}
    try:
        inst.start(chaos_s)
        inst.say("waiting for every camera to be live")
        _warm_up(inst)
        poison = publish_poison(inst)
        t0 = time.time()
        inst.say(f"chaos for {options.minutes:g} min (seed {options.seed})")
        chaos.run(t0, chaos_s)
        chaos_end = time.time()
        inst.say(f"faults over; settling {options.settle_s:g} s")
        time.sleep(options.settle_s)
        cutoff: dict[str, Any] = {
            "local": {w: journal_sizes(run_dir / w) for w in WORKERS},
            "nodes": {n: inst.node_journal_max(n) for n in NODES},
        }
        produced: dict[str, set[str]] = defaultdict(set)
        for node in NODES:
            for _n, kind, eid, cam in read_node_journal(run_dir / f"agent-{node}" / "outbox.db", cutoff["nodes"][node]):
                if kind == "track_ended":
                    produced[cam].add(eid)
        for worker in WORKERS:
            for e in read_service_journals(run_dir / worker, cutoff["local"][worker]):
                if e.get("type") == "track_ended":
                    produced[e["source"]].add(e["id"])
        inst.say("waiting for what was reported to be stored")
        _drain(inst, produced)
        time.sleep(4.0)  # a last API sample
        with inst.lock:
            final: dict[str, dict[str, Any]] = {
                w: next((s for s in reversed(inst.samples) if s["worker"] == w and "error" not in s), {})
                for w in WORKERS
            }
        stored = read_stored(inst.db_url)
        cutoff["final_time"] = time.time()
        (run_dir / "stored.json").write_text(json.dumps(stored, indent=1, default=str))
        inst.say("stopping every process (SIGTERM)")
        shutdown = inst.close()
        inst.save_observations(run_dir / "observed.json")
        analysis = Analysis(inst, chaos, cutoff, stored, shutdown, final, poison)
        checks = analysis.run(t0)
    finally:
        if not shutdown:
            with contextlib.suppress(Exception):
                inst.close()
        orphans = inst.leftovers()
        shutil.rmtree(run_dir / "media", ignore_errors=True)  # videos: large, made again at each run
    loads = [v for _, v in inst.loads]
    result = SoakResult(
        options={k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(options).items()},
        run_dir=str(run_dir),
        machine=_machine(),
        started=started.isoformat(timespec="seconds"),
        chaos_s=round(chaos_end - t0, 1),
        faults=[
            {**asdict(r), "at_s": round(r.start - t0, 1), "duration_s": round(r.end - r.start, 1)}
            for r in chaos.records
        ],
        cameras=analysis.cameras,
        checks=checks,
        processes={
            "incarnations": {p.name: p.history for p in (*inst.workers.values(), *inst.agents.values())},
            "shutdown_exit_status": shutdown,
            "notes": inst.notes,
        },
        load={
            "start_1min": load_start[0],
            "max_1min": max(loads, default=None),
            "mean_1min": round(statistics.mean(loads), 2) if loads else None,
            "end_1min": os.getloadavg()[0],
        },
        orphans=orphans,
    )
    if options.json_out:
        options.json_out.parent.mkdir(parents=True, exist_ok=True)
        options.json_out.write_text(json.dumps(result.to_dict(), indent=1, default=str))
    (run_dir / "soak.json").write_text(json.dumps(result.to_dict(), indent=1, default=str))
    return result


def render(result: SoakResult) -> str:
    lines = [
        f"chaos soak: {result.chaos_s / 60:.1f} min of faults, seed {result.options['seed']}, "
        f"{result.machine['cpu']} x{result.machine['cores']}, load average {result.load}",
        f"run folder: {result.run_dir}",
        "",
        "faults:",
    ]
    for f in result.faults:
        lines.append(f"  t+{f['at_s']:>5.0f}s  {f['kind']:<26} {f['target']:<22} {f['duration_s']:>4.0f} s")
    lines += ["", f"{'camera':<14} {'reported':>8} {'stored':>7} {'lost':>5} {'budget':>6} {'extra':>6}  final state"]
    for key, c in result.cameras.items():
        lines.append(
            f"{key:<14} {c.get('produced', 0):>8} {c.get('stored', 0):>7} "
            f"{c.get('missing', 0) - c.get('missing_explained_by_budget', 0):>5} "
            f"{c.get('missing_explained_by_budget', 0):>6} {c.get('extra', 0):>6}  {c.get('final_state')}"
            + (f"  per worker {c['reported_by_worker']}" if c.get("reported_by_worker") else "")
        )
    lines += ["", "checks:"] + [c.render() for c in result.checks]
    for note in result.processes.get("notes", []):
        lines.append(f"note: {note}")
    lines.append(f"processes left behind: {len(result.orphans)}" + "".join(f"\n  {o}" for o in result.orphans))
    failed = [c.name for c in result.checks if c.status == "FAIL"]
    lines.append(f"\n{len(failed)} check(s) failed{': ' + ', '.join(failed) if failed else ''}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--minutes", type=float, default=30.0, help="minutes of faults (default 30)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--faults", help=f"fixed faults in order, comma-separated KIND[:TARGET] ({', '.join(FAULT_KINDS)})"
    )
    parser.add_argument(
        "--gap",
        type=float,
        nargs=2,
        default=(60.0, 180.0),
        metavar=("MIN", "MAX"),
        help="seconds from one fault's start to the next (default 60 180)",
    )
    parser.add_argument("--camera-down", type=float, default=90.0, help="seconds a stopped camera stays off")
    parser.add_argument("--settle", type=float, default=60.0, help="seconds after the last fault before checking")
    parser.add_argument("--budget-mb", type=float, default=0.02, help=f"outbox budget of {BUDGET_NODE}")
    parser.add_argument("--first-fault", type=float, default=60.0, help="seconds after warm-up before the first fault")
    parser.add_argument("--quiet", type=float, default=15.0, help="seconds at least from a fault's end to the next")
    parser.add_argument("--json", type=Path, default=ROOT / "benchmarks" / "results" / "soak.json")
    parser.add_argument("--run-dir", type=Path)
    args = parser.parse_args(argv)
    options = SoakOptions(
        minutes=args.minutes,
        seed=args.seed,
        gap=tuple(args.gap),
        camera_down_s=args.camera_down,
        settle_s=args.settle,
        budget_mb=args.budget_mb,
        first_fault_s=args.first_fault,
        quiet_s=args.quiet,
        json_out=args.json,
        run_dir=args.run_dir,
        faults=[f for f in args.faults.split(",") if f] if args.faults else None,
    )

    def terminated(_signum: int, _frame: Any) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, terminated)
    signal.signal(signal.SIGINT, signal.default_int_handler)  # also when started in the background
    try:
        if options.faults:
            for spec in options.faults:
                parse_fault(spec)
        result = run(options)
    except KeyboardInterrupt:
        print("interrupted; every process stopped", file=sys.stderr)
        return 130
    except SoakError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(render(result))
    return 1 if result.failed else 0


if __name__ == "__main__":
    sys.exit(main())
