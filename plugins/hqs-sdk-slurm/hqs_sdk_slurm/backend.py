"""The Slurm backend: job arrays submitted and polled over one SSH connection.

Remote layout under ``slurm_tmp_io``::

    <execution id>/          the worker's control folder (request.json, response.json, log...)
    <execution id>/submitted the array element (``<job>_<index>``) that runs it
    batches/<batch id>/      job.sh, dirs.txt (one control folder per array index), jobid,
                             slurm-<job>_<index>.out
    deploy/                  task environments (``deploy=True``; see hqs_sdk_slurm.deploy)

A batch of requests with the same task and provisioning is one ``sbatch`` of a job array.
Every polling round is one remote command (``squeue`` plus the workers' state files) for all
pending executions, and needs no Slurm accounting.
"""

from __future__ import annotations

import json
import logging
import os
import posixpath
import shlex
import shutil
import threading
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from hqs_sdk.backend import Backend, BackendConfiguration, BackendStatus, Handle
from hqs_sdk.errors import BackendError, BackendRejectedError
from hqs_sdk.fileref import map_filerefs
from hqs_sdk.models import (
    ExecutionState,
    Progress,
    Provisioning,
    TaskExecutionRequest,
    TaskExecutionResponse,
)
from hqs_sdk.serialization import converter
from hqs_sdk_slurm.config import BackendConfigurationSlurm
from hqs_sdk_slurm.connection import shared_session
from hqs_sdk_slurm.deploy import Deployer
from hqs_sdk_slurm.files import SCHEME, parse_url, to_url
from hqs_sdk_slurm.script import batch_script, sbatch_command

__all__ = ["SlurmBackend"]

log = logging.getLogger("hqs_sdk.slurm")

_SLURM_STATES = {"PENDING": ExecutionState.QUEUED, "CONFIGURING": ExecutionState.QUEUED,
                 "RUNNING": ExecutionState.RUNNING, "COMPLETING": ExecutionState.RUNNING,
                 "SUSPENDED": ExecutionState.QUEUED, "REQUEUED": ExecutionState.QUEUED,
                 "RESIZING": ExecutionState.RUNNING}
_FINAL = {state.value: state for state in ExecutionState if state.finished}

# Markers slurmstepd writes into a job's output when Slurm itself ends it, matched in lower
# case and in this order (a job killed for its memory is also reported as CANCELLED).
_OOM_HINT = ("Slurm's memory limit killed the job; give it more with scoped_config(memory_mb=...)"
             " or sbatch_extra=['--mem=...']")
_SLURM_ENDINGS = [
    ("due to time limit", "timed_out", "timeout", "SlurmTimeLimit",
     "Slurm stopped the job at its time limit; raise the timeout or sbatch_extra=['--time=...']"),
    ("due to preemption", "failed", "preempted", "SlurmPreempted",
     "Slurm preempted the job for a higher-priority one; run it again "
     "(cache_mode=RESTART_FAILED)"),
    ("due to node failure", "failed", "node_failure", "SlurmNodeFailure",
     "the node running the job failed; run it again (cache_mode=RESTART_FAILED)"),
    ("exceeded memory limit", "failed", "out_of_memory", "SlurmOutOfMemory", _OOM_HINT),
    ("exceeded job memory limit", "failed", "out_of_memory", "SlurmOutOfMemory", _OOM_HINT),
    ("oom-kill", "failed", "out_of_memory", "SlurmOutOfMemory", _OOM_HINT),
    ("out of memory", "failed", "out_of_memory", "SlurmOutOfMemory", _OOM_HINT),
    ("cancelled", "cancelled", "cancelled", "SlurmCancelled",
     "the job was cancelled in Slurm (scancel)"),
]


