"""An execution's control folder: the protocol between a backend and ``hqs-task-execute``.

Every backend runs tasks through the worker command ``hqs-task-execute`` (:mod:`hqs_sdk.worker`),
and talks to it only through files in one folder per execution, the *control folder*. This
module is that protocol, for backends to build on: :class:`ControlFolder` prepares a folder,
starts the worker (or describes its command line for a backend that starts processes
elsewhere, as a batch scheduler does), reads state, progress and response, cancels, and builds
the response of a worker that vanished. The local backend (``hqs_sdk_local``) is built on it.

Files of a control folder
-------------------------

Each entry: the file, who writes it and when, what it holds.

``request.json``
    The backend, before the start, once (:meth:`ControlFolder.prepare`): the
    :class:`~hqs_sdk.models.TaskExecutionRequest` in wire form (``converter.unstructure``).
``lock``
    Created by the backend (or the worker); empty. An exclusive ``flock`` on it is held by the
    live worker: see *The lock* below.
``submitted``
    The backend, after the start (or after handing the execution to a queue of its own): an
    empty marker that the submission is complete. A folder with neither it nor ``pid`` is
    still being submitted by some client, for :data:`SUBMIT_GRACE_S` at most.
``pid``
    The worker, as it starts: ``"<pid> <start time>"``, the supervisor's pid and its kernel
    start time (field 22 of ``/proc/<pid>/stat``, which guards against pid reuse). The process
    a cancel signals.
``state``
    The worker: ``queued`` (waiting for CPU slots), then ``running`` (the task runs).
``progress.json``
    The task, through :func:`hqs_sdk.progress`: ``{"fraction": float | null, "message": str}``,
    its last progress report.
``log.txt``
    The task: its stdout and stderr (and its subprocesses').
``files/``
    The task's working directory: the files its output refers to.
``result.json``
    The task's process, when the task returns or raises: ``{"ok": true, "output": ...}`` or
    ``{"ok": false, "error": {"type", "message", "traceback", "kind"}}``.
``response.json``
    The worker, at its end (or a backend, for a worker that vanished or a cancel before the
    start): the final :class:`~hqs_sdk.models.TaskExecutionResponse` in wire form (state,
    output or error, ``log_tail``, ``metrics``).
``cancel``
    The backend, on a cancel: an empty marker.
``worker.err``
    The starter: the worker's own stdout and stderr (the task's go to ``log.txt``).

Every file is replaced atomically (:func:`write_atomically`): a reader sees the old content or
the new one, never a part. ``response.json`` written by a backend (a vanished worker, a cancel
before the start) goes through :func:`write_once`, so the first writer wins and a worker that
finishes at the same moment replaces it with the real one, never the reverse.

The worker
----------

``hqs-task-execute CONTROL_DIR [--lock-fd N] [--slots DIR --slot-count N]`` runs the task in a
forked child, in its own process group, with ``CONTROL_DIR/files`` as working directory. The
worker process itself is the task's *supervisor*: it enforces the request's timeout
(``provisioning.timeout_s``, state ``timed_out``) and memory limit (``provisioning.memory_mb``,
summed over the task's process group; state ``failed``, kind ``out_of_memory``), killing the
task's whole group, and measures the metrics. A backend enforces neither; it may add its own
limits (a scheduler's) on top. With ``--slots``, the worker first takes ``ceil(vcpu)`` of
``--slot-count`` lock files in that folder (state ``queued`` meanwhile).

- **SIGTERM to the worker means cancel**: it stops the task's group (SIGTERM, then SIGKILL
  after a grace period) and writes a ``cancelled`` response. With ``HQS_SDK_WORKER_SIGTERM=exit``
  in its environment (:data:`SIGTERM_ENV`; set by a scheduler's batch script), a SIGTERM
  without a ``cancel`` file is the scheduler's (time limit, preemption): the worker exits with
  code 143 and writes no response, so the backend reports the scheduler's reason.
- **A ``cancel`` file** found before the task starts cancels it too (a backend that cannot
  signal the worker writes it, then signals what it can, e.g. ``scancel``).
- The worker never runs a task twice: with ``response.json`` present it does nothing; with
  ``result.json`` present (a worker that died after the task) it only writes the response.

The lock
--------

``CONTROL_DIR/lock`` locked (``flock(LOCK_EX)``) means **a worker is alive** for this
execution. The starter takes the lock *before* it starts the worker and hands the locked
descriptor over as the worker's fd 3 (``--lock-fd 3``), so there is no moment in which the
execution looks dead; the lock goes away with the worker's last process, however it ends
(even ``kill -9``). A worker started without ``--lock-fd`` takes the lock itself and exits at
once if another worker holds it. So "running", "finished" (a response) and "died" (no lock,
no response) are told apart without a daemon, and a repeated start starts nothing
(:func:`lock_is_free`, :meth:`ControlFolder.start`). ``flock`` locks hold on one machine; on a
shared file system (NFS) the lock is only meaningful on the node that runs the worker.

A folder without a live worker
------------------------------

No worker holds the lock and there is no response: :meth:`ControlFolder.status` tells apart

- **no folder at all**: the execution is lost (the folder was deleted, or the backend's work
  folder changed). ``FAILED``, with a message that names the folder;
  :meth:`~ControlFolder.fetch` returns a ``worker_lost`` failure saying so (and writes
  nothing), :meth:`~ControlFolder.cancel` raises :class:`~hqs_sdk.errors.BackendError`. A
  backend needs no check of its own;
- **a submission in progress**: no ``request.json`` yet, or neither ``submitted`` nor
  ``pid``: ``QUEUED`` while another client may still be submitting it, for
  :data:`SUBMIT_GRACE_S` after the folder (or its ``request.json``) was written, then
  ``FAILED`` (its client ended before it started a worker);
- **waiting in the backend's own queue**: only the backend knows that, so it says so with
  ``status(queued_elsewhere=...)``: True while its queue or executor holds the execution
  (``QUEUED``, "waiting in the backend's queue"), False once nothing of it does (``FAILED``
  then, ``submitted`` or not, so an execution whose queue went away with its client does not
  wait for ever). :meth:`FolderStatus.from_files` takes the same argument;
- otherwise **the worker died**: ``FAILED``; :meth:`~ControlFolder.fetch` writes its
  response (:func:`vanished_response`: the task's result if it finished, else
  ``worker_lost``).

A ``result.json``, a ``cancel`` marker or a response decide before any of these.

For backend authors
-------------------

A backend that runs workers on this machine::

    folder = ControlFolder(os.path.join(work_dir, request.execution_id))   # the handle
    folder.prepare(request)
    folder.start(folder.command(env=task_environment(os.environ)))   # reaped for you
    folder.mark_submitted()
    ...
    BackendStatus(*folder.status())          # states(): queued, running, or finished
    folder.fetch()                           # the TaskExecutionResponse, once finished
    folder.cancel()

The worker that :meth:`ControlFolder.start` starts (with the default spawner,
:func:`spawn_detached`) is a child of the backend's process; a thread of this module collects
its exit status when it ends, so the backend keeps no pids and no finished worker stays a
zombie. A spawner of a backend's own reaps what it starts.

A backend with a queue of its own (a pool in the client, a Dask cluster) marks the folder
submitted when its queue takes the execution, starts the worker when the queue gets to it
(:meth:`ControlFolder.start`, or :meth:`ControlFolder.command` with ``lock_fd=None``), and
passes what its queue knows to every status::

    folder.prepare(request)
    folder.mark_submitted()
    queue.put(folder)                        # the backend's queue starts the worker later
    ...
    BackendStatus(*folder.status(queued_elsewhere=queue.holds(folder)))

``queue.holds`` must stay true until a worker holds the lock: until :meth:`~ControlFolder.start`
returned, or, for a command that takes the lock itself, until that command ended. A queue
that lives in the client loses what it has not started when the client exits; the
next client's ``queue.holds`` is then False and the executions read ``FAILED``, not ``QUEUED``
for ever.

A backend that starts the worker elsewhere (a scheduler, a container) calls
:meth:`ControlFolder.command` with ``lock_fd=None`` for the command line to run there (the
worker then takes the lock itself) and reads the files the way it can (over SSH, say). What
the files *mean* does not depend on how they were read: :meth:`FolderStatus.from_files` and
:func:`vanished_response` take their contents (a mapping of file name to bytes, None for a
file that does not exist) and are what :class:`ControlFolder` itself uses; the file names are
the constants :data:`REQUEST`, :data:`RESPONSE`, ... (see the Slurm backend, ``hqs_sdk_slurm``).

Imports are kept to the standard library at module level: the worker imports this module
before every task, and its start-up time is part of every task.
"""

