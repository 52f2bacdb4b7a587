"""``hqs-task-execute``: run one task execution from a control folder.

Every backend runs tasks through this command, so a task behaves the same everywhere::

    hqs-task-execute CONTROL_DIR [--lock-fd N] [--slots DIR --slot-count N]

``CONTROL_DIR/request.json`` holds the request. The command writes, in the same folder:

- ``pid`` (supervisor pid and start time), ``state`` (``queued`` then ``running``);
- ``log.txt``: the task's stdout and stderr (its subprocesses' too);
- ``progress.json``: the last :func:`hqs_sdk.progress` report;
- ``result.json``: the task's output or error, written by the process that ran it;
- ``response.json``: the final response with output or error report, log tail and metrics.

These files, the lock and what a backend does with them are the protocol documented in
:mod:`hqs_sdk.control`, whose :class:`~hqs_sdk.control.ControlFolder` backends build on.

The task runs in a forked child in its own process group, with ``CONTROL_DIR/files`` as its
working directory; this process supervises it: it enforces the timeout and the memory limit
(killing the whole group), turns SIGTERM into a cancellation, and measures wall time, CPU
time and peak memory. With ``HQS_SDK_WORKER_SIGTERM=exit`` in its environment (set by
schedulers' batch scripts), a SIGTERM without a ``cancel`` file in the folder is the
scheduler's (time limit, preemption, node failure): the worker stops the task and exits with
code 143 without a response, so the job can be requeued and the backend reports the
scheduler's reason. An exclusive ``flock`` on ``CONTROL_DIR/lock`` is held for the whole
run, so at most one worker ever runs an execution, and a backend can tell a live worker from
a dead one. With ``--slots``, the worker first takes ``ceil(vcpu)`` of ``--slot-count`` lock
files in that folder, so executions beyond the machine's cores wait their turn (state
``queued``) even across clients.

The task sees only the environment its backend gives it: backends build it with
:func:`task_environment` (an allow-list; never a token or a password). As a second line, the
task's process also drops the variables that hold the SDK's own credentials
(:data:`NEVER_PASSED`), whatever the backend left in.

Imports are kept to the standard library on this path: start-up time is part of every task.
"""

from __future__ import annotations

import contextlib
import fcntl
import fnmatch
import json
import math
import os
import select
import signal
import sys
import time
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

from hqs_sdk import control as _control
from hqs_sdk.control import CONTROL_DIR_ENV, ControlFolder
from hqs_sdk.control import SIGTERM_ENV as _SIGTERM_ENV
from hqs_sdk.control import error_response as _error_response
from hqs_sdk.control import response_from_result as _response_from_result
from hqs_sdk.control import write_atomically as _write_atomically

_KILL_GRACE_S = 2.0
_MEMORY_SAMPLE_S = 0.1

# Helpers that moved to hqs_sdk.control: importable from here, with a DeprecationWarning.
_MOVED_TO_CONTROL = frozenset({
    "LOG_TAIL_BYTES", "SIGTERM_ENV", "error_response", "log_tail", "process_start_time",
    "response_from_result", "write_atomically",
})


def __getattr__(name: str) -> Any:
    """The helpers that moved to :mod:`hqs_sdk.control`, with a DeprecationWarning."""
    if name in _MOVED_TO_CONTROL:
        import warnings

        warnings.warn(f"hqs_sdk.worker.{name} moved to hqs_sdk.control; import it from there "
                      f"(from hqs_sdk.control import {name})", DeprecationWarning, stacklevel=2)
        return getattr(_control, name)
    raise AttributeError(f"module 'hqs_sdk.worker' has no attribute {name!r}")

