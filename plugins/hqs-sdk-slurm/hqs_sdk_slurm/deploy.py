"""Task deployment: one virtual environment per task distribution and version on the cluster.

With ``deploy=True`` the backend installs, on the shared folder, exactly what the client runs:
the task's distribution, ``hqs-sdk`` and their requirements, as wheels made on the client
(:mod:`hqs_sdk_slurm.wheels`) and uploaded over the same connection. The cluster needs no
internet and no index. Layout under ``slurm_tmp_io/deploy``::

    wheels/<sha256>/<name>.whl        each wheel uploaded once, shared by every environment
    envs/<dist>-<version>-<id>/       a virtual environment; ``.hqs-sdk-ready`` is written last
    envs/<dist>-<version>-<id>.lock   held with flock(1) by the client that builds it
    envs/<dist>-<version>-<id>.log    the output of its build
    envs/builds.log                   one line per environment built

``<id>`` is a hash of every wheel's content, so a changed dependency or a rebuilt editable
install gets a new environment, and an unchanged one is reused by every client and process.
Two clients deploying at once take turns on the lock: the second finds the environment ready.
A client killed while building loses the lock with its process; the next one starts over,
because an environment without its ready marker is never used.
"""

from __future__ import annotations

import hashlib
import logging
import posixpath
import shlex
import sys
import tempfile
import threading
from collections.abc import Callable
from pathlib import Path

from hqs_sdk.errors import BackendRejectedError, ConfigurationError
from hqs_sdk_slurm.connection import SSHSession
from hqs_sdk_slurm.script import WORKER
from hqs_sdk_slurm.wheels import (
    closure,
    distribution_of_module,
    file_hash,
    normalise,
    pack,
)

__all__ = ["Deployer"]

log = logging.getLogger("hqs_sdk.slurm")

READY = ".hqs-sdk-ready"
#: How long a client waits for another one building the same environment.
LOCK_WAIT_S = 1800

_FAILURES = {
    70: "cannot create the folder {envs!r}; check that slurm_tmp_io is writable",
    71: "flock (util-linux) is not installed on the login node; it is needed so that clients "
        "deploying at once take turns",
    72: "another client has been building {env!r} for {wait} s; if none is, remove {env}.lock",
    73: "deploy_python={python!r} could not create a virtual environment; set deploy_python to "
        "a Python {version} on the login node that the compute nodes see at the same path",
    74: "installing the wheels into {env!r} failed; the cluster's Python must match the "
        "client's ({version}) for wheels with compiled code",
    75: "the environment {env!r} has no working hqs-task-execute",
}


