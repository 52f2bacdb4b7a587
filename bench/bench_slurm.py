"""The Slurm backend against the real test cluster (scripts/test-cluster.sh; needs root).

- 60 and 200 calls end to end against one bare `sbatch --array` (bench/slurm_e2e.py);
- 200 calls through run_many: SSH connections opened, remote commands per polling round, and
  submission time against one `ssh host sbatch ...` per task measured in the same run;
- client memory while waiting on 1,000 pending Slurm executions.
"""

from __future__ import annotations

import contextvars
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import slurm_e2e
from _timing import result

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "test-cluster.sh"


def _config(env: dict[str, str], io: str) -> Any:
    from hqs_sdk_slurm import BackendConfigurationSlurm

    return BackendConfigurationSlurm(
        login_host=env["HQS_TEST_SSH_HOST"], port=int(env["HQS_TEST_SSH_PORT"]),
        login_user=env["HQS_TEST_SSH_USER"], slurm_tmp_io=io,
        ssh_extra=["-i", env["HQS_TEST_SSH_KEY"]], known_hosts=env["HQS_TEST_SSH_KNOWN_HOSTS"],
        preparation_script_before=[f"export PATH={os.path.dirname(sys.executable)}:$PATH"])


def _ssh_sbatch_each(env: dict[str, str], io: str, count: int) -> float:
    started = time.perf_counter()
    for i in range(count):
        subprocess.run(["ssh", "-F", env["HQS_TEST_SSH_CONFIG"], "-o", "BatchMode=yes",
                        "hqs-test-cluster", f"sbatch --parsable --hold --chdir={io} "
                        f"--output=/dev/null --wrap='true {i}'"], check=True,
                       capture_output=True)
    return (time.perf_counter() - started) / count


def run(samples: int, calls: int = 200, pending: int = 1000) -> list[dict[str, Any]]:
    from hqs_sdk import CacheMode, run_many, scoped_config
    from hqs_sdk.runner import backend_for, close_backends
    from hqs_sdk.testing import tasks

    with tempfile.TemporaryDirectory() as tmp:
        state = Path(tmp) / "cluster"
        subprocess.run(["bash", str(SCRIPT), "up", str(state)], check=True,
                       capture_output=True, timeout=180)
        try:
            env = slurm_e2e.cluster_env(state / "env")
            io = Path(env["HQS_TEST_SLURM_IO"])
            # First, while the queue is empty and nothing else runs on the cluster:
            end_to_end = slurm_e2e.run(env, io, samples)
            baseline = _ssh_sbatch_each(env, str(io / "baseline"), 20)
            subprocess.run(["ssh", "-F", env["HQS_TEST_SSH_CONFIG"], "hqs-test-cluster",
                            "scancel -u root"], check=True)
            config = _config(env, str(io / "run"))
            with scoped_config(backend=config, cache_mode=CacheMode.DISABLED):
                from hqs_sdk.config import current_config

                # The Slurm backend's session is not part of the Backend interface.
                backend: Any = backend_for(config, current_config())[1]
                commands: list[str] = []
                original = backend.session.run

                def counting(command: str, doing: str, timeout: float = 120) -> Any:
                    commands.append(doing)
                    return original(command, doing, timeout)

                backend.session.run = counting
                submit_started = time.perf_counter()
                # The scoped configuration is a context variable: carry it into the thread.
                context = contextvars.copy_context()
                waiting = threading.Thread(target=lambda: context.run(
                    run_many, [tasks.add.bind(i, 1) for i in range(calls)]))
                waiting.start()
                deadline = time.monotonic() + 300
                while not any(c.startswith("polling") for c in commands):
                    if time.monotonic() > deadline or not waiting.is_alive():
                        raise RuntimeError("run_many never started polling")
                    time.sleep(0.01)
                submit_per_task = (time.perf_counter() - submit_started) / calls
                waiting.join(600)
                rounds = sum(1 for c in commands if c.startswith("polling"))
                during = len(commands) - commands.index(
                    next(c for c in commands if c.startswith("polling")))
                per_round = during / max(1, rounds)
                connections = backend.session.connections_opened

            close_backends()
            memory_mb = _pending_memory(env, str(io / "held"), pending)
        finally:
            subprocess.run(["bash", str(SCRIPT), "down", str(state)], capture_output=True,
                           timeout=120)
    return [
        *end_to_end,
        result(f"slurm: SSH connections for {calls} calls", connections, "", None, 2),
        result("slurm: remote commands per polling round", per_round, "", None, 2,
               f"{rounds} rounds"),
        result(f"slurm: submission per task ({calls} via run_many)", submit_per_task * 1000,
               "ms", baseline * 1000, 0.1,
               f"peer = one `ssh host sbatch` per task: {baseline * 1000:.0f} ms"),
        result(f"slurm: client memory waiting on {pending} executions", memory_mb, "MB", None,
               200.0, "peak RSS of the client process"),
    ]


MEMORY = f"""
import os, resource, sys, threading, time
import attrs
sys.path.insert(0, {str(Path(__file__).parent)!r})
from bench_slurm import _config
from slurm_e2e import cluster_env
from hqs_sdk import CacheMode, global_config, run_many
from hqs_sdk.testing import tasks
env = cluster_env(sys.argv[1])
global_config.backend = attrs.evolve(_config(env, sys.argv[2]), sbatch_extra=["--hold"])
global_config.cache.mode = CacheMode.DISABLED
threading.Thread(target=lambda: run_many([tasks.sleep.bind(60 + i / 1000)
                 for i in range(int(sys.argv[3]))]), daemon=True).start()
time.sleep(float(sys.argv[4]))
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
os._exit(0)
"""


def _pending_memory(env: dict[str, str], io: str, count: int) -> float:
    out = subprocess.run([sys.executable, "-c", MEMORY, env["HQS_TEST_SLURM_STATE"] + "/env",
                          io, str(count), "25"], check=True, capture_output=True, text=True,
                         timeout=300).stdout
    subprocess.run(["ssh", "-F", env["HQS_TEST_SSH_CONFIG"], "hqs-test-cluster",
                    "scancel -u root"], check=False, capture_output=True)
    return float(out.strip().splitlines()[-1])
