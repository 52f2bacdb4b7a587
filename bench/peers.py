"""hqs-sdk against submitit, Parsl and joblib on the same workloads, alternating, in one run.

    python bench/run.py peers [--quick]      # or: python bench/peers.py [--quick]

- one task end to end: hqs-sdk's example task `hello` on the local backend with the cache
  disabled; submitit's LocalExecutor (`submit(...).result()`); a Parsl app on a
  HighThroughputExecutor with a LocalProvider, started once (its start-up is reported apart);
- 100 distinct tasks on 2 cores: `run_many` (vcpu_slots=2); 100 submitit jobs; 100 Parsl apps
  on two workers;
- a cache hit at 100,000 entries: bench_cache_hit's re-run script (10,000 hits, SQLite cache
  of 100,000 entries) against the same script shape over joblib's `Memory(location).cache(f)`
  holding 100,000 results, each a fresh process;
- the floor of bench_hello and bench_run_many (a fresh Python reading and writing JSON; 100 of
  them two at a time) in the same rotation: what a process per task costs on this machine.

Each side runs in a process of its own (peers_driver.py). hqs-sdk runs under the interpreter
that runs this file, which should hold a non-editable install (docs/performance.md); the peers
run under a virtual environment of their own, created on the first run from PyPI with the
versions pinned below and kept under bench/.venvs/ (or $XDG_CACHE_HOME/hqs-sdk-bench/). They are
never a dependency of the project. Each ratio is hqs-sdk's median over the peer's median from
the same alternating run; the figures are informational (no target), but a peer that cannot be
installed or run is reported as missed, with the reason.
"""

from __future__ import annotations

import hashlib
import json
import os
import selectors
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import IO, Any

from _timing import floor_command, result, run_process
from peers_driver import MANY

HERE = Path(__file__).resolve().parent
DRIVER = HERE / "peers_driver.py"
# Tested together on Python 3.11 (2026-11-29); change them together and re-run.
PINS = {"submitit": "submitit==1.5.4", "parsl": "parsl==2026.10.26", "joblib": "joblib==1.6.0"}
ENTRIES, CALLS = 100_000, 10_000


class PeerError(RuntimeError):
    """A peer could not be installed or failed while it ran."""


def venv_dir() -> Path:
    """Where the peers' virtual environment lives: one per interpreter version and pin set."""
    key = hashlib.sha256(" ".join(sorted(PINS.values())).encode()).hexdigest()[:10]
    name = f"peers-py{sys.version_info[0]}{sys.version_info[1]}-{key}"
    cache = os.environ.get("XDG_CACHE_HOME")
    return (Path(cache) / "hqs-sdk-bench" if cache else HERE / ".venvs") / name


def _pip_log_tail(log: Path) -> str:
    lines = log.read_text(errors="replace").splitlines() if log.exists() else []
    return "\n".join(lines[-15:])


def ensure_venv() -> tuple[Path, dict[str, str]]:
    """The peers' interpreter, creating its environment if needed; and the peers that failed.

    A complete environment has a `.complete` marker; one without (an interrupted or partly
    failed install) is built again from scratch.
    """
    folder = venv_dir()
    python = folder / "bin" / "python"
    if (folder / ".complete").exists():
        return python, {}
    shutil.rmtree(folder, ignore_errors=True)
    folder.parent.mkdir(parents=True, exist_ok=True)
    print(f"creating the peers' environment {folder} ...", file=sys.stderr, flush=True)
    subprocess.run([sys.executable, "-m", "venv", str(folder)], check=True, timeout=300)
    failed: dict[str, str] = {}
    log = folder / "pip.log"
    for peer, pin in PINS.items():
        with log.open("a") as out:
            done = subprocess.run(
                [str(python), "-m", "pip", "install", "--disable-pip-version-check", pin],
                stdout=out, stderr=subprocess.STDOUT, timeout=900)
        if done.returncode:
            failed[peer] = (f"`pip install {pin}` into {folder} exited {done.returncode}; "
                            f"end of {log}:\n{_pip_log_tail(log)}")
    if not failed:
        (folder / ".complete").write_text(json.dumps(PINS) + "\n")
    return python, failed


