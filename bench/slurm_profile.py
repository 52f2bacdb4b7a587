"""Where the time of a Slurm end-to-end run goes, ours against the bare ``sbatch --array``.

    python bench/slurm_profile.py STATE_DIR [CALLS]     (a test cluster already up)

Ours runs in a fresh client process that prints wall-clock stamps (start, imports done, each
remote command with what it was doing, end); the phases are then read together with the
modification times of the responses the array tasks wrote (the cluster is this machine, so
the clocks are one). The bare run gets the same split: submitted, first and last response
written, seen.
"""

from __future__ import annotations

import itertools
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import slurm_e2e

CLIENT = f"""
import time
t0 = time.time()
import sys
sys.path.insert(0, {str(Path(__file__).parent)!r})
from bench_slurm import _config
from slurm_e2e import cluster_env
from hqs_sdk import CacheMode, global_config, run_many
from hqs_sdk.config import current_config
from hqs_sdk.runner import backend_for
from hqs_sdk.testing import tasks
stamps = [("start", t0, ""), ("imported", time.time(), "")]
env = cluster_env(sys.argv[1])
global_config.backend = _config(env, sys.argv[2])
global_config.cache.mode = CacheMode.DISABLED
backend = backend_for(global_config.backend, current_config())[1]
original_run, original_read = backend.session.run, backend._read
def run(command, doing, timeout=120):
    started = time.time()
    out = original_run(command, doing, timeout)
    stamps.append(("command", started, doing + f" ({{time.time() - started:.3f}} s)"))
    return out
def read(path, doing):
    started = time.time()
    out = original_read(path, doing)
    stamps.append(("read", started, f"{{time.time() - started:.4f}}"))
    return out
backend.session.run, backend._read = run, read
n, salt = int(sys.argv[3]), int(sys.argv[4])
out = run_many([tasks.add.bind(i, salt) for i in range(n)])
stamps.append(("done", time.time(), ""))
print(__import__("json").dumps(stamps))
"""


def profile_ours(env: dict[str, str], io: Path, calls: int) -> dict[str, Any]:
    """The phases of one run of ours, in seconds from the client's start."""
    folder = io / f"profile-{int(time.time())}"
    launched = time.time()
    out = subprocess.run([sys.executable, "-c", CLIENT, env["HQS_TEST_SLURM_STATE"] + "/env",
                          str(folder), str(calls), str(int(time.time()))], check=True,
                         capture_output=True, text=True, timeout=1800).stdout
    ended = time.time()
    stamps = json.loads(out.strip().splitlines()[-1])
    done = sorted(p.stat().st_mtime for p in folder.rglob("response.json"))
    commands = [s for s in stamps if s[0] == "command"]
    submit = next(s for s in commands if s[2].startswith("submitting"))
    submitted = submit[1] + float(submit[2].rsplit("(", 1)[1].split()[0])
    polls = [s[1] for s in commands if s[2].startswith("polling")]
    reads = [float(s[2]) for s in stamps if s[0] == "read"]
    gaps = [b - a for a, b in itertools.pairwise(polls)]
    return {
        "interpreter start to first stamp": stamps[0][1] - launched,
        "imports": stamps[1][1] - stamps[0][1],
        "start to sbatch returned": submitted - launched,
        "sbatch returned to first response written": done[0] - submitted,
        "first to last response written (cluster runs the array)": done[-1] - done[0],
        "last response written to run_many returned": stamps[-1][1] - done[-1],
        "run_many returned to process exit": ended - stamps[-1][1],
        "total": ended - launched,
        "polling rounds": len(polls),
        "longest gap between rounds": max(gaps, default=0.0),
        "median gap between rounds": statistics.median(gaps) if gaps else 0.0,
        "responses fetched": len(reads),
        "response fetch, median s": statistics.median(reads) if reads else 0.0,
        "commands": [s[2] for s in commands if not s[2].startswith("polling")],
    }


def profile_bare(env: dict[str, str], io: Path, calls: int) -> dict[str, Any]:
    """The same split for one bare ``sbatch --array`` run."""
    started = time.time()
    total = slurm_e2e.bare(env, io, calls, 0.5)
    folder = max(io.glob("bare-*"), key=lambda p: p.stat().st_mtime)
    done = sorted(p.stat().st_mtime for p in folder.glob("response-*.json"))
    submitted = (folder / "job.sh").stat().st_mtime
    return {
        "start to job.sh written (sbatch follows)": submitted - started,
        "job.sh written to first response written": done[0] - submitted,
        "first to last response written (cluster runs the array)": done[-1] - done[0],
        "last response written to seen": started + total - done[-1],
        "total": total,
    }


if __name__ == "__main__":
    state = Path(sys.argv[1])
    env = slurm_e2e.cluster_env(state / "env")
    calls = int(sys.argv[2]) if len(sys.argv) > 2 else 60
    io = Path(env["HQS_TEST_SLURM_IO"])
    slurm_e2e._wait_idle(env)
    print("ours", json.dumps(profile_ours(env, io, calls), indent=1), flush=True)
    slurm_e2e._wait_idle(env)
    print("bare", json.dumps(profile_bare(env, io, calls), indent=1), flush=True)