class Deployer:
    """Makes sure an environment for a task's distribution exists; remembers it per process."""

    def __init__(self, session: SSHSession, root: str, python: str,
                 upload: Callable[[Path, str], None]) -> None:
        self.session = session
        self.root = root
        self.python = python
        self.upload = upload
        self._envs: dict[str, str] = {}
        self._lock = threading.Lock()

    def environment(self, task_name: str, task_ref: str | None) -> str:
        """The remote folder of the ready environment for the task's distribution."""
        if not task_ref:
            raise BackendRejectedError(
                f"task {task_name!r} has no module on this client, so deploy=True cannot tell "
                "what to install; import the task's package here, or turn deploy off")
        try:
            dist_name = distribution_of_module(task_ref.partition(":")[0])
        except ConfigurationError as exc:
            raise BackendRejectedError(f"task {task_name!r}: {exc}") from None
        with self._lock:
            if dist_name not in self._envs:
                self._envs[dist_name] = self._deploy(dist_name)
            return self._envs[dist_name]

    def _deploy(self, dist_name: str) -> str:
        dists = closure([dist_name, "hqs-sdk"])
        installer = closure(["pip"])
        root = next(d for d in dists if normalise(d.name) == normalise(dist_name))
        with tempfile.TemporaryDirectory(prefix="hqs-sdk-deploy-") as tmp:
            built: dict[str, Path] = {}
            prints = []
            for dist in dists:
                fingerprint = dist.fingerprint()
                if fingerprint is None:  # editable: only its built wheel says what it holds
                    built[dist.name] = pack(dist, Path(tmp))
                    fingerprint = file_hash(built[dist.name])
                prints.append(f"{normalise(dist.name)} {dist.version} {fingerprint}")
            identity = hashlib.sha256("\n".join(prints).encode()).hexdigest()[:16]
            env = posixpath.join(self.root, "envs",
                                 f"{normalise(root.name)}-{root.version}-{identity}")
            check = self.session.run(f"test -f {shlex.quote(env + '/' + READY)} && echo ready",
                                     "looking for the task's environment")
            if check.stdout.strip() == "ready":
                return env
            log.warning("deploying %s %s and %d requirements to %s:%s (once per version)",
                        root.name, root.version, len(dists) - 1, self.session.where, env)
            for dist in [*dists, *installer]:
                if dist.name not in built:
                    built[dist.name] = pack(dist, Path(tmp))
            remote = self._upload(built)
            pip = remote[installer[0].name]
            self._build(env, pip, [remote[d.name] for d in [*dists, *installer]])
        return env

    def _upload(self, wheels: dict[str, Path]) -> dict[str, str]:
        """Upload the wheels the cluster does not have yet; their remote paths by name."""
        remote = {name: posixpath.join(self.root, "wheels", file_hash(path), path.name)
                  for name, path in wheels.items()}
        listing = " ".join(shlex.quote(p) for p in remote.values())
        found = self.session.run(f"for w in {listing}; do [ -f \"$w\" ] || echo \"$w\"; done",
                                 "looking for uploaded wheels")
        missing = set(found.stdout.split())
        for name, path in wheels.items():
            if remote[name] in missing:
                self.upload(path, remote[name])
        return remote

    def _build(self, env: str, pip: str, wheels: list[str]) -> None:
        q = shlex.quote
        envs = posixpath.dirname(env)
        script = "\n".join([
            "set -u",
            f"envs={q(envs)}; env={q(env)}; log=\"$env.log\"",
            'mkdir -p "$envs" || exit 70',
            "command -v flock >/dev/null 2>&1 || exit 71",
            'exec 9>>"$env.lock" || exit 70',
            f"flock -w {LOCK_WAIT_S} 9 || exit 72",
            f'if [ -f "$env/{READY}" ]; then echo reused; exit 0; fi',
            'rm -rf "$env"',
            f'{q(self.python)} -m venv --without-pip "$env" >"$log" 2>&1 || '
            '{ tail -n 20 "$log" >&2; exit 73; }',
            f'"$env/bin/python" {q(pip + "/pip")} install --no-index --no-deps --no-cache-dir '
            "--disable-pip-version-check --no-warn-script-location "
            f'{" ".join(q(w) for w in wheels)} >>"$log" 2>&1 || '
            '{ tail -n 30 "$log" >&2; exit 74; }',
            f'{{ [ -x "$env/bin/"{q(WORKER[0])} ] && "$env/bin/python" -c "import hqs_sdk.worker";'
            ' } >>"$log" 2>&1 || { tail -n 20 "$log" >&2; exit 75; }',
            'echo "$(date -u +%Y-%m-%dT%H:%M:%SZ) $(hostname) ${env##*/}" >> "$envs/builds.log"',
            f'touch "$env/{READY}"',
            "echo built",
        ])
        result = self.session.run(script, f"deploying {posixpath.basename(env)}",
                                  timeout=LOCK_WAIT_S + 900)
        if result.exit_code == 0:
            return
        version = f"{sys.version_info.major}.{sys.version_info.minor}"
        reason = _FAILURES.get(result.exit_code, "the deployment script failed").format(
            envs=envs, env=env, wait=LOCK_WAIT_S, python=self.python, version=version)
        detail = (result.stderr or result.stdout).strip()
        raise BackendRejectedError(
            f"task deployment on {self.session.where}: {reason}"
            + (f"\n{detail}" if detail else "")
        )