from __future__ import annotations

import _thread
import contextlib
import fcntl
import json
import os
import signal
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, NamedTuple

if TYPE_CHECKING:
    from hqs_sdk.models import ExecutionState, Progress, TaskExecutionRequest, TaskExecutionResponse

__all__ = [
    "CANCEL",
    "CONTROL_DIR_ENV",
    "FILES",
    "LOCK",
    "LOG",
    "LOG_TAIL_BYTES",
    "PID",
    "PROGRESS",
    "REQUEST",
    "RESPONSE",
    "RESULT",
    "SIGTERM_ENV",
    "STATE",
    "SUBMITTED",
    "SUBMIT_GRACE_S",
    "WORKER_ERR",
    "WORKER_LOCK_FD",
    "ControlFolder",
    "FolderStatus",
    "Spawner",
    "WorkerCommand",
    "error_response",
    "lock_is_free",
    "log_tail",
    "parse_json",
    "process_start_time",
    "read_json",
    "response_from_result",
    "spawn_detached",
    "vanished_response",
    "worker_program",
    "write_atomically",
    "write_once",
]

#: How much of the end of ``log.txt`` a response carries.
LOG_TAIL_BYTES = 64 * 1024
#: With the value ``exit``, a SIGTERM without a ``cancel`` file ends the worker without response.
SIGTERM_ENV = "HQS_SDK_WORKER_SIGTERM"
#: Set by the worker in the task's environment: the control folder (read by ``progress()``).
CONTROL_DIR_ENV = "HQS_SDK_CONTROL_DIR"
#: The worker's descriptor that carries the execution's lock when the starter hands it over.
WORKER_LOCK_FD = 3
#: Seconds a folder may show a submission in progress (no ``request.json`` yet, or neither
#: ``submitted`` nor ``pid``) before :meth:`ControlFolder.status` calls the execution lost.
SUBMIT_GRACE_S = 60.0

