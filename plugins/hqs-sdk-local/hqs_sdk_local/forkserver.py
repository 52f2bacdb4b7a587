"""A fork server for worker processes: start-up paid once, not once per execution.

Starting a fresh interpreter and importing the worker costs more than most small tasks. The
fork server is a detached process that has imported the worker already; for each execution
the client sends it the worker's arguments and environment, plus the execution's lock and log
descriptors (``SCM_RIGHTS``), and it forks a child that becomes the worker. The child starts a
session of its own, so it is as detached as a freshly spawned worker and outlives both client
and server.

One server serves one work folder and one *fingerprint* (interpreter, ``PYTHONPATH``, hqs-sdk
version and the modification times of the core's modules), so an upgraded hqs-sdk or another
environment never runs through a stale server. It exits after :data:`IDLE_SECONDS` without
requests (``HQS_SDK_FORK_SERVER_IDLE`` overrides that), or as soon as its socket is removed
or taken over by a newer server. Anything that goes wrong on the way makes the client fall
back to spawning the worker directly, so the server is an accelerator, never a point of
failure.

The server is started with a minimal environment (:data:`SERVER_ENV`, taken from the client's
task environment, which is already free of credentials), and each worker it forks replaces
its environment by the one the client sent. A forked process keeps its parent's original
environment block, which a task can read in ``/proc/self/environ``: so nothing but those few
variables must ever be in the server's.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import signal
import socket
import stat
import sys
import tempfile
import time
from typing import Any

IDLE_SECONDS = 300.0
IDLE_ENV = "HQS_SDK_FORK_SERVER_IDLE"
_CONNECT_TIMEOUT_S = 2.0
_START_WAIT_S = 5.0
_MAX_MESSAGE = 1 << 20
_SUN_PATH_MAX = 107  # sockaddr_un.sun_path: 108 bytes including the terminating NUL
_BIND_SUFFIX = 12  # serve() binds "<path>.<pid>" first, then renames it
_PRIVATE_FOLDER = "hqs-sdk-{uid}"
#: The only variables the server process itself starts with: what importing the worker needs.
SERVER_ENV = ("PATH", "HOME", "LANG", "LC_ALL", "LC_CTYPE", "TMPDIR", "PYTHONPATH", "PYTHONHOME",
              "PYTHONNOUSERSITE", "PYTHONUSERBASE", "PYTHONSAFEPATH", "PYTHONDONTWRITEBYTECODE",
              "VIRTUAL_ENV", "LD_LIBRARY_PATH", "HQS_SDK_DISABLE_PLUGINS", IDLE_ENV)


def fingerprint(env: dict[str, str]) -> str:
    """What must match for a server's preloaded modules to be the right ones."""
    import hqs_sdk
    import hqs_sdk.worker

    core = os.path.dirname(hqs_sdk.__file__)
    stamps = [str(os.stat(os.path.join(core, name)).st_mtime_ns)
              for name in sorted(os.listdir(core)) if name.endswith(".py")]
    parts = [sys.executable, env.get("PYTHONPATH", ""), hqs_sdk.__version__, *stamps]
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()[:16]


def socket_path(work_dir: str, env: dict[str, str]) -> str:
    """Where the server for this work folder and environment listens.

    In the work folder, unless its path is too long for a socket address (108 bytes with
    room for the temporary name :func:`serve` binds first): then in a private folder of this
    user under ``$XDG_RUNTIME_DIR`` or the temporary folder, named after the work folder.
    """
    name = f"forkserver-{fingerprint(env)}.sock"
    path = os.path.join(work_dir, name)
    if len(os.fsencode(path)) + _BIND_SUFFIX <= _SUN_PATH_MAX:
        return path
    digest = hashlib.sha256(os.fsencode(os.path.abspath(work_dir))).hexdigest()[:16]
    base = os.environ.get("XDG_RUNTIME_DIR") or tempfile.gettempdir()
    return os.path.join(base, _PRIVATE_FOLDER.format(uid=os.getuid()), f"{digest}-{name}")


def _private_folder(folder: str) -> None:
    """Create ``folder`` for this user only; refuse one that others could write to."""
    os.makedirs(folder, mode=0o700, exist_ok=True)
    info = os.lstat(folder)
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.getuid() or info.st_mode & 0o022:
        raise OSError(f"{folder} is not a private folder of this user")


# -- client side -------------------------------------------------------------------------------


def _request(path: str, message: dict[str, Any], fds: list[int]) -> int:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as conn:
        conn.settimeout(_CONNECT_TIMEOUT_S)
        conn.connect(path)
        socket.send_fds(conn, [json.dumps(message).encode()], fds)
        conn.shutdown(socket.SHUT_WR)
        reply = b""
        while chunk := conn.recv(4096):
            reply += chunk
    answer = json.loads(reply)
    if "pid" not in answer:
        raise OSError(f"fork server refused: {answer.get('error')}")
    return int(answer["pid"])


def _start_server(path: str, env: dict[str, str]) -> int:
    """Start the server for ``path`` detached, as the core starts a worker: its exit status is
    collected by hqs_sdk.control's reaper, so a server that exits when idle leaves no zombie
    in the client."""
    from hqs_sdk.control import WorkerCommand, spawn_detached

    server_env = {name: env[name] for name in SERVER_ENV if name in env}
    command = WorkerCommand((sys.executable, "-m", "hqs_sdk_local.forkserver", path),
                            server_env, {})
    devnull = os.open(os.devnull, os.O_RDWR)
    try:
        return spawn_detached(command, devnull, devnull)  # no lock: fd 3 is /dev/null too
    finally:
        os.close(devnull)