class SlurmBackend(Backend):
    """Runs executions as Slurm job-array elements; see the module docstring."""

    poll_interval_min = 0.5
    poll_interval_max = 10.0
    retry_seconds = 300.0
    # Debounce window (see hqs_sdk.polling): batches run_many into one job array; 0.2 s is
    # nothing next to Slurm scheduling.
    submit_batch_window = 0.2

    def __init__(self, config: BackendConfiguration) -> None:
        super().__init__(config)
        assert isinstance(config, BackendConfigurationSlurm)
        self.cfg = config
        self.session = shared_session(config)
        self.io = config.slurm_tmp_io.rstrip("/")
        self.local_io = config.slurm_tmp_io_local.rstrip("/") if config.slurm_tmp_io_local else None
        self.deployer = Deployer(self.session, self._remote("deploy"), config.deploy_python,
                                 self._upload) if config.deploy else None

    # -- paths and files -----------------------------------------------------------------------

    def _remote(self, *parts: str) -> str:
        return posixpath.join(self.io, *parts)

    def _local_path(self, remote: str) -> str | None:
        if self.local_io is None or not remote.startswith(self.io + "/"):
            return None
        return self.local_io + remote[len(self.io):]

    def _write(self, files: dict[str, bytes], doing: str) -> None:
        if self.local_io is None:
            self.session.write_files(files, doing)
            return
        for remote, data in files.items():
            local = self._local_path(remote)
            assert local is not None
            os.makedirs(os.path.dirname(local), exist_ok=True)
            tmp = f"{local}.{os.getpid()}.tmp"
            with open(tmp, "wb") as f:
                f.write(data)
            os.replace(tmp, local)

    def _upload(self, path: Path, remote: str) -> None:
        local = self._local_path(remote)
        if local is None:
            self.session.upload_file(str(path), remote, f"uploading {path.name}")
            return
        os.makedirs(os.path.dirname(local), exist_ok=True)
        tmp = f"{local}.{os.getpid()}.{threading.get_ident()}.tmp"
        shutil.copyfile(path, tmp)
        os.replace(tmp, local)

    def _read(self, remote: str, doing: str) -> bytes | None:
        local = self._local_path(remote)
        if local is None:
            return self.session.read_file(remote, doing)
        try:
            with open(local, "rb") as f:
                return f.read()
        except FileNotFoundError:
            return None

    def _to_remote_input(self, request: TaskExecutionRequest) -> dict[str, Any]:
        """The request as the worker sees it: file references as paths on the cluster."""
        data: dict[str, Any] = converter.unstructure(request)
        data["input"] = map_filerefs(data["input"], self._remote_location)
        return data

    def _remote_location(self, location: str) -> str:
        if self.local_io is not None and location.startswith(self.local_io + "/"):
            return self.io + location[len(self.local_io):]
        if location.lower().startswith(SCHEME + "://"):
            host, _, port, path = parse_url(location)
            if host == self.cfg.login_host and port in (None, self.session.port):
                return path  # written by a task on this cluster: no round trip via the client
        return location

    def _client_location(self, location: str) -> str:
        """Where the client reads a file a task wrote under ``slurm_tmp_io``."""
        if not location.startswith(self.io + "/"):
            return location
        local = self._local_path(location)
        if local is not None:
            return local
        return to_url(self.cfg.login_host, self.cfg.login_user, self.session.port, location)

    # -- submit --------------------------------------------------------------------------------

    def submit(self, request: TaskExecutionRequest) -> Handle:
        return self.submit_many([request])[0]

    def submit_many(self, requests: Sequence[TaskExecutionRequest]) -> list[Handle]:
        if not requests:
            return []
        for request in requests:
            if request.provisioning.vcpu is not None and request.provisioning.vcpu <= 0:
                raise BackendRejectedError(f"task {request.task_name!r}: vcpu must be positive")
        ids = [r.execution_id for r in requests]
        found = self._already_submitted(ids)
        handles: dict[str, Handle] = {i: found[i] for i in ids if i in found}
        groups: dict[tuple[str, Provisioning], list[TaskExecutionRequest]] = {}
        for request in requests:
            if request.execution_id not in handles:
                groups.setdefault((request.task_name, request.provisioning), []).append(request)
        for (task_name, provisioning), group in groups.items():
            handles.update(self._submit_array(task_name, provisioning, group))
        return [handles[i] for i in ids]

    def _already_submitted(self, ids: list[str]) -> dict[str, Handle]:
        """Handles of executions submitted before (submission is idempotent per id)."""
        listing = " ".join(shlex.quote(i) for i in ids)
        command = (f"cd {shlex.quote(self.io)} 2>/dev/null || exit 0; for d in {listing}; do "
                   '[ -f "$d/submitted" ] && echo "$d $(cat "$d/submitted")"; done; true')
        result = self.session.run(command, "checking for earlier submissions")
        handles: dict[str, Handle] = {}
        for line in result.stdout.splitlines():
            parts = line.split()
            if len(parts) == 3:
                execution_id, job, batch = parts
                handles[execution_id] = {"dir": self._remote(execution_id), "job": job,
                                         "batch": batch}
        return handles

    def _submit_array(self, task_name: str, provisioning: Provisioning,
                      group: list[TaskExecutionRequest]) -> dict[str, Handle]:
        batch = uuid.uuid4().hex
        batch_dir = self._remote("batches", batch)
        dirs = [self._remote(r.execution_id) for r in group]
        mkdir = "mkdir -p " + " ".join(shlex.quote(d) for d in [batch_dir, *dirs])
        result = self.session.run(mkdir, "creating execution folders")
        if result.exit_code != 0:
            raise BackendRejectedError(
                f"cannot create folders under slurm_tmp_io={self.io!r} on "
                f"{self.cfg.login_host}: {result.stderr.strip()}; check that it exists and is "
                "writable there"
            )
        environment = (self.deployer.environment(task_name, group[0].task_ref)
                       if self.deployer is not None else None)
        script = batch_script(self.cfg, batch_dir, environment)
        files = {posixpath.join(d, "request.json"): json.dumps(self._to_remote_input(r)).encode()
                 for d, r in zip(dirs, group, strict=True)}
        files[posixpath.join(batch_dir, "dirs.txt")] = ("\n".join(dirs) + "\n").encode()
        files[posixpath.join(batch_dir, "job.sh")] = script.encode()
        self._write(files, f"uploading {len(group)} requests")
        sbatch = sbatch_command(self.cfg, task_name, batch_dir, len(group), provisioning)
        if self.cfg.debug_slurm_script:
            log.warning("Slurm batch script %s/job.sh:\n%s\nsubmitted with: %s", batch_dir,
                        script, sbatch)
        q = shlex.quote
        # One remote command: submit, then record which array element runs which execution,
        # so a re-run after a client crash finds it instead of submitting again.
        command = (
            f"set -e; cd {q(batch_dir)}; job=$({sbatch}); job=${{job%%;*}}; "
            'echo "$job" > jobid; i=0; while read -r d; do '
            f'echo "${{job}}_$i {batch}" > "$d/submitted"; i=$((i + 1)); done < dirs.txt; '
            'echo "$job"'
        )
        result = self.session.run(command, f"submitting {len(group)} executions")
        job = result.stdout.strip().splitlines()[-1] if result.stdout.strip() else ""
        if result.exit_code != 0 or not job.isdigit():
            raise BackendRejectedError(
                f"sbatch refused the job for task {task_name!r} on {self.cfg.login_host}: "
                f"{(result.stderr or result.stdout).strip()}. The generated script is "
                f"{batch_dir}/job.sh (set debug_slurm_script=True to log it)."
            )
        return {r.execution_id: {"dir": d, "job": f"{job}_{i}", "batch": batch}
                for i, (d, r) in enumerate(zip(dirs, group, strict=True))}

    # -- states --------------------------------------------------------------------------------

    def _folder(self, handle: Handle) -> str:
        if not isinstance(handle, dict) or not isinstance(handle.get("dir"), str):
            raise BackendError(f"not a Slurm backend handle: {handle!r}")
        return str(handle["dir"])

    def states(self, handles: Sequence[Handle]) -> list[BackendStatus]:
        ids = [posixpath.basename(self._folder(h)) for h in handles]
        listing = " ".join(shlex.quote(i) for i in ids)
        command = (
            'squeue -h -r -u "$(id -un)" -o "%i %T" 2>/dev/null; echo @@; '
            f"cd {shlex.quote(self.io)} 2>/dev/null; for d in {listing}; do "
            'if [ -f "$d/response.json" ]; then echo "$d R $(grep -o \'"state": "[a-z_]*"\' '
            '"$d/response.json" | head -n 1 | cut -d\\" -f4)"; '
            'elif [ -f "$d/state" ]; then echo "$d S $(cat "$d/state") '
            '$(cat "$d/progress.json" 2>/dev/null)"; else echo "$d N"; fi; done'
        )
        result = self.session.run(command, f"polling {len(ids)} executions")
        queue_text, _, files_text = result.stdout.partition("@@\n")
        queue = {}
        for line in queue_text.splitlines():
            parts = line.split()
            if len(parts) == 2:
                queue[parts[0]] = parts[1]
        files = {}
        for line in files_text.splitlines():
            parts = line.split(" ", 3)
            if len(parts) >= 2:
                files[parts[0]] = parts[1:]
        return [self._status(h, queue, files.get(i)) for h, i in zip(handles, ids, strict=True)]

    @staticmethod
    def _status(handle: Handle, queue: dict[str, str], files: list[str] | None) -> BackendStatus:
        if files and files[0] == "R":
            return BackendStatus(_FINAL.get(files[1] if len(files) > 1 else "",
                                            ExecutionState.FAILED))
        slurm_state = queue.get(handle.get("job", ""))
        if slurm_state is None:
            # Not in the queue and no response: Slurm ended it (time, memory, cancel, node).
            return BackendStatus(ExecutionState.FAILED, message="the job left the queue")
        state = _SLURM_STATES.get(slurm_state, ExecutionState.RUNNING)
        progress = None
        if files and files[0] == "S" and len(files) > 1:
            worker_state = files[1]
            # A requeued job keeps its old state file: Slurm's PENDING wins over it.
            if worker_state == "running" and state is not ExecutionState.QUEUED:
                state = ExecutionState.RUNNING
            if len(files) > 2 and files[2].strip():
                try:
                    data = json.loads(files[2])
                    progress = Progress(data.get("fraction"), str(data.get("message", "")))
                except ValueError:
                    progress = None
        return BackendStatus(state, progress)

    # -- fetch ---------------------------------------------------------------------------------

    def fetch(self, handle: Handle) -> TaskExecutionResponse:
        folder = self._folder(handle)
        raw = self._read(posixpath.join(folder, "response.json"), "fetching a response")
        data = json.loads(raw) if raw is not None else self._slurm_ending(handle, folder)
        data["output"] = map_filerefs(data.get("output"), self._client_location)
        try:
            return converter.structure(data, TaskExecutionResponse)
        except Exception as exc:
            raise BackendError(f"the response in {folder} is unreadable: {exc}") from exc

    def _slurm_ending(self, handle: Handle, folder: str) -> dict[str, Any]:
        """The response of an execution the worker could not finish."""
        from hqs_sdk.worker import error_response

        execution_id = posixpath.basename(folder)
        missing = self._read(posixpath.join(folder, "worker_missing"), "reading the job's end")
        job = str(handle.get("job", ""))
        output_file = self._remote("batches", str(handle.get("batch", "")), f"slurm-{job}.out")
        slurm_log = (self._read(output_file, "reading the job's output") or b"").decode(
            "utf-8", "replace")
        cancelled = self._read(posixpath.join(folder, "cancel"), "reading the job's end")
        lowered = slurm_log.lower()
        if cancelled is not None and "due to time limit" not in lowered:
            response = error_response(execution_id, "cancelled", "cancelled", "Cancelled",
                                      f"cancelled (Slurm job {job})", "/nonexistent")
        elif missing is not None:
            message = (f"{missing.decode().strip()}. Make the worker available on the compute "
                       "nodes with preparation_script_before, e.g. ['source /path/to/venv/bin/"
                       "activate'] (the environment must have hqs-sdk and the task's package "
                       "installed).")
            response = error_response(execution_id, "failed", "worker_missing", "WorkerMissing",
                                      message, "/nonexistent")
        else:
            ending = next((e for e in _SLURM_ENDINGS if e[0] in lowered), None)
            _, state, kind, type_, message = ending or (
                "", "failed", "worker_lost", "WorkerLost", "the job ended without a result")
            response = error_response(execution_id, state, kind, type_,
                                      f"{message} (Slurm job {job})", "/nonexistent")
        response["log_tail"] = slurm_log[-64 * 1024:]
        return response

    # -- cancel --------------------------------------------------------------------------------

    def cancel(self, handle: Handle) -> None:
        folder = self._folder(handle)
        job = str(handle.get("job", ""))
        q = shlex.quote
        self.session.run(f"touch {q(folder + '/cancel')}; scancel {q(job)}",
                         f"cancelling Slurm job {job}")

    def close(self) -> None:
        self.session.close()
