"""Jobs that Slurm itself ends, produced for real on the test cluster.

Out of memory (``JobAcctGatherParams=OverMemoryKill``), time limit, node failure
(``scontrol update State=DOWN``) and preemption (partition ``urgent`` preempts ``debug`` with
``PreemptMode=CANCEL``); see ``scripts/test-cluster.sh``.
"""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Callable, Iterator
from typing import Any

import attrs
import pytest
from hqs_sdk_slurm import SlurmBackend

from hqs_sdk.backend import Handle
from hqs_sdk.models import ExecutionState
from hqs_sdk.testing import tasks, wait_finished
from hqs_sdk.testing.backend_contract import make_request


@pytest.fixture
def backends(slurm_config: Any) -> Iterator[Callable[..., SlurmBackend]]:
    opened: list[SlurmBackend] = []

    def make(**changes: Any) -> SlurmBackend:
        opened.append(SlurmBackend(attrs.evolve(slurm_config, **changes)))
        return opened[-1]

    yield make
    for backend in opened:
        backend.close()


def slurm(cluster: dict[str, str], *args: str) -> str:
    env = {**os.environ, "SLURM_CONF": cluster["SLURM_CONF"]}
    return subprocess.run(list(args), env=env, capture_output=True, text=True, timeout=30,
                          check=False).stdout


def wait_state(backend: SlurmBackend, handle: Handle, state: ExecutionState,
               timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while (current := backend.states([handle])[0].state) is not state:
        assert not current.finished, f"ended as {current} while waiting for {state}"
        assert time.monotonic() < deadline, f"still {current} after {timeout} s"
        time.sleep(0.2)


def test_out_of_memory(backends: Callable[..., SlurmBackend]) -> None:
    backend = backends()  # no memory_mb: Slurm's default of 256 MB per CPU is the limit
    response = wait_finished(backend, backend.submit(make_request(
        tasks.allocate, megabytes=700, hold_seconds=60)), 90)
    assert response.state is ExecutionState.FAILED
    assert response.error is not None and response.error.kind == "out_of_memory"
    assert "memory_mb" in response.error.message
    assert "exceeded memory limit" in (response.log_tail or "")


def test_time_limit(backends: Callable[..., SlurmBackend]) -> None:
    # Slurm counts in minutes and checks every 30 s, so this takes 60 to 90 s.
    backend = backends(sbatch_extra=["--time=1"])
    response = wait_finished(backend, backend.submit(make_request(tasks.sleep, seconds=300)),
                             150)
    assert response.state is ExecutionState.TIMED_OUT
    assert response.error is not None and response.error.kind == "timeout"
    assert "time limit" in response.error.message


def test_node_failure_fails_or_requeues(cluster: dict[str, str],
                                        backends: Callable[..., SlurmBackend]) -> None:
    node = slurm(cluster, "sinfo", "-h", "-o", "%N").strip()
    failing = backends(sbatch_extra=["--no-requeue"])
    requeued = backends()  # Slurm's default: a batch job hit by a node failure runs again
    first = failing.submit(make_request(tasks.sleep, seconds=300))
    second = requeued.submit(make_request(tasks.sleep, seconds=300))
    wait_state(failing, first, ExecutionState.RUNNING)
    wait_state(requeued, second, ExecutionState.RUNNING)
    try:
        slurm(cluster, "scontrol", "update", f"NodeName={node}", "State=DOWN",
              "Reason=hqs-test")
        response = wait_finished(failing, first, 60)
        assert response.state is ExecutionState.FAILED
        assert response.error is not None and response.error.kind == "node_failure"
        assert "RESTART_FAILED" in response.error.message
        wait_state(requeued, second, ExecutionState.QUEUED)  # back in the queue, not failed
        requeued.cancel(second)
        assert wait_finished(requeued, second, 60).state is ExecutionState.CANCELLED
    finally:
        slurm(cluster, "scontrol", "update", f"NodeName={node}", "State=RESUME")
        deadline = time.monotonic() + 60
        while slurm(cluster, "sinfo", "-h", "-n", node, "-o", "%t").strip() != "idle":
            assert time.monotonic() < deadline, "the test node did not come back"
            time.sleep(0.5)


def test_preemption(backends: Callable[..., SlurmBackend]) -> None:
    low = backends(sbatch_extra=["--exclusive"])
    high = backends(sbatch_extra=["--exclusive", "--partition=urgent"])
    victim = low.submit(make_request(tasks.sleep, seconds=300))
    wait_state(low, victim, ExecutionState.RUNNING)
    winner = high.submit(make_request(tasks.add, a=2, b=3))
    response = wait_finished(low, victim, 60)
    assert response.state is ExecutionState.FAILED
    assert response.error is not None and response.error.kind == "preempted"
    assert "higher-priority" in response.error.message
    assert wait_finished(high, winner, 60).output == 5