#: What a task inherits from the environment of the process that starts its worker (a user's
#: script, the service): enough to run Python and the programs it calls, find its packages and
#: libraries, speak the user's locale, and size its thread pools. Shell-style patterns.
TASK_ENV_ALLOW: tuple[str, ...] = (
    # running programs, as this user, in this locale and time zone
    "PATH", "HOME", "USER", "LOGNAME", "SHELL", "LANG", "LANGUAGE", "LC_*", "TZ",
    "TMPDIR", "TEMP", "TMP", "XDG_CACHE_HOME",
    # finding Python's packages and native libraries (what imports need)
    "PYTHONPATH", "PYTHONHOME", "PYTHONUSERBASE", "PYTHONNOUSERSITE", "PYTHONSAFEPATH",
    "PYTHONDONTWRITEBYTECODE", "PYTHONPYCACHEPREFIX", "PYTHONUTF8", "PYTHONIOENCODING",
    "PYTHONUNBUFFERED", "PYTHONHASHSEED", "PYTHONWARNINGS", "PYTHONFAULTHANDLER",
    "VIRTUAL_ENV", "CONDA_PREFIX", "CONDA_DEFAULT_ENV", "LD_LIBRARY_PATH",
    # thread pools and devices (set to the task's vcpu by the worker when unset)
    "OMP_*", "OPENBLAS_NUM_THREADS", "MKL_*", "NUMEXPR_*", "VECLIB_MAXIMUM_THREADS",
    "CUDA_VISIBLE_DEVICES", "NVIDIA_VISIBLE_DEVICES", "ROCR_VISIBLE_DEVICES",
    # TLS trust for the files a task reads over HTTPS
    "SSL_CERT_FILE", "SSL_CERT_DIR", "REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE",
    # proxies: passed only without a user name or password in them (see task_environment)
    "HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY", "http_proxy", "https_proxy", "no_proxy",
    # the worker's own settings
    "HQS_SDK_DISABLE_PLUGINS", "HQS_SDK_FORK_SERVER_IDLE", "HQS_SDK_WORKER_SIGTERM",
    "HQS_SDK_FETCH_POLICY",
)

#: Never inherited, even when an operator's or user's extra pattern matches them: credentials
#: (the SDK's token, anything named like a token, password, secret or key) and the service's
#: own settings. Case-insensitive. A task that needs one gets it only by value, on purpose
#: (``BackendConfigurationLocal(env={...})``).
NEVER_INHERITED: tuple[str, ...] = (
    "HQS_SDK_TOKEN", "*TOKEN*", "*PASSWORD*", "*PASSWD*", "*SECRET*", "*CREDENTIAL*",
    "*API_KEY*", "*PRIVATE_KEY*", "*ACCESS_KEY*", "*AUTH*", "*COOKIE*", "*SESSION*",
    "*DATABASE_URL*", "HQS_SDK_SERVER_*", "SSH_AUTH_SOCK",
)

#: Removed from the task's environment by the worker itself, whatever its backend passed.
NEVER_PASSED: tuple[str, ...] = ("HQS_SDK_TOKEN",)

#: Set by the service in the environment of the tasks it runs (test-only tasks refuse to run).
SERVICE_ENV = "HQS_SDK_UNDER_SERVICE"


def _matches(name: str, patterns: Iterable[str], fold: bool = False) -> bool:
    if fold:
        name = name.upper()
        return any(fnmatch.fnmatchcase(name, p.upper()) for p in patterns)
    return any(fnmatch.fnmatchcase(name, p) for p in patterns)


def is_secret_name(name: str) -> bool:
    """True for a variable a task never inherits (see :data:`NEVER_INHERITED`)."""
    return _matches(name, NEVER_INHERITED, fold=True)


def check_pass_env(names: Iterable[str]) -> tuple[str, ...]:
    """Validate extra allow-list entries; raise ``ValueError`` naming a bad one.

    An exact name that :func:`is_secret_name` refuses is an error (a pattern that also
    matches such names is fine: those are skipped)."""
    checked = []
    for name in names:
        if not isinstance(name, str) or not name or "=" in name:
            raise ValueError(f"{name!r} is not an environment variable name or pattern")
        if not any(c in name for c in "*?[") and is_secret_name(name):
            raise ValueError(
                f"{name} looks like a credential, and tasks never inherit those; if a task "
                "really needs it, give it its value explicitly (the backend's env setting)")
        checked.append(name)
    return tuple(checked)


