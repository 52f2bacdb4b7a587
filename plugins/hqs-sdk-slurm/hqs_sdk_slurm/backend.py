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

import contextlib
import json
import logging
import math
import os
import posixpath
import shlex
import shutil
import tempfile
import threading
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import IO, Any

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

@contextlib.contextmanager
def _private_temporary(path: str) -> Iterator[IO[bytes]]:
    """Write ``path`` through a temporary file of a unique name in its folder (mode 600, the
    folders 700), moved into place once complete. ``slurm_tmp_io`` is on a file system that
    other machines and users see: a name such as ``<path>.<pid>.tmp`` can be another
    client's (pids repeat across machines), and the default umask would let others read."""
    folder = os.path.dirname(path)
    os.makedirs(folder, mode=0o700, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=".tmp", dir=folder)
    try:
        with os.fdopen(fd, "wb") as f:
            yield f
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


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
        self._limits: tuple[int, int, int | None] | None = None
        self._limits_lock = threading.Lock()

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
            with _private_temporary(local) as f:
                f.write(data)

    def _upload(self, path: Path, remote: str) -> None:
        local = self._local_path(remote)
        if local is None:
            self.session.upload_file(str(path), remote, f"uploading {path.name}")
            return
        with _private_temporary(local) as f, open(path, "rb") as src:
            shutil.copyfileobj(src, f, 1024 * 1024)

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

    def check(self, request: TaskExecutionRequest) -> None:
        """Refuse more CPUs, memory or GPUs than the largest node of the cluster has.

        The nodes' sizes are asked once per instance (``sinfo``); a request some node can
        hold is accepted, even if that node is busy now (Slurm queues it).
        """
        prov = request.provisioning
        if prov.vcpu is not None and prov.vcpu <= 0:
            raise BackendRejectedError(f"task {request.task_name!r}: vcpu must be positive")
        if not (prov.vcpu or prov.memory_mb or prov.gpu):
            return
        cpus, memory_mb, gpus = self._largest_node()
        where = f"the largest node of the Slurm cluster on {self.cfg.login_host}"
        if prov.vcpu and cpus and math.ceil(prov.vcpu) > cpus:
            raise BackendRejectedError(
                f"task {request.task_name!r} asks for {prov.vcpu:g} vcpu, but {where} has "
                f"{cpus}; ask for fewer with scoped_config(vcpu=...)")
        if prov.memory_mb and memory_mb and prov.memory_mb > memory_mb:
            raise BackendRejectedError(
                f"task {request.task_name!r} asks for {prov.memory_mb} MiB of memory, but "
                f"{where} has {memory_mb} MiB; ask for less with scoped_config(memory_mb=...)")
        if prov.gpu and gpus is not None and prov.gpu > gpus:
            raise BackendRejectedError(
                f"task {request.task_name!r} asks for {prov.gpu} GPU(s), but {where} has "
                f"{gpus}; run it on a cluster with GPUs or drop the gpu setting")

    def _largest_node(self) -> tuple[int, int, int | None]:
        """(CPUs, memory in MiB, GPUs or None if unknown) of the largest node, from sinfo."""
        with self._limits_lock:
            if self._limits is None:
                result = self.session.run('sinfo -h -N -o "%c %m %G" 2>/dev/null; true',
                                          "reading the sizes of the cluster's nodes")
                cpus = memory = 0
                gpus: int | None = 0
                for line in result.stdout.splitlines():
                    parts = line.split()
                    if len(parts) < 2:
                        continue
                    with contextlib.suppress(ValueError):
                        cpus = max(cpus, int(parts[0].rstrip("+")))
                        memory = max(memory, int(parts[1].rstrip("+")))
                    for gres in (parts[2] if len(parts) > 2 else "").split(","):
                        # gpu:4, gpu:a100:4 or gpu:a100:4(S:0-1); "(null)" when none
                        fields = gres.split("(")[0].split(":")
                        if fields[0] == "gpu" and gpus is not None:
                            try:
                                gpus = max(gpus, int(fields[-1]))
                            except ValueError:
                                gpus = None  # a form we cannot read: let sbatch decide
                # 0 where sinfo said nothing: then nothing is refused here (sbatch decides)
                self._limits = (cpus, memory, gpus if cpus else None)
            return self._limits

    def submit_many(self, requests: Sequence[TaskExecutionRequest]) -> list[Handle]:
        if not requests:
            return []
        for request in requests:
            self.check(request)
        ids = [r.execution_id for r in requests]
        handles: dict[str, Handle] = dict(self._already_submitted(ids))
        for _ in range(len(requests) + 1):
            groups: dict[tuple[str, Provisioning], list[TaskExecutionRequest]] = {}
            for request in requests:
                if request.execution_id not in handles:
                    groups.setdefault((request.task_name, request.provisioning),
                                      []).append(request)
            if not groups:
                return [handles[i] for i in ids]
            for (task_name, provisioning), group in groups.items():
                handles.update(self._submit_array(task_name, provisioning, group))
        raise BackendError(f"submitting {len(ids)} executions on {self.cfg.login_host} did not "
                           "settle: other clients kept submitting the same ones; try again")

    def _already_submitted(self, ids: list[str]) -> dict[str, Handle]:
        """Handles of executions submitted before (submission is idempotent per id)."""
        listing = " ".join(shlex.quote(i) for i in ids)
        command = (f"cd {shlex.quote(self.io)} 2>/dev/null || exit 0; for d in {listing}; do "
                   '[ -f "$d/submitted" ] && echo "$d $(cat "$d/submitted")"; done; true')
        result = self.session.run(command, "checking for earlier submissions")
        return self._found(result.stdout)

    def _found(self, text: str) -> dict[str, Handle]:
        """The handles in lines ``<execution id> <job>_<index> <batch>``."""
        handles: dict[str, Handle] = {}
        for line in text.splitlines():
            parts = line.split()
            if len(parts) == 3:
                execution_id, job, batch = parts
                handles[execution_id] = {"dir": self._remote(execution_id), "job": job,
                                         "batch": batch}
        return handles

    def _submit_array(self, task_name: str, provisioning: Provisioning,
                      group: list[TaskExecutionRequest]) -> dict[str, Handle]:
        """Submit ``group`` as one job array; returns the handles of what it submitted, or
        of what another client had submitted meanwhile (then nothing is submitted: the
        caller tries again with the rest)."""
        batch = uuid.uuid4().hex
        batch_dir = self._remote("batches", batch)
        dirs = [self._remote(r.execution_id) for r in group]
        q = shlex.quote
        mkdir = f"umask 077; mkdir -p {q(batch_dir + '/requests')}"
        result = self.session.run(mkdir, "creating the batch folder")
        if result.exit_code != 0:
            raise BackendRejectedError(
                f"cannot create folders under slurm_tmp_io={self.io!r} on "
                f"{self.cfg.login_host}: {result.stderr.strip()}; check that it exists and is "
                "writable there"
            )
        environment = (self.deployer.environment(task_name, group[0].task_ref)
                       if self.deployer is not None else None)
        script = batch_script(self.cfg, batch_dir, environment)
        # The requests wait in the batch's own folder (no other client writes there) until
        # the submission below moves them into their control folders.
        files = {posixpath.join(batch_dir, "requests", f"{i}.json"):
                 json.dumps(self._to_remote_input(r)).encode() for i, r in enumerate(group)}
        files[posixpath.join(batch_dir, "dirs.txt")] = ("\n".join(dirs) + "\n").encode()
        files[posixpath.join(batch_dir, "job.sh")] = script.encode()
        self._write(files, f"uploading {len(group)} requests")
        sbatch = sbatch_command(self.cfg, task_name, batch_dir, len(group), provisioning)
        if self.cfg.debug_slurm_script:
            log.warning("Slurm batch script %s/job.sh:\n%s\nsubmitted with: %s", batch_dir,
                        script, sbatch)
        # One remote command, under a lock that every client of this slurm_tmp_io takes:
        # if another client submitted one of these executions since we looked, report its
        # handle and submit nothing; else submit, then record which array element runs which
        # execution, so a re-run after a client crash finds it instead of submitting again.
        lock = q(self._remote(".submit.lock"))
        command = (
            f"set -e; umask 077; cd {q(batch_dir)}; "
            f"if command -v flock >/dev/null; then exec 9>>{lock}; "
            'flock -w 120 9 || { echo "another client held the submission lock for 120 s" >&2;'
            " exit 75; }; fi; found=0; while read -r d; do "
            'if [ -f "$d/submitted" ]; then echo "FOUND ${d##*/} $(cat "$d/submitted")"; '
            "found=1; fi; done < dirs.txt; [ $found = 0 ] || exit 0; i=0; while read -r d; do "
            'mkdir -p "$d"; mv "requests/$i.json" "$d/request.json"; i=$((i + 1)); '
            f"done < dirs.txt; job=$({sbatch}); job=${{job%%;*}}; "
            'echo "$job" > jobid; i=0; while read -r d; do '
            f'echo "${{job}}_$i {batch}" > "$d/submitted"; i=$((i + 1)); done < dirs.txt; '
            'echo "JOB $job"'
        )
        result = self.session.run(command, f"submitting {len(group)} executions")
        lines = result.stdout.strip().splitlines()
        found = self._found("\n".join(line[len("FOUND "):] for line in lines
                                       if line.startswith("FOUND ")))
        if result.exit_code == 0 and found:
            return found
        job = lines[-1][len("JOB "):] if lines and lines[-1].startswith("JOB ") else ""
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
            '$(cat "$d/progress.json" 2>/dev/null)"; else echo "$d N"; fi; '
            '[ -f "$d/cancel" ] && echo "$d C"; done; true'
        )
        result = self.session.run(command, f"polling {len(ids)} executions")
        queue_text, _, files_text = result.stdout.partition("@@\n")
        queue = {}
        for line in queue_text.splitlines():
            parts = line.split()
            if len(parts) == 2:
                queue[parts[0]] = parts[1]
        files = {}
        cancelled = set()
        for line in files_text.splitlines():
            parts = line.split(" ", 3)
            if parts[1:] == ["C"]:
                cancelled.add(parts[0])
            elif len(parts) >= 2:
                files[parts[0]] = parts[1:]
        return [self._status(h, queue, files.get(i), i in cancelled)
                for h, i in zip(handles, ids, strict=True)]

    @staticmethod
    def _status(handle: Handle, queue: dict[str, str], files: list[str] | None,
                cancelled: bool = False) -> BackendStatus:
        if files and files[0] == "R":
            return BackendStatus(_FINAL.get(files[1] if len(files) > 1 else "",
                                            ExecutionState.FAILED))
        slurm_state = queue.get(handle.get("job", ""))
        if slurm_state is None:
            # Not in the queue and no response: Slurm ended it (time, memory, cancel, node);
            # a job we cancelled before its worker answered is cancelled, as fetch() says.
            if cancelled:
                return BackendStatus(ExecutionState.CANCELLED, message="cancelled")
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