# The files of a control folder (see the module docstring).
REQUEST = "request.json"
RESPONSE = "response.json"
RESULT = "result.json"
PROGRESS = "progress.json"
STATE = "state"
PID = "pid"
LOCK = "lock"
CANCEL = "cancel"
SUBMITTED = "submitted"
LOG = "log.txt"
WORKER_ERR = "worker.err"
FILES = "files"


# -- files -------------------------------------------------------------------------------------

_TEMPORARY_FLAGS = (os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
                    | getattr(os, "O_CLOEXEC", 0))


def _temporary(path: str) -> tuple[str, int]:
    """A new private file beside ``path``: its name and an open descriptor."""
    folder, name = os.path.split(path)
    for _ in range(100):
        tmp = os.path.join(folder, f".{name}.{os.urandom(8).hex()}.tmp")
        try:
            return tmp, os.open(tmp, _TEMPORARY_FLAGS, 0o600)
        except FileExistsError:
            continue
    # 100 random 64-bit names all taken: not chance, so say where
    raise FileExistsError(f"no unused temporary name in {folder or '.'} after 100 tries "
                          f"to write {name}; check what creates .{name}.*.tmp files there")


def _write_then(path: str, text: str | bytes, durable: bool,
                finish: Callable[[str], None]) -> None:
    tmp, fd = _temporary(path)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(text.encode("utf-8") if isinstance(text, str) else text)
            if durable:
                f.flush()
                os.fsync(f.fileno())
        finish(tmp)
    finally:
        with contextlib.suppress(OSError):
            os.unlink(tmp)


def write_atomically(path: str, text: str | bytes, *, durable: bool = False) -> None:
    """Replace the file ``path`` by one holding ``text`` (UTF-8, or bytes as they are): a reader
    sees the old content or the new, never a part, and the file is private to the user (mode 600).

    The text goes to a new temporary file in the same folder, created exclusively (``O_EXCL``,
    ``O_NOFOLLOW``, mode 600, a random name: what :func:`tempfile.mkstemp` does, without
    importing it into a worker that starts for every execution), then is renamed over ``path``.
    A control folder can be on a file system that many machines share (Slurm's
    ``slurm_tmp_io``), where a name such as ``<path>.<pid>.tmp`` can be another node's file
    (pids repeat across machines) or a symbolic link someone planted. ``durable`` syncs the
    content to disk before the rename. On any failure the temporary file is removed.
    """
    _write_then(path, text, durable, lambda tmp: os.replace(tmp, path))


def write_once(path: str, data: Any) -> bool:
    """Write ``data`` as JSON to ``path`` unless the file exists; True if this call wrote it.

    Atomic like :func:`write_atomically`, but the first writer wins (a hard link cannot
    replace a file): a backend writing a response for a worker it believes gone, another
    client doing the same, or a worker finishing right now never see a partial file.
    """
    written = [False]

    def link(tmp: str) -> None:
        with contextlib.suppress(FileExistsError):
            os.link(tmp, path)
            written[0] = True

    _write_then(path, json.dumps(data, allow_nan=False), False, link)
    return written[0]


def parse_json(data: bytes | str | None) -> Any:
    """The JSON in a file's contents ``data``, or None if there are none (None) or they are not
    (yet) complete JSON."""
    if data is None:
        return None
    try:
        return json.loads(data)
    except ValueError:
        return None  # not written by write_atomically: a reader may see a partial file


def read_json(path: str) -> Any:
    """The JSON in ``path``, or None if it does not exist or is not (yet) complete JSON."""
    return parse_json(_contents(path))


def _contents(path: str) -> bytes | None:
    try:
        with open(path, "rb") as f:
            return f.read()
    except FileNotFoundError:
        return None


def lock_is_free(folder: str) -> bool:
    """True when no worker holds the execution's lock (takes and drops it at once)."""
    try:
        fd = os.open(os.path.join(folder, LOCK), os.O_RDWR | os.O_CLOEXEC)
    except FileNotFoundError:
        return True
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    finally:
        os.close(fd)
    return True