def task_environment(source: Mapping[str, str], pass_env: Iterable[str] = (),
                     set_env: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment a task runs with: the allowed part of ``source``, then ``set_env``.

    ``source`` is the starting process's environment; a variable of it is kept when its name
    matches :data:`TASK_ENV_ALLOW` or ``pass_env`` (shell-style patterns) and not
    :data:`NEVER_INHERITED`; a proxy variable is kept only without credentials in its URL.
    ``set_env`` (explicit values) is added as given, except :data:`NEVER_PASSED`.
    """
    allow = (*TASK_ENV_ALLOW, *pass_env)
    env = {}
    for name, value in source.items():
        if not _matches(name, allow) or is_secret_name(name):
            continue
        if name.lower().endswith("_proxy") and "@" in value:
            continue  # http://user:password@proxy/
        env[name] = value
    for name, value in (set_env or {}).items():
        if name not in NEVER_PASSED:
            env[name] = value
    return env


class _Outcome(Exception):
    """Ends supervision with a final state and an error report."""

    def __init__(self, state: str, kind: str, type_: str, message: str) -> None:
        super().__init__(message)
        self.state, self.kind, self.type, self.message = state, kind, type_, message


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat()


# -- task resolution -----------------------------------------------------------------------


def _resolve(request: dict[str, Any]) -> Any:
    from hqs_sdk.tasks import Task

    name, version, ref = request["task_name"], request["task_version"], request.get("task_ref")
    task = None
    if ref:
        import importlib

        module_name, _, attr_path = ref.partition(":")
        try:
            obj: Any = importlib.import_module(module_name)
            for part in attr_path.split("."):
                obj = getattr(obj, part)
            if isinstance(obj, Task) and obj.name == name:
                task = obj
        except (ImportError, AttributeError):
            task = None
    if task is None:
        from hqs_sdk.plugins import registry

        task = registry().tasks.get(name)
        if task is None:
            known = ", ".join(sorted(registry().tasks)) or "none"
            raise _Outcome(
                "failed", "unknown_task", "UnknownTask",
                f"this worker has no task named {name!r} (tasks installed here: {known}); "
                "install the package that provides it where the worker runs",
            )
    have = task.version
    if have != version:
        raise _Outcome(
            "failed", "version_mismatch", "VersionMismatch",
            f"the worker has version {have} of task {name!r}, but version {version} was "
            f"requested; install version {version} where the worker runs, or update the client "
            f"package to {have}",
        )
    return task


# -- slots ---------------------------------------------------------------------------------


def _take_slots(slots_dir: str, count: int, needed: int, cancelled: list[bool]) -> list[int]:
    os.makedirs(slots_dir, exist_ok=True)
    fds = [os.open(os.path.join(slots_dir, f"slot-{i}"), os.O_RDWR | os.O_CREAT, 0o644)
           for i in range(count)]
    pause = 0.005
    while True:
        got: list[int] = []
        for index, fd in enumerate(fds):
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                continue
            got.append(index)
            if len(got) == needed:
                for other, other_fd in enumerate(fds):
                    if other not in got:
                        os.close(other_fd)
                return got
        for index in got:
            fcntl.flock(fds[index], fcntl.LOCK_UN)
        if cancelled[0]:
            raise _Outcome("cancelled", "cancelled", "Cancelled", "cancelled while queued")
        time.sleep(pause)
        pause = min(pause * 1.5, 0.2)


# -- the child ----------------------------------------------------------------------------


def _run_child(task: Any, request: dict[str, Any], control: str, cpus: list[int] | None) -> None:
    """Runs in the forked child; never returns."""
    code = 0
    try:
        _enter_task_process(request, control, cpus)
        _write_atomically(os.path.join(control, _control.RESULT),
                          _task_result(task, request["input"]))
    except BaseException:
        code = 70
    finally:
        try:
            sys.stdout.flush()
            sys.stderr.flush()
        finally:
            os._exit(code)


def _enter_task_process(request: dict[str, Any], control: str, cpus: list[int] | None) -> None:
    """Make the forked child the task's process: its own group, default SIGTERM, output to
    ``log.txt``, ``files/`` as working directory, the task's environment and CPUs."""
    os.setpgid(0, 0)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGTERM})
    signal.set_wakeup_fd(-1)
    log_fd = os.open(os.path.join(control, _control.LOG),
                     os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.dup2(log_fd, 1)
    os.dup2(log_fd, 2)
    os.close(log_fd)
    files = os.path.join(control, _control.FILES)
    os.makedirs(files, exist_ok=True)
    os.chdir(files)
    for name in NEVER_PASSED:
        os.environ.pop(name, None)
    os.environ[CONTROL_DIR_ENV] = control
    vcpu = (request.get("provisioning") or {}).get("vcpu")
    if vcpu:
        threads = str(max(1, math.ceil(vcpu)))
        for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
            os.environ.setdefault(var, threads)
    if cpus:
        os.sched_setaffinity(0, cpus)


def _task_result(task: Any, task_input: Any) -> str:
    """Run the task; the text of ``result.json``: its output, or its failure reported."""
    try:
        output = task.execute(task_input)
        return json.dumps({"ok": True, "output": output}, allow_nan=False)
    except BaseException as exc:  # the task's own failure, reported, never re-raised
        import traceback

        kind = "out_of_memory" if isinstance(exc, MemoryError) else "task_error"
        return json.dumps({"ok": False, "error": {
            "type": f"{type(exc).__module__}.{type(exc).__qualname__}",
            "message": str(exc), "traceback": traceback.format_exc(), "kind": kind}})


# -- supervision --------------------------------------------------------------------------


def _group_rss_mb(pgid: int) -> float:
    total = 0
    page = os.sysconf("SC_PAGE_SIZE")
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rpartition(")")[2].split()
        except OSError:
            continue
        if len(fields) > 22 and int(fields[2]) == pgid:
            total += int(fields[21]) * page
    return total / (1024 * 1024)


def _kill_group(pgid: int, pidfd: int) -> None:
    try:
        os.killpg(pgid, signal.SIGTERM)
    except ProcessLookupError:
        return
    if not select.select([pidfd], [], [], _KILL_GRACE_S)[0]:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pgid, signal.SIGKILL)