class Driver:
    """A peers_driver.py process serving one side; every request has a time bound."""

    def __init__(self, side: str, python: Path, folder: Path, env: dict[str, str]) -> None:
        self.side = side
        self.log = folder / f"{side}-driver.log"
        folder.mkdir(parents=True, exist_ok=True)
        with self.log.open("w") as err:
            self.process = subprocess.Popen(
                [str(python), str(DRIVER), "serve", side, str(folder)], env=env, cwd=folder,
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=err, text=True)
        assert self.process.stdin and self.process.stdout
        self.stdin: IO[str] = self.process.stdin
        self.stdout: IO[str] = self.process.stdout

    def call(self, op: str, timeout: float) -> dict[str, Any]:
        self.stdin.write(json.dumps({"op": op}) + "\n")
        self.stdin.flush()
        with selectors.DefaultSelector() as selector:
            selector.register(self.stdout, selectors.EVENT_READ)
            if not selector.select(timeout):
                self.kill()
                raise PeerError(f"{self.side}: `{op}` gave no answer within {timeout:.0f} s "
                                f"(driver killed); see {self.log}")
        line = self.stdout.readline()
        if not line:
            raise PeerError(f"{self.side}: the driver ended during `{op}` "
                            f"(exit {self.process.wait(10)}); see {self.log}")
        reply: dict[str, Any] = json.loads(line)
        if not reply.pop("ok"):
            raise PeerError(f"{self.side}: `{op}` failed:\n{reply['error']}")
        return reply

    def stop(self) -> None:
        try:
            if self.process.poll() is None:
                self.call("stop", 120)
            self.process.wait(30)
        except (PeerError, OSError, subprocess.TimeoutExpired):
            self.kill()

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)


