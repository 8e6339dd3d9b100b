"""The chaos soak, short (issue 18): the whole installation of ``benchmarks/soak.py`` (PostgreSQL, Mosquitto as
docs/deploy.md configures it, two ``serve`` workers, two agents, real HTTP and RTSP cameras) through a fixed
list of faults, then every check of the harness (a failure lists each failed check with its evidence).

About 5 minutes, on demand and alone: ``MASKWATCH_SOAK=1 pytest tests/test_soak.py -s``. Beside the rest of
the suite its load (two workers, two agents, six cameras on 2 cores) made timing tests of the other xdist
worker fail; after the rest it would take ``make test`` past its 15 minutes (the rest takes 10 min 25 s on
an Intel Xeon 2-vCPU machine). Without ``MASKWATCH_SOAK=1`` it is skipped; ``pytest -m "not slow"`` leaves it
out too. Its runs found three real faults the suite had missed (BENCHMARKS.md, chaos soak), each now with
its own test in the suite.

Each fault here is one of the problems issue 18 lists; on the code of that issue most checks fail (that is
the point: the harness proves the fixes). The full soak: ``python benchmarks/soak.py --minutes 30``.
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

import soak  # noqa: E402
from conftest import shared_or_skip  # noqa: E402

pytestmark = pytest.mark.slow

FAULTS = [
    "camera_stop:cr-rtsp+edge-b:hall",  # a stream gone > 30 s, on the control room and on a node
    "pg_kill:serve-2",  # a worker killed during a database outage (what it held in memory)
    "agent_kill:edge-a",  # outbox resumes; the file source must not start again
    "worker_kill:serve-1",  # a job runs on serve-2 meanwhile; the restart must not interrupt it
    "broker_kill:stop",  # the node's last will must not leave its cameras lost
    "broker_kill_workers_down",  # what the broker held while no worker was connected
    "outbox_budget",  # edge-b's small outbox overflows: what it drops must be reported exactly
]


def _run_soak() -> soak.SoakResult:
    if os.environ.get("MASKWATCH_SOAK") != "1":
        pytest.skip(
            "the chaos soak takes about 5 minutes and its load makes other timing tests fail beside it, so it runs "
            "alone, on demand: MASKWATCH_SOAK=1 pytest tests/test_soak.py -s"
        )
    shared_or_skip("scenes", "images")
    from conftest_service import _pg_bin

    from maskwatch.fleet.broker import find_mosquitto

    if find_mosquitto() is None:
        pytest.skip("mosquitto is not installed (apt-get install mosquitto mosquitto-clients; scripts/setup.sh does)")
    if _pg_bin() is None:
        pytest.skip("PostgreSQL server binaries not found (apt-get install postgresql; scripts/setup.sh does)")
    pytest.importorskip("psycopg", reason="psycopg 3 is needed for PostgreSQL")
    options = soak.SoakOptions(
        minutes=0, seed=7, faults=FAULTS, gap=(5.0, 10.0), first_fault_s=20.0, quiet_s=8.0, camera_down_s=40.0,
        pg_down_s=16.0, broker_down_s=8.0, budget_outage_s=35.0, budget_mb=0.03, settle_s=30.0,
        run_dir=Path(tempfile.mkdtemp(prefix="maskwatch-soak-")), verbose=False,
    )  # fmt: skip
    outcome = soak.run(options)
    print(soak.render(outcome))
    return outcome


def test_the_short_chaos_soak_runs_every_fault_and_passes_every_check():
    result = _run_soak()
    ran = [(f["kind"], f["target"]) for f in result.faults]
    assert [kind for kind, _ in ran] == [spec.split(":", 1)[0] for spec in FAULTS]
    assert all(target == spec.partition(":")[2] for (_, target), spec in zip(ran, FAULTS, strict=True) if ":" in spec)
    assert not result.orphans, f"processes left behind: {result.orphans}"
    assert {check.name for check in result.checks} == set(soak.CHECKS), "a check did not run"
    assert not result.failed, "\n".join(check.render() for check in result.failed) + f"\n(run folder: {result.run_dir})"