def log_tail(control: str) -> str:
    """The last :data:`LOG_TAIL_BYTES` of the task's log in the folder ``control``."""
    try:
        with open(os.path.join(control, LOG), "rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - LOG_TAIL_BYTES))
            return f.read().decode("utf-8", "replace")
    except OSError:
        return ""


def process_start_time(pid: int) -> str | None:
    """The kernel's start time of ``pid`` (guards against pid reuse), or None if gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rpartition(")")[2].split()[19]
    except (OSError, IndexError):
        return None


# -- responses ---------------------------------------------------------------------------------


def error_response(execution_id: str, state: str, kind: str, type_: str, message: str,
                   control: str | None, metrics: dict[str, Any] | None = None
                   ) -> dict[str, Any]:
    """A response (wire form) for an execution that produced no output.

    ``state`` is an :class:`~hqs_sdk.models.ExecutionState` value (``"failed"``,
    ``"cancelled"``, ``"timed_out"``), ``kind`` the error kind (``"worker_lost"``,
    ``"cancelled"``, ...), ``type_`` a short error type name; the log tail is read from the
    control folder ``control`` (a folder that does not exist gives an empty tail; None, for a
    folder this machine cannot read, gives none: the caller sets ``log_tail``).
    """
    tail = "" if control is None else log_tail(control)
    return _error(execution_id, state, kind, type_, message, tail, metrics)


def _error(execution_id: str, state: str, kind: str, type_: str, message: str, tail: str,
           metrics: dict[str, Any] | None = None) -> dict[str, Any]:
    return {
        "execution_id": execution_id, "state": state, "output": None,
        "error": {"type": type_, "message": message, "traceback": "", "kind": kind},
        "log_tail": tail, "metrics": metrics or {},
    }


def response_from_result(execution_id: str, result: dict[str, Any], control: str,
                         metrics: dict[str, Any]) -> dict[str, Any]:
    """Turn the task's ``result.json`` into a response (wire form)."""
    return _from_result(execution_id, result, log_tail(control), metrics)


def _from_result(execution_id: str, result: dict[str, Any], tail: str,
                 metrics: dict[str, Any]) -> dict[str, Any]:
    if result.get("ok"):
        return {"execution_id": execution_id, "state": "succeeded", "output": result["output"],
                "error": None, "log_tail": tail, "metrics": metrics}
    return {"execution_id": execution_id, "state": "failed", "output": None,
            "error": result["error"], "log_tail": tail, "metrics": metrics}


def vanished_response(execution_id: str, files: Mapping[str, bytes | None], tail: str,
                      where: str, ending: dict[str, Any] | None = None) -> dict[str, Any]:
    """The response (wire form) of an execution whose worker ended without writing one, from
    the contents of its control folder.

    ``files`` maps file names to their contents (None: no such file); read are
    :data:`RESULT` and :data:`CANCEL`. The first that applies: the task's result, if the task
    finished (its worker died after it); ``ending``, the backend's own account of why the
    worker ended (a scheduler's time limit or node failure, as :func:`error_response` builds
    it), which beats a ``cancel`` marker (a cancel after such an end came too late); a
    ``cancelled`` response if the folder has a ``cancel`` marker; otherwise a ``worker_lost``
    failure. ``tail`` is the log tail the response carries (``ending``'s too); ``where`` names
    the folder (and the machine, for a remote one) in the messages.
    """
    result = parse_json(files.get(RESULT))
    if isinstance(result, dict):
        return _from_result(execution_id, result, tail, {})
    if ending is not None:
        return {**ending, "log_tail": tail}
    if files.get(CANCEL) is not None:
        return _error(execution_id, "cancelled", "cancelled", "Cancelled",
                      f"cancelled; the worker ended without a response (its files are in "
                      f"{where})", tail)
    return _error(execution_id, "failed", "worker_lost", "WorkerLost",
                  "the worker process ended without a result (killed, or the machine "
                  f"restarted); its files are in {where}", tail)


# -- starting the worker -----------------------------------------------------------------------


class WorkerCommand(NamedTuple):
    """How to start the worker for one control folder.

    ``argv`` is the full command line, program first; ``env`` the complete environment;
    ``fds`` maps each descriptor the worker must have to what it must be: a path
    (``os.devnull`` for stdin, ``worker.err`` for stdout and stderr) or, for
    :data:`WORKER_LOCK_FD`, the ``lock`` file *opened and locked* (``flock(LOCK_EX)``) by the
    starter. Every other descriptor must be closed. Empty for a command that takes the lock
    itself (``lock_fd=None``), whose output the starter sends where it likes.
    """

    argv: tuple[str, ...]
    env: dict[str, str]
    fds: dict[int, str]


#: Starts a worker: ``(command, lock_fd, err_fd) -> pid``; see :func:`spawn_detached`.
Spawner = Callable[[WorkerCommand, int, int], int]


def worker_program() -> tuple[str, ...]:
    """The ``hqs-task-execute`` beside this Python, or this Python running the worker module."""
    beside = os.path.join(os.path.dirname(sys.executable), "hqs-task-execute")
    if os.access(beside, os.X_OK):
        return (beside,)
    return (sys.executable, "-m", "hqs_sdk.worker")


def spawn_detached(command: WorkerCommand, lock_fd: int, err_fd: int) -> int:
    """Start ``command`` as a detached process (a session of its own); return its pid.

    ``lock_fd`` (the locked ``lock`` file) becomes its fd 3, ``err_fd`` its stdout and stderr,
    ``/dev/null`` its stdin; nothing else is inherited. The process is a child of this one,
    and a thread of this module collects its exit status when it ends (``os.waitpid`` on its
    pid alone, every 0.1 s while such a child lives), so no finished worker stays a zombie and
    the caller need not wait for it (a caller that does may find it collected already:
    ``ChildProcessError``). Raises ``OSError`` when the program cannot be started.
    """
    # posix_spawn, not Popen: a Popen object would warn when collected while its detached
    # worker still runs, and vfork-based spawning is faster.
    pid = os.posix_spawn(
        command.argv[0], list(command.argv), command.env,
        file_actions=[
            (os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0),
            (os.POSIX_SPAWN_DUP2, err_fd, 1),
            (os.POSIX_SPAWN_DUP2, err_fd, 2),
            (os.POSIX_SPAWN_DUP2, lock_fd, WORKER_LOCK_FD),
        ],
        setsid=True,
    )
    _REAPER.watch(pid)
    return pid


class _Reaper:
    """Collects the exit status of the workers :func:`spawn_detached` started in this process.

    One daemon thread, alive while such a worker is (it ends when none is left): a detached
    worker outlives the client's interest in it, so waiting cannot be left to the backend.
    Only the watched pids are waited for, never the process's other children.
    """

    interval = 0.1

    def __init__(self) -> None:
        self.forget()

    def forget(self) -> None:
        """Start afresh (in a forked child, which has none of these children nor the thread,
        and perhaps a lock held by a thread that did not fork)."""
        self._lock = _thread.allocate_lock()  # not threading: the worker never needs it
        self._pids: set[int] = set()
        self._running = False

    def watch(self, pid: int) -> None:
        with self._lock:
            self._pids.add(pid)
            if self._running:
                return
            self._running = True
        import threading

        threading.Thread(target=self._run, name="hqs-sdk-reaper", daemon=True).start()

    def _run(self) -> None:
        while True:
            time.sleep(self.interval)
            with self._lock:
                pids = list(self._pids)
            ended = set()
            for pid in pids:
                try:
                    if os.waitpid(pid, os.WNOHANG)[0] != 0:
                        ended.add(pid)
                except ChildProcessError:
                    ended.add(pid)  # waited for by its starter (or SIGCHLD is ignored)
            with self._lock:
                self._pids -= ended
                if not self._pids:
                    self._running = False
                    return


_REAPER = _Reaper()
os.register_at_fork(after_in_child=_REAPER.forget)


class FolderStatus(NamedTuple):
    """An execution's state as its control folder shows it (``BackendStatus(*status)``)."""

    state: ExecutionState
    progress: Progress | None = None
    message: str = ""

    @classmethod
    def from_files(cls, files: Mapping[str, bytes | None], worker_alive: bool, *,
                   queued_elsewhere: bool | None = None) -> FolderStatus:
        """The state that the contents of a control folder's files show.

        ``files`` maps file names to their contents (None: no such file), read in this order:
        :data:`RESPONSE` (only its ``"state"`` is used, so a backend may pass a response
        reduced to ``{"state": ...}``), then, with ``worker_alive`` (a worker holds the lock,
        or a scheduler runs the job), :data:`STATE` and :data:`PROGRESS`; else
        :data:`RESULT` (only ``"ok"`` is used), :data:`CANCEL`, :data:`REQUEST` (only
        whether it is there, and only if the mapping has the key), :data:`SUBMITTED` and
        :data:`PID`. ``queued_elsewhere`` is the backend's own knowledge (see
        :meth:`ControlFolder.status`): True, its queue or executor holds the execution;
        False, nothing of the backend holds it; None, the backend has no queue of its own.

        Finished: the response's state. A worker alive: ``RUNNING`` once the task runs,
        ``QUEUED`` before, with its progress. No worker and no response: what ``result.json``
        says if the task finished; ``CANCELLED`` with a ``cancel`` marker; ``QUEUED`` while
        the backend's queue holds it (``queued_elsewhere``); ``FAILED`` if ``request.json``
        is gone; ``QUEUED`` while another client is still submitting it (neither
        ``submitted`` nor ``pid``, and ``queued_elsewhere`` None); otherwise ``FAILED`` (the
        worker is gone; :func:`vanished_response` builds its response).
        """
        from hqs_sdk.models import ExecutionState

        response = parse_json(files.get(RESPONSE))
        if isinstance(response, dict):
            return cls(_state(response.get("state")))
        if worker_alive:
            running = (files.get(STATE) or b"").strip() == b"running"
            return cls(ExecutionState.RUNNING if running else ExecutionState.QUEUED,
                       _progress(files.get(PROGRESS)))
        result = parse_json(files.get(RESULT))
        if isinstance(result, dict):
            return cls(ExecutionState.SUCCEEDED if result.get("ok") else ExecutionState.FAILED)
        if files.get(CANCEL) is not None:
            return cls(ExecutionState.CANCELLED, message="cancelled")
        if queued_elsewhere:
            return cls(ExecutionState.QUEUED, message="waiting in the backend's queue")
        if REQUEST in files and files[REQUEST] is None:
            return cls(ExecutionState.FAILED, message=f"its {REQUEST} is gone (deleted)")
        if queued_elsewhere is None and files.get(SUBMITTED) is None and files.get(PID) is None:
            return cls(ExecutionState.QUEUED)  # being submitted by another client
        return cls(ExecutionState.FAILED, message="the worker process is gone")


def _progress(data: bytes | None) -> Progress | None:
    from hqs_sdk.models import Progress

    report = parse_json(data)
    if not isinstance(report, dict):
        return None
    return Progress(report.get("fraction"), str(report.get("message", "")))


# -- the folder --------------------------------------------------------------------------------


class ControlFolder:
    """One execution's control folder; see the module docstring for its files.

    Thread-safe and stateless: every method reads the files anew, so any number of instances
    in any number of processes may look at one folder (that is how a client re-attaches).
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = os.path.abspath(os.fspath(path))

    def __repr__(self) -> str:
        return f"ControlFolder({self.path!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ControlFolder) and other.path == self.path

    def __hash__(self) -> int:
        return hash(self.path)

    @property
    def execution_id(self) -> str:
        """The folder's name, which backends make the execution id."""
        return os.path.basename(self.path)

    def file(self, name: str) -> str:
        """The path of the protocol file ``name`` (``"response.json"``, ``"files"``, ...)."""
        return os.path.join(self.path, name)

    def exists(self, name: str) -> bool:
        """True if the protocol file ``name`` is in the folder."""
        return os.path.exists(self.file(name))

    def contents(self, *names: str) -> dict[str, bytes | None]:
        """The named files' contents, None for a file that does not exist."""
        return {name: _contents(self.file(name)) for name in names}

    # -- the backend's side: prepare and start ------------------------------------------------

    def prepare(self, request: TaskExecutionRequest | Mapping[str, Any]) -> bool:
        """Create the folder and write ``request.json`` unless it exists; True if written now.

        ``request`` is a request object or its wire form. Another client may prepare the
        same execution at the same moment: the first complete file wins. Raises ``OSError``.
        """
        os.makedirs(self.path, exist_ok=True)
        if self.exists(REQUEST):
            return False
        if not isinstance(request, Mapping):
            from hqs_sdk.serialization import converter

            request = converter.unstructure(request)
        return write_once(self.file(REQUEST), request)

    def command(self, worker: Sequence[str] | None = None, *, env: Mapping[str, str] | None = None,
                lock_fd: int | None = WORKER_LOCK_FD, slots: str | None = None,
                slot_count: int | None = None, scheduler_sigterm: bool = False
                ) -> WorkerCommand:
        """The command line that runs this execution's worker.

        ``worker`` is the program (default :func:`worker_program`; ``("hqs-task-execute",)``
        for one found on the ``PATH`` of another machine). With ``lock_fd`` the starter hands
        the lock over on that descriptor (what :meth:`start` does); with ``None`` the worker
        takes the lock itself. ``slots`` and ``slot_count`` make it wait for CPU slots;
        ``scheduler_sigterm`` sets :data:`SIGTERM_ENV` (see the module docstring). ``env`` is
        the task's environment, built with :func:`hqs_sdk.worker.task_environment`.
        """
        argv = [*(worker or worker_program()), self.path]
        fds: dict[int, str] = {}
        if lock_fd is not None:
            argv += ["--lock-fd", str(lock_fd)]
            fds = {0: os.devnull, 1: self.file(WORKER_ERR), 2: self.file(WORKER_ERR),
                   lock_fd: self.file(LOCK)}
        if slots is not None and slot_count is not None:
            argv += ["--slots", slots, "--slot-count", str(slot_count)]
        environment = dict(env or {})
        if scheduler_sigterm:
            environment[SIGTERM_ENV] = "exit"
        return WorkerCommand(tuple(argv), environment, fds)

    def start(self, command: WorkerCommand, spawn: Spawner | None = None) -> int | None:
        """Start the worker detached, with the lock handed over; return what ``spawn`` returned.

        Returns None, starting nothing, when a worker holds the lock already or the execution
        has its response. ``spawn`` (default :func:`spawn_detached`) gets the command, the
        locked ``lock`` descriptor and ``worker.err`` opened for appending; both are closed
        here afterwards (the worker keeps its copies). The default spawner's worker is this
        process's child, and this module reaps it when it ends: the caller need not (and no
        finished worker stays a zombie); a spawner of the caller's own reaps its children
        itself. Raises ``OSError`` from the files or from ``spawn``.
        """
        lock_fd = os.open(self.file(LOCK), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            try:
                fcntl.flock(lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return None  # a worker runs this execution already
            if self.exists(RESPONSE):
                return None
            err_fd = os.open(self.file(WORKER_ERR),
                             os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o644)
            try:
                return (spawn or spawn_detached)(command, lock_fd, err_fd)
            finally:
                os.close(err_fd)
        finally:
            os.close(lock_fd)  # the worker keeps its inherited copy (and with it the lock)

    def mark_submitted(self) -> None:
        """Record that the submission is complete (the ``submitted`` marker)."""
        with open(self.file(SUBMITTED), "w"):
            pass

    @property
    def submitted(self) -> bool:
        """True once a backend completed the submission (:meth:`mark_submitted`)."""
        return self.exists(SUBMITTED)

    # -- reading ------------------------------------------------------------------------------

    def worker_alive(self) -> bool:
        """True while a worker holds the lock (see the module docstring)."""
        return not lock_is_free(self.path)

    def read_request(self) -> dict[str, Any] | None:
        """``request.json`` in wire form, or None if there is none (yet)."""
        data = read_json(self.file(REQUEST))
        return data if isinstance(data, dict) else None

    def read_response(self) -> dict[str, Any] | None:
        """``response.json`` in wire form, or None while there is none."""
        data = read_json(self.file(RESPONSE))
        return data if isinstance(data, dict) else None

    def read_result(self) -> dict[str, Any] | None:
        """The task's ``result.json``, or None before the task finished."""
        data = read_json(self.file(RESULT))
        return data if isinstance(data, dict) else None

    def progress(self) -> Progress | None:
        """The task's last progress report, or None."""
        return _progress(_contents(self.file(PROGRESS)))

    def status(self, queued_elsewhere: bool | None = None) -> FolderStatus:
        """The execution's state: from its response, its live worker, or its remains.

        Finished: the response's state. A worker alive: ``RUNNING`` once the task runs,
        ``QUEUED`` before, with its progress. No worker and no response: what ``result.json``
        says if the task finished; ``CANCELLED`` with a ``cancel`` marker; ``QUEUED`` while
        another client is still submitting it (for :data:`SUBMIT_GRACE_S` at most); otherwise
        ``FAILED`` (the worker is gone; :meth:`fetch` builds its response). A folder that does
        not exist is ``FAILED`` too: the execution is lost. See
        :meth:`FolderStatus.from_files`.

        ``queued_elsewhere`` is for a backend with a queue of its own, which starts the worker
        later (a pool in the client, a Dask cluster, a scheduler): True while its queue or
        executor holds the execution (not started yet, or starting): ``QUEUED`` rather than
        ``FAILED`` while no worker holds the lock. False once nothing of it holds the
        execution: no worker and no response is then ``FAILED``, ``submitted`` marker or not.
        None (the default) for a backend that starts the worker as it submits.
        """
        files = self.contents(RESPONSE)
        alive = files[RESPONSE] is None and self.worker_alive()
        if alive:
            files.update(self.contents(STATE, PROGRESS))
            return FolderStatus.from_files(files, True)
        # Nobody holds the lock: the worker ended (or died), perhaps just now; read again.
        files.update(self.contents(RESPONSE, RESULT, CANCEL, SUBMITTED, PID))
        if files[RESPONSE] is not None or files[RESULT] is not None:
            return FolderStatus.from_files(files, False)
        return self._remains(files, queued_elsewhere)

    def _remains(self, files: dict[str, bytes | None], queued_elsewhere: bool | None
                 ) -> FolderStatus:
        """The state of a folder without a response, a result or a live worker."""
        from hqs_sdk.models import ExecutionState

        try:
            since = os.stat(self.file(REQUEST)).st_mtime
            files[REQUEST] = b""
        except FileNotFoundError:
            try:  # being prepared (the folder is new), or lost
                since = os.stat(self.path).st_mtime
            except FileNotFoundError:
                return FolderStatus(ExecutionState.FAILED, message=self._gone())
            preparing = queued_elsewhere is None and files[SUBMITTED] is None and files[PID] is None
            files[REQUEST] = b"" if preparing else None
        status = FolderStatus.from_files(files, False, queued_elsewhere=queued_elsewhere)
        if (status.state is ExecutionState.QUEUED and queued_elsewhere is None
                and time.time() - since >= SUBMIT_GRACE_S):
            return FolderStatus(ExecutionState.FAILED, message=(
                f"no worker started within {SUBMIT_GRACE_S:g} s of its submission in "
                f"{self.path}: the client that submitted it ended before it started one"))
        return status

    def _gone(self) -> str:
        return (f"the execution's control folder {self.path} does not exist (it was deleted, "
                "or the backend's work folder changed): the execution is lost; run it again")

    def vanished_response(self) -> dict[str, Any]:
        """The response (wire form) of an execution whose worker ended without writing one.

        From ``result.json`` if the task finished (the worker died after it), ``cancelled``
        with a ``cancel`` marker, otherwise a ``worker_lost`` failure that says where the
        folder is and whether a worker ever recorded its start (see
        :func:`vanished_response`).
        """
        files = self.contents(RESULT, CANCEL, PID)
        ending = None
        if files[PID] is None and files[CANCEL] is None:
            ending = _error(self.execution_id, "failed", "worker_lost", "WorkerLost",
                            "no worker recorded its start (no pid file): none was started, "
                            "or it died at once; its submission did not complete; its files "
                            f"are in {self.path}; run it again", "")
        return vanished_response(self.execution_id, files, log_tail(self.path), self.path,
                                 ending)

    def fetch(self) -> TaskExecutionResponse:
        """The response of a finished execution (writing the vanished one if there is none).

        Raises :class:`~hqs_sdk.errors.BackendError` while a worker still runs it, or when the
        response cannot be read as a :class:`~hqs_sdk.models.TaskExecutionResponse`.
        """
        from hqs_sdk.errors import BackendError
        from hqs_sdk.models import TaskExecutionResponse
        from hqs_sdk.serialization import converter

        data = self.read_response()
        if data is None:
            if self.worker_alive():
                raise BackendError(f"the execution in {self.path} has not finished: its worker "
                                   "still runs; fetch it once its state is final")
            try:
                write_once(self.file(RESPONSE), self.vanished_response())
            except FileNotFoundError:  # no folder: a response of its own, written nowhere
                data = _error(self.execution_id, "failed", "worker_lost", "ExecutionLost",
                              self._gone(), "")
            else:
                data = self.read_response()
        try:
            return converter.structure(data, TaskExecutionResponse)
        except Exception as exc:
            raise BackendError(
                f"the response in {self.file(RESPONSE)} is unreadable: {exc}") from exc

    # -- cancel -------------------------------------------------------------------------------

    def recorded_pid(self) -> tuple[int | None, str | None]:
        """The worker's pid and start time from ``pid``, or ``(None, None)``."""
        try:
            with open(self.file(PID)) as f:
                pid_text, _, start = f.read().partition(" ")
            return int(pid_text), start.strip()
        except (OSError, ValueError):
            return None, None

    def worker_pid(self) -> int | None:
        """The worker's pid if that process still runs on this machine (not a reused pid)."""
        pid, start = self.recorded_pid()
        if pid is not None and process_start_time(pid) == start:
            return pid
        return None

    def cancel(self) -> None:
        """Cancel the execution: a ``cancel`` file, then SIGTERM to a worker of this machine.

        A worker that has not started yet finds the file and ends with a ``cancelled``
        response; one that runs is signalled; with no worker at all (it never started, or
        it died) the ``cancelled`` response is written here. A finished execution is left
        as it is. Raises :class:`~hqs_sdk.errors.BackendError` when the folder does not
        exist (nothing is left to stop; :meth:`status` reads it as ``FAILED``).
        """
        try:
            with open(self.file(CANCEL), "w"):
                pass
        except FileNotFoundError:
            from hqs_sdk.errors import BackendError

            raise BackendError(f"cannot cancel: {self._gone()}") from None
        if self.exists(RESPONSE):
            return
        pid = self.worker_pid()
        if pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
            return
        if lock_is_free(self.path):
            write_once(self.file(RESPONSE), error_response(
                self.execution_id, "cancelled", "cancelled", "Cancelled",
                "cancelled before it started", self.path))

    # -- the worker's side --------------------------------------------------------------------

    def write_pid(self) -> None:
        """Record this process as the execution's worker (``pid``)."""
        write_atomically(self.file(PID), f"{os.getpid()} {process_start_time(os.getpid())}")

    def set_state(self, state: str) -> None:
        """Write the worker's ``state``: ``"queued"`` or ``"running"``."""
        write_atomically(self.file(STATE), state)

    def write_response(self, response: dict[str, Any]) -> None:
        """Write the final ``response.json`` (wire form), synced to disk."""
        write_atomically(self.file(RESPONSE), json.dumps(response, allow_nan=False), durable=True)


def _state(value: Any) -> ExecutionState:
    from hqs_sdk.models import ExecutionState

    try:
        return ExecutionState(value)
    except ValueError:
        return ExecutionState.FAILED
