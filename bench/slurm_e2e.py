"""Slurm end to end: N calls through ``run_many`` against one bare ``sbatch --array``.

Both sides run on the test cluster in the same run, alternately, one after the other with the
queue empty in between:

- ours: a fresh client interpreter (timed from its start to its exit) that runs ``run_many`` of
  N distinct ``hqs_sdk.testing.tasks.add`` calls through ``BackendConfigurationSlurm``, cache
  disabled: it uploads the requests over SFTP, submits one job array, polls, and fetches the
  responses over SFTP;
- the floor: N request files written, one ``ssh host sbatch --array=0-(N-1)`` of the same
  interpreter (``python -c`` reading a JSON request and writing a JSON response, the same
  ``--cpus-per-task`` as ours), then the response files polled at the backend's shortest polling
  interval until all N exist (they are on this machine, so each look is free).
"""

from __future__ import annotations

import json
import os
import shlex
import statistics
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

from _timing import FLOOR_CODE, result

CLIENT = f"""
import sys
sys.path.insert(0, {str(Path(__file__).parent)!r})
from bench_slurm import _config
from slurm_e2e import cluster_env
from hqs_sdk import CacheMode, global_config, run_many
from hqs_sdk.testing import tasks
env = cluster_env(sys.argv[1])
global_config.backend = _config(env, sys.argv[2])
global_config.cache.mode = CacheMode.DISABLED
n, salt = int(sys.argv[3]), int(sys.argv[4])
out = run_many([tasks.add.bind(i, salt) for i in range(n)])
assert out == [i + salt for i in range(n)], out
"""


def cluster_env(path: str | os.PathLike[str]) -> dict[str, str]:
    """The test cluster's ``env`` file (``NAME=value`` lines, scripts/test-cluster.sh up)."""
    text = Path(path).read_text()
    return dict(line.split("=", 1) for line in text.split("\n") if line)


def _ssh(env: dict[str, str], command: str, timeout: float = 120) -> str:
    return subprocess.run(["ssh", "-F", env["HQS_TEST_SSH_CONFIG"], "-o", "BatchMode=yes",
                           "hqs-test-cluster", command], check=True, capture_output=True,
                          text=True, timeout=timeout).stdout


def _wait_idle(env: dict[str, str], limit_s: float = 300) -> None:
    """Untimed: wait until the queue is empty so one side never runs beside the other."""
    deadline = time.monotonic() + limit_s
    while _ssh(env, "squeue -h -o %i").strip():
        if time.monotonic() > deadline:
            raise RuntimeError(f"the test cluster's queue did not empty within {limit_s:.0f} s")
        time.sleep(0.5)


def ours(env: dict[str, str], io: Path, calls: int, salt: int) -> float:
    """Seconds for a fresh client process to run ``calls`` distinct calls through Slurm."""
    started = time.perf_counter()
    subprocess.run([sys.executable, "-c", CLIENT, env["HQS_TEST_SLURM_STATE"] + "/env",
                    str(io), str(calls), str(salt)], check=True, capture_output=True,
                   timeout=1800)
    return time.perf_counter() - started


def bare(env: dict[str, str], io: Path, calls: int, poll_s: float) -> float:
    """Seconds for one bare ``sbatch --array`` of the floor's Python over SSH, until all done."""
    folder = io / f"bare-{uuid.uuid4().hex[:8]}"
    started = time.perf_counter()
    folder.mkdir(parents=True)
    for i in range(calls):
        (folder / f"request-{i}.json").write_text(json.dumps({"a": i, "b": 1}))
    code = (f"{shlex.quote(sys.executable)} -c {shlex.quote(FLOOR_CODE)} "
            f"{folder}/request-$SLURM_ARRAY_TASK_ID.json "
            f"{folder}/response-$SLURM_ARRAY_TASK_ID.json")
    script = folder / "job.sh"
    script.write_text(f"#!/bin/sh\n{code}\n")
    _ssh(env, f"sbatch --parsable --job-name=bare --array=0-{calls - 1} --cpus-per-task=1 "
              f"--output={folder}/slurm-%A_%a.out {script}")
    expected = [folder / f"response-{i}.json" for i in range(calls)]
    deadline = time.monotonic() + 1800
    pending = expected
    while pending:
        pending = [p for p in pending if not p.exists()]
        if not pending:
            break
        if time.monotonic() > deadline:
            raise RuntimeError(f"{len(pending)} bare array tasks never wrote a response in "
                               f"{folder}; see its slurm-*.out files")
        time.sleep(poll_s)
    return time.perf_counter() - started


def run(env: dict[str, str], io: Path, samples: int,
        sizes: tuple[int, ...] = (60, 200)) -> list[dict[str, Any]]:
    """The end-to-end records, one per size: median of ours over median of the floor."""
    from hqs_sdk_slurm.backend import SlurmBackend

    poll_s = SlurmBackend.poll_interval_min
    repeats = 1 if samples <= 7 else 3
    records = []
    salt = int(time.time())
    for calls in sizes:
        times: dict[str, list[float]] = {"ours": [], "bare": []}
        for r in range(repeats):
            _wait_idle(env)
            times["ours"].append(ours(env, io / "e2e", calls, salt + r * 1000))
            _wait_idle(env)
            times["bare"].append(bare(env, io, calls, poll_s))
            print(f"  slurm e2e {calls}: ours {times['ours'][-1]:.1f} s, "
                  f"bare {times['bare'][-1]:.1f} s", file=sys.stderr, flush=True)
        mine, floor = statistics.median(times["ours"]), statistics.median(times["bare"])
        records.append(result(
            f"slurm: {calls} calls end to end (run_many)", mine, "s", floor, 1.1,
            f"floor = one `ssh host sbatch --array` of `python -c` JSON in/out, polled every "
            f"{poll_s} s; {repeats} run(s) each, alternating; ours "
            + ", ".join(f"{t:.1f}" for t in times["ours"]) + " s, bare "
            + ", ".join(f"{t:.1f}" for t in times["bare"]) + " s"))
    return records


if __name__ == "__main__":
    # Against a cluster already up: python bench/slurm_e2e.py STATE_DIR [SIZE ...]
    state = Path(sys.argv[1])
    env = cluster_env(state / "env")
    sizes = tuple(int(a) for a in sys.argv[2:]) or (60, 200)
    for record in run(env, Path(env["HQS_TEST_SLURM_IO"]), 7, sizes):
        print(record)
    os._exit(0)