class Floor:
    """The floor of bench_hello and bench_run_many, as a side: a fresh Python reading a JSON
    request and writing a JSON response, the least a task in a process of its own costs."""

    side = "floor"

    def __init__(self, folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        self.command = floor_command(folder)

    def call(self, op: str, timeout: float) -> dict[str, Any]:
        started = time.perf_counter()
        if op == "one":
            run_process(self.command)
        else:
            with ThreadPoolExecutor(2) as pool:
                list(pool.map(lambda _: run_process(self.command), range(MANY)))
        return {"seconds": time.perf_counter() - started}

    def stop(self) -> None:
        pass


def _load() -> float:
    """The 1-minute load average: the machine is shared, so figures come with it."""
    return os.getloadavg()[0]


def _alternate(drivers: dict[str, Driver | Floor], ops: dict[str, str], rounds: int,
               timeout: float, failed: dict[str, str]) -> dict[str, float]:
    """Each round runs every side once, in turn; returns each side's median seconds.

    A peer that fails is dropped (and its reason kept in `failed`); hqs-sdk or the floor
    failing ends the benchmark.
    """
    times: dict[str, list[float]] = {key: [] for key in ops}
    for _ in range(rounds):
        for key, op in ops.items():
            side = key.split(":")[0]
            if side in failed:
                continue
            try:
                times[key].append(drivers[side].call(op, timeout)["seconds"])
            except PeerError as exc:
                if side in ("hqs", "floor"):
                    raise
                failed[side] = str(exc)
    return {key: statistics.median(values) for key, values in times.items()
            if values and key.split(":")[0] not in failed}


def _tasks_part(samples: int, python: Path, failed: dict[str, str], folder: Path,
                hqs_env: dict[str, str]) -> list[dict[str, Any]]:
    env = dict(os.environ, PATH=f"{python.parent}{os.pathsep}{os.environ.get('PATH', '')}",
               PYTHONPATH=str(HERE), PYTHONUNBUFFERED="1")
    drivers: dict[str, Driver | Floor] = {"floor": Floor(folder / "floor")}
    starts: dict[str, dict[str, Any]] = {}
    try:
        drivers["hqs"] = Driver("hqs", Path(sys.executable), folder / "hqs", hqs_env)
        starts["hqs"] = drivers["hqs"].call("start", 300)
        for peer in ("submitit", "parsl"):
            if peer in failed:
                continue
            drivers[peer] = Driver(peer, python, folder / peer, env)
            try:
                starts[peer] = drivers[peer].call("start", 300)
            except PeerError as exc:
                failed[peer] = str(exc)
        hqs = starts["hqs"]
        install = (f"hqs-sdk {hqs['version']} {'EDITABLE' if hqs['editable'] else 'non-editable'}"
                   f" ({hqs['location']})")
        if hqs["editable"]:
            print(f"warning: {install}: editable installs add start-up cost users do not pay",
                  file=sys.stderr)
        loads = [_load()]
        one_ops = {side: "one" for side in drivers}
        one_ops["submitit:polled"] = "one_polled"
        one = _alternate(drivers, one_ops, samples, 120, failed)
        loads.append(_load())
        rounds = max(2, samples // 5)
        many = _alternate(drivers, {side: "many" for side in drivers}, rounds, 900, failed)
        loads.append(_load())
    finally:
        for driver in drivers.values():
            driver.stop()
    records = []
    note = f"median of {samples}; load {loads[0]:.2f}->{loads[1]:.2f}"
    ms = {key: seconds * 1000 for key, seconds in one.items()}
    records.append(result("peers: 1 task vs floor (fresh python, JSON)", ms["hqs"], "ms",
                          ms["floor"], None, f"{note}; {install}"))
    if "submitit" in ms:
        records.append(result("peers: 1 task end to end vs submitit local", ms["hqs"], "ms",
                              ms["submitit"], None,
                              f"{note}; submitit {starts['submitit']['version']}, whose "
                              "result() checks once a second"))
        records.append(result("peers: 1 task vs submitit, done() every 10 ms", ms["hqs"], "ms",
                              ms["submitit:polled"], None,
                              "informational: submitit without its 1 s wait"))
    if "parsl" in ms:
        records.append(result("peers: 1 task end to end vs Parsl HTEX", ms["hqs"], "ms",
                              ms["parsl"], None,
                              f"{note}; parsl {starts['parsl']['version']}, started once, "
                              "2 workers"))
        records.append(result("peers: Parsl HTEX start-up (load + 1st task)",
                              starts["parsl"]["seconds"], "s", None, None,
                              f"parsl.load {starts['parsl']['load']:.2f} s, then the first task "
                              f"{starts['parsl']['first']:.2f} s (workers starting)"))
    note = f"median of {rounds}; load {loads[1]:.2f}->{loads[2]:.2f}"
    records.append(result(f"peers: {MANY} tasks, 2 cores vs {MANY} floors", many["hqs"], "s",
                          many["floor"], None, f"{note}; floor processes 2 at a time"))
    if "submitit" in many:
        records.append(result(f"peers: {MANY} tasks, 2 cores vs submitit local", many["hqs"], "s",
                              many["submitit"], None,
                              f"{note}; submitit starts all {MANY} job processes at once"))
    if "parsl" in many:
        records.append(result(f"peers: {MANY} tasks, 2 cores vs Parsl HTEX", many["hqs"], "s",
                              many["parsl"], None,
                              f"{note}; Parsl runs them in its 2 long-lived workers"))
    return records


def _json_from(command: list[str], env: dict[str, str], timeout: float) -> dict[str, Any]:
    """The JSON that a script prints last; its stderr goes into the error if it fails."""
    done = subprocess.run(command, env=env, timeout=timeout, capture_output=True, text=True)
    if done.returncode:
        raise PeerError(f"{' '.join(command[:3])} ... exited {done.returncode}:\n"
                        f"{done.stderr[-3000:]}")
    reply: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return reply


def _cache_part(samples: int, python: Path, folder: Path, hqs_env: dict[str, str],
                failed: dict[str, str]) -> list[dict[str, Any]]:
    import bench_cache_hit

    env = dict(os.environ, PYTHONPATH=str(HERE))
    folder.mkdir(parents=True, exist_ok=True)
    db, store = folder / "hqs.db", folder / "joblib"
    print(f"peers: filling an SQLite cache and a joblib Memory with {ENTRIES:,} entries each ...",
          file=sys.stderr, flush=True)
    started = time.perf_counter()
    subprocess.run([sys.executable, "-c", bench_cache_hit.FILL, str(db), str(ENTRIES)],
                   check=True, timeout=1800, env=hqs_env)
    hqs_fill = time.perf_counter() - started
    started = time.perf_counter()
    try:
        subprocess.run([str(python), str(DRIVER), "joblib-fill", str(store), str(ENTRIES)],
                       check=True, timeout=1800, env=env)
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as exc:
        failed["joblib"] = f"filling its Memory failed: {exc}"
        return []
    joblib_fill = time.perf_counter() - started
    load_start = _load()
    ours: list[float] = []
    bare: list[float] = []
    theirs: list[float] = []
    for _ in range(max(3, samples // 5)):
        served = _json_from([sys.executable, "-c", bench_cache_hit.SERVE, str(db), str(CALLS)],
                            hqs_env, 600)
        ours.append(served["per_call"])
        bare.append(served["bare"])
        try:
            theirs.append(_json_from([str(python), str(DRIVER), "joblib-serve", str(store),
                                      str(CALLS)], env, 600)["per_call"])
        except (PeerError, subprocess.TimeoutExpired) as exc:
            failed["joblib"] = str(exc)
            return []
    hqs_us, joblib_us = statistics.median(ours) * 1e6, statistics.median(theirs) * 1e6
    print("peers: removing the filled caches ...", file=sys.stderr, flush=True)
    return [result(f"peers: cache hit, {ENTRIES:,} entries vs joblib", hqs_us, "us", joblib_us,
                   None, f"median of {len(ours)} re-runs of {CALLS:,} hits; bare SELECT "
                   f"{statistics.median(bare) * 1e6:.1f} us; fill {hqs_fill:.0f} s (ours) vs "
                   f"{joblib_fill:.0f} s (joblib {PINS['joblib'].split('==')[1]}); "
                   f"load {load_start:.2f}->{_load():.2f}")]


def _missed(peer: str, reason: str) -> dict[str, Any]:
    print(f"peers: {peer} not measured: {reason}", file=sys.stderr)
    record = result(f"peers: {peer}", float("nan"), "", None, None,
                    f"not measured: {reason.splitlines()[0]}")
    record["passed"] = False
    return record


def run(samples: int) -> list[dict[str, Any]]:
    """The peers' records for bench/run.py: ours against each peer, from one run."""
    python, failed = ensure_venv()
    records: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="hqs-peers-") as tmp:
        folder = Path(tmp)
        # hqs-sdk's own files (the record of caches opened, hashes) stay in this run's folder:
        # the benchmark's caches are not the user's, and no tool of theirs should open them.
        hqs_env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
        hqs_env["XDG_CACHE_HOME"] = str(folder / "xdg-cache")
        records += _tasks_part(samples, python, failed, folder / "tasks", hqs_env)
        if "joblib" not in failed:
            records += _cache_part(samples, python, folder / "cache", hqs_env, failed)
    records += [_missed(peer, reason) for peer, reason in failed.items()]
    return records


if __name__ == "__main__":
    import run as bench_run

    sys.argv[1:1] = ["peers"]
    sys.exit(bench_run.main())