class _Limits:
    """The request's timeout and memory limit, checked while the task runs."""

    def __init__(self, provisioning: dict[str, Any]) -> None:
        self.timeout = provisioning.get("timeout_s")
        self.memory = provisioning.get("memory_mb")
        self.deadline = time.monotonic() + self.timeout if self.timeout else None
        self.peak_mb = 0.0

    def wait_ms(self) -> int | None:
        """How long to wait for the task before the next check (None: until it ends)."""
        waits = []
        if self.deadline is not None:
            waits.append(max(0.0, self.deadline - time.monotonic()))
        if self.memory:
            waits.append(_MEMORY_SAMPLE_S)
        return int(min(waits) * 1000) if waits else None

    def exceeded(self, pgid: int) -> _Outcome | None:
        """The outcome of a limit the task's group exceeds now (killed already), or None."""
        if self.deadline is not None and time.monotonic() >= self.deadline:
            return _Outcome(
                "timed_out", "timeout", "TimeoutExpired",
                f"the task ran longer than its timeout of {self.timeout:g} s and was stopped",
            )
        if self.memory:
            rss = _group_rss_mb(pgid)
            self.peak_mb = max(self.peak_mb, rss)
            if rss > self.memory:
                os.killpg(pgid, signal.SIGKILL)
                return _Outcome(
                    "failed", "out_of_memory", "MemoryLimitExceeded",
                    f"the task used {rss:.0f} MiB, more than its memory limit of {self.memory} "
                    "MiB, and was stopped; give it more with scoped_config(memory_mb=...)",
                )
        return None


def _supervise(pid: int, provisioning: dict[str, Any], cancelled: list[bool],
               wakeup_r: int) -> tuple[_Outcome | None, int, Any, float]:
    """Wait for the child; enforce timeout, memory and cancellation. Returns the outcome."""
    pidfd = os.pidfd_open(pid)
    poller = select.poll()
    poller.register(pidfd, select.POLLIN)
    poller.register(wakeup_r, select.POLLIN)
    limits = _Limits(provisioning)
    outcome: _Outcome | None = None
    while True:
        ready = [fd for fd, _ in poller.poll(limits.wait_ms())]
        if pidfd in ready:
            break
        if wakeup_r in ready:
            os.read(wakeup_r, 512)
        if cancelled[0]:
            outcome = _Outcome("cancelled", "cancelled", "Cancelled",
                               "the execution was cancelled while running")
        else:
            outcome = limits.exceeded(pid)
        if outcome is not None:
            _kill_group(pid, pidfd)
            break
    _, status, usage = os.wait4(pid, 0)
    os.close(pidfd)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGKILL)  # whatever the task left running in its group
    return outcome, status, usage, limits.peak_mb


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


def _stopped_by_scheduler(control: str, cancelled: list[bool], status: int | None = None
                          ) -> bool:
    """A SIGTERM the user did not ask for, under a scheduler that reports its own reason."""
    if (os.environ.get(_SIGTERM_ENV) != "exit"
            or os.path.exists(os.path.join(control, _control.CANCEL))):
        return False
    return cancelled[0] or (status is not None and os.WIFSIGNALED(status)
                            and os.WTERMSIG(status) == signal.SIGTERM)