def _exited(pid: int) -> bool:
    try:
        return os.waitpid(pid, os.WNOHANG)[0] != 0
    except ChildProcessError:  # already collected (the reaper, or SIGCHLD ignored): gone
        return True


def spawn_worker(path: str, argv: list[str], env: dict[str, str], cwd: str, lock_fd: int,
                 log_fd: int) -> int:
    """Have the server at ``path`` (started if needed) fork a worker; return its pid.

    Raises ``OSError`` when no server can be reached: the caller then spawns directly.
    """
    message = {"argv": argv, "env": env, "cwd": cwd}
    try:
        return _request(path, message, [lock_fd, log_fd])
    except (FileNotFoundError, ConnectionRefusedError):
        pass
    folder = os.path.dirname(path)
    if os.path.basename(folder) == _PRIVATE_FOLDER.format(uid=os.getuid()):
        _private_folder(folder)  # the short place for a deep work folder's socket
    server = _start_server(path, env)
    deadline = time.monotonic() + _START_WAIT_S
    while True:
        try:
            return _request(path, message, [lock_fd, log_fd])
        except (FileNotFoundError, ConnectionRefusedError):
            # A server that exited at once (it could not bind) is not waited for.
            if time.monotonic() > deadline or _exited(server):
                raise OSError(f"the fork server at {path} did not start") from None
            time.sleep(0.01)


# -- server side -------------------------------------------------------------------------------


def _child(conn: socket.socket, server: socket.socket, message: dict[str, Any],
           fds: list[int]) -> None:
    """Runs in the forked child: become the worker. Never returns."""
    code = 70
    try:
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)  # the worker waits for its own child
        os.setsid()
        server.close()
        conn.close()
        lock_fd, log_fd = fds
        devnull = os.open(os.devnull, os.O_RDONLY)
        os.dup2(devnull, 0)
        os.dup2(log_fd, 1)
        os.dup2(log_fd, 2)
        os.dup2(lock_fd, 3)
        for fd in {devnull, lock_fd, log_fd} - {0, 1, 2, 3}:
            os.close(fd)
        os.chdir(message["cwd"])
        os.environ.clear()
        os.environ.update(message["env"])
        from hqs_sdk.worker import main

        code = main(message["argv"])
    finally:
        with contextlib.suppress(Exception):
            sys.stdout.flush()
            sys.stderr.flush()
        os._exit(code)


def _still_ours(path: str, identity: int) -> bool:
    try:
        return os.stat(path).st_ino == identity
    except OSError:
        return False


def _preload() -> None:
    """Import what every worker imports, once, here. Task modules are not preloaded: they may
    change between executions, and the worker imports them fresh after the fork."""
    import hqs_sdk.control
    import hqs_sdk.fileref
    import hqs_sdk.task_progress
    import hqs_sdk.tasks
    import hqs_sdk.worker  # noqa: F401


def _listen(path: str) -> tuple[socket.socket, int]:
    """A private socket listening at ``path`` (taking it over atomically), and its inode."""
    tmp = f"{path}.{os.getpid()}"
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    old_umask = os.umask(0o077)
    try:
        server.bind(tmp)
    finally:
        os.umask(old_umask)
    server.listen(64)
    try:
        os.replace(tmp, path)  # atomically take over from a stale server's socket, if any
    except OSError:
        os.unlink(tmp)
        server.close()
        raise
    return server, os.stat(path).st_ino


def _receive(conn: socket.socket) -> tuple[dict[str, Any], list[int]]:
    """One request: the worker's arguments, environment and folder, and its two descriptors."""
    data, fds, _, _ = socket.recv_fds(conn, _MAX_MESSAGE, 2)
    while chunk := conn.recv(_MAX_MESSAGE):
        data += chunk
    try:
        if len(fds) != 2:
            raise ValueError("expected the lock and log descriptors")
        return json.loads(data), fds
    except ValueError:  # a bad request: its descriptors are not kept open in the server
        for fd in fds:
            os.close(fd)
        raise


def _answer(conn: socket.socket, server: socket.socket) -> None:
    """Fork a worker for the request on ``conn`` and reply with its pid (or the error)."""
    conn.settimeout(5)
    try:
        message, fds = _receive(conn)
    except (OSError, ValueError) as exc:
        with contextlib.suppress(OSError):
            conn.sendall(json.dumps({"error": str(exc)}).encode())
        return
    pid = os.fork()
    if pid == 0:
        _child(conn, server, message, fds)
    for fd in fds:
        os.close(fd)
    with contextlib.suppress(OSError):
        conn.sendall(json.dumps({"pid": pid}).encode())


def serve(path: str, idle_seconds: float | None = None) -> None:
    """Listen at ``path`` and fork a worker per request until idle for ``idle_seconds``."""
    if idle_seconds is None:
        idle_seconds = float(os.environ.get(IDLE_ENV) or IDLE_SECONDS)
    _preload()
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # children are reaped by the kernel
    server, identity = _listen(path)
    server.settimeout(min(idle_seconds, 2.0))
    last_request = time.monotonic()
    try:
        while True:
            try:
                conn, _ = server.accept()
            except TimeoutError:
                if (time.monotonic() - last_request > idle_seconds
                        or not _still_ours(path, identity)):
                    return
                continue
            last_request = time.monotonic()
            with conn:
                _answer(conn, server)
    finally:
        server.close()
        if _still_ours(path, identity):
            with contextlib.suppress(OSError):
                os.unlink(path)


if __name__ == "__main__":
    serve(sys.argv[1])