def _take_lock(folder: ControlFolder) -> bool:
    """Lock the execution for this process (held until it exits); False if another has it."""
    lock_fd = os.open(folder.file(_control.LOCK), os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(lock_fd)
        return False
    return True


def _finished_before(folder: ControlFolder) -> bool:
    """True if an earlier worker ran this execution (completing its response if needed)."""
    if folder.exists(_control.RESPONSE):
        return True
    if not folder.exists(_control.RESULT):
        return False
    # A previous worker ran the task but died before writing the response: never run twice.
    with open(folder.file(_control.RESULT)) as f:
        result = json.load(f)
    with open(folder.file(_control.REQUEST)) as f:
        execution_id = json.load(f)["execution_id"]
    folder.write_response(_response_from_result(execution_id, result, folder.path, {}))
    return True


def _cancel_on_sigterm(cancelled: list[bool]) -> int:
    """Make SIGTERM set ``cancelled[0]`` and wake the supervisor; return the wake-up fd."""
    wakeup_r, wakeup_w = os.pipe()
    os.set_blocking(wakeup_w, False)
    signal.set_wakeup_fd(wakeup_w)
    signal.signal(signal.SIGTERM, lambda *_: cancelled.__setitem__(0, True))
    return wakeup_r


def _read_request(folder: ControlFolder) -> tuple[dict[str, Any], str]:
    """The request and its execution id; a failed outcome if they cannot be read."""
    try:
        with open(folder.file(_control.REQUEST)) as f:
            request: dict[str, Any] = json.load(f)
        return request, request["execution_id"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise _Outcome("failed", "bad_request", "BadRequest",
                       f"cannot read the request in {folder.path}: {exc}") from exc


def _wait_for_slots(folder: ControlFolder, provisioning: dict[str, Any], slots_dir: str | None,
                    slot_count: int | None, cancelled: list[bool]) -> list[int] | None:
    """Take the task's CPU slots (state ``queued`` meanwhile); the CPUs to pin it to, if any."""
    if not (slots_dir and slot_count):
        return None
    needed = max(1, math.ceil(provisioning.get("vcpu") or 1))
    if needed > slot_count:
        raise _Outcome(
            "failed", "bad_request", "ProvisioningError",
            f"the task asks for {provisioning.get('vcpu')} vcpu but only {slot_count} "
            "are available here; ask for fewer with scoped_config(vcpu=...)",
        )
    folder.set_state("queued")
    taken = _take_slots(slots_dir, slot_count, needed, cancelled)
    available = sorted(os.sched_getaffinity(0))
    return [available[i] for i in taken] if len(available) == slot_count else None


def _start_child(task: Any, request: dict[str, Any], control: str, cpus: list[int] | None
                 ) -> int:
    """Fork the process that runs the task, in a process group of its own; return its pid."""
    # SIGTERM waits until the child has its default action back: arriving in between, the
    # handler it inherits would only set a flag in the child, and the task would run on until
    # the grace period's SIGKILL.
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})
    try:
        pid = os.fork()
        if pid == 0:
            _run_child(task, request, control, cpus)
    finally:  # the parent's; the child never returns from _run_child
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGTERM})
    # The task's own process group, which a cancel or a timeout stops as a whole, must exist
    # before anything can signal it: made from both sides, as shells do. (Made by the child
    # alone, a cancel right after the fork found no group, took the task for gone and waited
    # for it forever.)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.setpgid(pid, pid)
    return pid


def _metrics(queued_at: float, started: float, usage: Any, peak_mb: float) -> dict[str, Any]:
    finished = time.time()
    return {
        "wall_time_s": round(finished - started, 6),
        "cpu_time_s": round(usage.ru_utime + usage.ru_stime, 6),
        "peak_memory_mb": round(max(peak_mb, usage.ru_maxrss / 1024), 3),
        "queued_s": round(started - queued_at, 6),
        "started_at": _iso(started), "finished_at": _iso(finished),
    }


def _read_result(folder: ControlFolder, cancelled: list[bool], status: int
                 ) -> dict[str, Any] | None:
    """The task's ``result.json``; None when a scheduler stopped it (exit 143, no response).

    Without a result, raises the outcome that explains why: a cancel, a signal, an exit.
    """
    result = folder.read_result()
    if result is not None:
        return result
    if _stopped_by_scheduler(folder.path, cancelled, status):
        return None
    if cancelled[0] or folder.exists(_control.CANCEL):
        # A scheduler may signal every process of the job at once (Slurm's scancel), so the
        # task can die before this process sees its own signal.
        raise _Outcome("cancelled", "cancelled", "Cancelled",
                       "the execution was cancelled while running")
    if os.WIFSIGNALED(status):
        sig = _signal_name(os.WTERMSIG(status))
        raise _Outcome(
            "failed", "killed", "WorkerKilled",
            f"the task's process was killed by {sig} before it finished; SIGKILL most often "
            "comes from the kernel's out-of-memory killer: give the task more memory "
            "(scoped_config(memory_mb=...)) or check the system log",
        )
    raise _Outcome(
        "failed", "worker_lost", "WorkerError",
        f"the task's process exited with code {os.waitstatus_to_exitcode(status)} without a "
        "result; see log.txt in the control folder",
    )


def execute(control: str, lock_fd: int | None = None, slots_dir: str | None = None,
            slot_count: int | None = None) -> int:
    """Run the execution in ``control``; return the process exit code.

    ``lock_fd`` is the execution's lock, taken and handed over by the starter; without it
    this process takes the lock itself (see :mod:`hqs_sdk.control`).
    """
    folder = ControlFolder(control)
    if lock_fd is None and not _take_lock(folder):
        return 0  # another worker runs this execution
    if _finished_before(folder):
        return 0
    folder.write_pid()
    execution_id = folder.execution_id
    cancelled = [False]
    wakeup_r = _cancel_on_sigterm(cancelled)
    queued_at = time.time()
    metrics: dict[str, Any] = {}
    try:
        request, execution_id = _read_request(folder)
        if folder.exists(_control.CANCEL):
            cancelled[0] = True
            raise _Outcome("cancelled", "cancelled", "Cancelled", "cancelled before it started")
        task = _resolve(request)
        provisioning = request.get("provisioning") or {}
        cpus = _wait_for_slots(folder, provisioning, slots_dir, slot_count, cancelled)
        folder.set_state("running")
        started = time.time()
        pid = _start_child(task, request, folder.path, cpus)
        outcome, status, usage, peak_mb = _supervise(pid, provisioning, cancelled, wakeup_r)
        metrics = _metrics(queued_at, started, usage, peak_mb)
        if outcome is not None:
            raise outcome
        result = _read_result(folder, cancelled, status)
        if result is None:
            return 143
        folder.write_response(_response_from_result(execution_id, result, folder.path, metrics))
    except _Outcome as outcome:
        if outcome.state == "cancelled" and _stopped_by_scheduler(folder.path, cancelled):
            return 143
        folder.write_response(_error_response(
            execution_id, outcome.state, outcome.kind, outcome.type, outcome.message,
            folder.path, metrics))
    return 0


def main(argv: list[str] | None = None) -> int:
    """Console entry point of ``hqs-task-execute``."""
    args = list(sys.argv[1:] if argv is None else argv)
    usage = ("usage: hqs-task-execute CONTROL_DIR [--lock-fd N] [--slots DIR --slot-count N]")
    options: dict[str, str] = {}
    positional: list[str] = []
    while args:
        arg = args.pop(0)
        if arg in ("-h", "--help"):
            print(__doc__)
            return 0
        if arg in ("--lock-fd", "--slots", "--slot-count"):
            if not args:
                print(f"{usage}\n{arg} needs a value", file=sys.stderr)
                return 2
            options[arg] = args.pop(0)
        elif arg.startswith("-"):
            print(f"{usage}\nunknown option {arg}", file=sys.stderr)
            return 2
        else:
            positional.append(arg)
    if len(positional) != 1 or not os.path.isdir(positional[0]):
        print(f"{usage}\nCONTROL_DIR must be an existing folder with request.json",
              file=sys.stderr)
        return 2
    lock_fd = int(options["--lock-fd"]) if "--lock-fd" in options else None
    slot_count = int(options["--slot-count"]) if "--slot-count" in options else None
    return execute(positional[0], lock_fd, options.get("--slots"), slot_count)


if __name__ == "__main__":
    sys.exit(main())
