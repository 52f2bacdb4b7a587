"""The Slurm backend: job arrays submitted and polled over one SSH connection.

Remote layout under ``slurm_tmp_io``::

    <execution id>/          the execution's control folder (hqs_sdk.control)
    <execution id>/submitted the array element (``<job>_<index>``) that runs it, and its batch
    batches/<batch id>/      job.sh, dirs.txt (one control folder per array index), jobid,
                             slurm-<job>_<index>.out
    deploy/                  task environments (``deploy=True``; see hqs_sdk_slurm.deploy)

What the control folder's files are and mean is the core's protocol, :mod:`hqs_sdk.control`:
this backend reads them over SSH (or through ``slurm_tmp_io_local``) and lets
:meth:`~hqs_sdk.control.FolderStatus.from_files` and :func:`~hqs_sdk.control.vanished_response`
interpret them, with Slurm's queue in place of the worker's lock (which holds only on the
node that runs it). What is Slurm's here: ``sbatch`` of job arrays, ``squeue`` for the queue,
``scancel``, the reasons Slurm ends a job (read from its output file), the SSH transport and
deploying task environments.

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
import threading
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from hqs_sdk.backend import Backend, BackendConfiguration, BackendStatus, Handle
from hqs_sdk.control import (
    CANCEL,
    LOG_TAIL_BYTES,
    PROGRESS,
    REQUEST,
    RESPONSE,
    RESULT,
    STATE,
    SUBMITTED,
    FolderStatus,
    error_response,
    vanished_response,
    write_atomically,
)
from hqs_sdk.errors import BackendError, BackendRejectedError
from hqs_sdk.fileref import map_filerefs
from hqs_sdk.models import (
    ExecutionState,
    Provisioning,
    TaskExecutionRequest,
    TaskExecutionResponse,
)
from hqs_sdk.serialization import converter
from hqs_sdk_slurm.config import BackendConfigurationSlurm
from hqs_sdk_slurm.connection import RemoteResult, shared_session
from hqs_sdk_slurm.deploy import Deployer
from hqs_sdk_slurm.files import SCHEME, parse_url, to_url
from hqs_sdk_slurm.script import WORKER_MISSING, batch_script, sbatch_command

__all__ = ["SlurmBackend"]

log = logging.getLogger("hqs_sdk.slurm")

_SLURM_STATES = {"PENDING": ExecutionState.QUEUED, "CONFIGURING": ExecutionState.QUEUED,
                 "RUNNING": ExecutionState.RUNNING, "COMPLETING": ExecutionState.RUNNING,
                 "SUSPENDED": ExecutionState.QUEUED, "REQUEUED": ExecutionState.QUEUED,
                 "RESIZING": ExecutionState.RUNNING}


def _write_private(path: str, data: bytes) -> None:
    """Write ``path`` atomically, private to the user (mode 600, new folders 700).

    ``slurm_tmp_io`` is on a file system that other machines and users see: the temporary
    name must be unique (:func:`~hqs_sdk.control.write_atomically`) and the default umask
    would let others read.
    """
    os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
    write_atomically(path, data)


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
            _write_private(local, data)

    def _upload(self, path: Path, remote: str) -> None:
        local = self._local_path(remote)
        if local is None:
            self.session.upload_file(str(path), remote, f"uploading {path.name}")
            return
        _write_private(local, path.read_bytes())

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

    def output_locations(self, execution_id: str, handle: Handle | None = None
                         ) -> Sequence[str]:
        """The execution's control folder under ``slurm_tmp_io``, where its task writes its
        files: as the cluster names it and, with ``slurm_tmp_io_local``, as this machine sees
        it (without, the client reads them as ``sftp://`` URLs)."""
        folder = self._folder(handle) if handle is not None else self._remote(execution_id)
        local = self._local_path(folder)
        return [folder] if local is None else [folder, local]

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
                   f'[ -f "$d/{SUBMITTED}" ] && echo "$d $(cat "$d/{SUBMITTED}")"; done; true')
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
        self._make_batch_folder(batch_dir)
        script = self._upload_batch(task_name, group, batch_dir, dirs)
        sbatch = sbatch_command(self.cfg, task_name, batch_dir, len(group), provisioning)
        if self.cfg.debug_slurm_script:
            log.warning("Slurm batch script %s/job.sh:\n%s\nsubmitted with: %s", batch_dir,
                        script, sbatch)
        result = self.session.run(self._submission(batch_dir, batch, sbatch),
                                  f"submitting {len(group)} executions")
        lines = result.stdout.strip().splitlines()
        found = self._found("\n".join(line[len("FOUND "):] for line in lines
                                       if line.startswith("FOUND ")))
        if result.exit_code == 0 and found:
            return found
        job = self._submitted_job(result, lines, task_name, batch_dir)
        return {r.execution_id: {"dir": d, "job": f"{job}_{i}", "batch": batch}
                for i, (d, r) in enumerate(zip(dirs, group, strict=True))}

    def _make_batch_folder(self, batch_dir: str) -> None:
        """Create the batch's folder (and its ``requests``), private to the user."""
        mkdir = f"umask 077; mkdir -p {shlex.quote(batch_dir + '/requests')}"
        result = self.session.run(mkdir, "creating the batch folder")
        if result.exit_code != 0:
            raise BackendRejectedError(
                f"cannot create folders under slurm_tmp_io={self.io!r} on "
                f"{self.cfg.login_host}: {result.stderr.strip()}; check that it exists and is "
                "writable there"
            )

    def _upload_batch(self, task_name: str, group: list[TaskExecutionRequest], batch_dir: str,
                      dirs: list[str]) -> str:
        """Write the batch's requests, ``dirs.txt`` and ``job.sh``; returns the script.

        The requests wait in the batch's own folder (no other client writes there) until the
        submission moves them into their control folders.
        """
        environment = (self.deployer.environment(task_name, group[0].task_ref)
                       if self.deployer is not None else None)
        script = batch_script(self.cfg, batch_dir, environment)
        files = {posixpath.join(batch_dir, "requests", f"{i}.json"):
                 json.dumps(self._to_remote_input(r)).encode() for i, r in enumerate(group)}
        files[posixpath.join(batch_dir, "dirs.txt")] = ("\n".join(dirs) + "\n").encode()
        files[posixpath.join(batch_dir, "job.sh")] = script.encode()
        self._write(files, f"uploading {len(group)} requests")
        return script

    def _submission(self, batch_dir: str, batch: str, sbatch: str) -> str:
        """The one remote command that submits the batch, under a lock every client of this
        ``slurm_tmp_io`` takes.

        If another client submitted one of these executions since we looked, it reports that
        handle (``FOUND``) and submits nothing; else it moves each request into its control
        folder, submits, then records which array element runs which execution
        (``submitted``), so a re-run after a client crash finds it instead of submitting
        again, and reports ``JOB <id>``.
        """
        q = shlex.quote
        lock = q(self._remote(".submit.lock"))
        return (
            f"set -e; umask 077; cd {q(batch_dir)}; "
            f"if command -v flock >/dev/null; then exec 9>>{lock}; "
            'flock -w 120 9 || { echo "another client held the submission lock for 120 s" >&2;'
            " exit 75; }; fi; found=0; while read -r d; do "
            f'if [ -f "$d/{SUBMITTED}" ]; then echo "FOUND ${{d##*/}} $(cat "$d/{SUBMITTED}")"; '
            "found=1; fi; done < dirs.txt; [ $found = 0 ] || exit 0; i=0; while read -r d; do "
            f'mkdir -p "$d"; mv "requests/$i.json" "$d/{REQUEST}"; i=$((i + 1)); '
            f"done < dirs.txt; job=$({sbatch}); job=${{job%%;*}}; "
            'echo "$job" > jobid; i=0; while read -r d; do '
            f'echo "${{job}}_$i {batch}" > "$d/{SUBMITTED}"; i=$((i + 1)); done < dirs.txt; '
            'echo "JOB $job"'
        )

    def _submitted_job(self, result: RemoteResult, lines: list[str], task_name: str,
                       batch_dir: str) -> str:
        """The job id the submission reported, or the error of an sbatch that refused."""
        job = lines[-1][len("JOB "):] if lines and lines[-1].startswith("JOB ") else ""
        if result.exit_code != 0 or not job.isdigit():
            raise BackendRejectedError(
                f"sbatch refused the job for task {task_name!r} on {self.cfg.login_host}: "
                f"{(result.stderr or result.stdout).strip()}. The generated script is "
                f"{batch_dir}/job.sh (set debug_slurm_script=True to log it)."
            )
        return job

    # -- states --------------------------------------------------------------------------------

    def _folder(self, handle: Handle) -> str:
        if not isinstance(handle, dict) or not isinstance(handle.get("dir"), str):
            raise BackendError(f"not a Slurm backend handle: {handle!r}")
        return str(handle["dir"])

    def states(self, handles: Sequence[Handle]) -> list[BackendStatus]:
        ids = [posixpath.basename(self._folder(h)) for h in handles]
        result = self.session.run(self._poll(ids), f"polling {len(ids)} executions")
        queue_text, _, files_text = result.stdout.partition("@@\n")
        queue = {}
        for line in queue_text.splitlines():
            parts = line.split()
            if len(parts) == 2:
                queue[parts[0]] = parts[1]
        folders: dict[str, dict[str, bytes | None]] = {}
        for line in files_text.split("\n"):
            parts = line.split(" ", 2)
            if len(parts) == 3:
                folders.setdefault(parts[0], {})[parts[1]] = parts[2].encode()
        return [self._status(h, queue, folders.get(i, {}))
                for h, i in zip(handles, ids, strict=True)]

    def _poll(self, ids: list[str]) -> str:
        """One remote command: Slurm's queue, ``@@``, then ``<id> <file> <contents>`` lines.

        Small files are read with the shell's ``read`` (no process per file); of
        ``response.json`` and ``result.json`` only ``"state"`` and ``"ok"`` travel (as
        ``{"state": ...}``): a status needs no more, and :meth:`fetch` reads the whole file
        once. Every file is replaced atomically, so nothing read is a part.
        """
        q = shlex.quote
        listing = " ".join(q(i) for i in ids)
        small = " ".join(q(name) for name in (STATE, PROGRESS, CANCEL))
        return (
            'squeue -h -r -u "$(id -un)" -o "%i %T" 2>/dev/null; echo @@; '
            f"cd {q(self.io)} 2>/dev/null || exit 0; for d in {listing}; do "
            f'if [ -f "$d/{RESPONSE}" ]; then {_print_key(RESPONSE, "state")}; continue; fi; '
            f'if [ -f "$d/{RESULT}" ]; then {_print_key(RESULT, "ok")}; fi; '
            f'for n in {small}; do if [ -f "$d/$n" ]; then v=; IFS= read -r v < "$d/$n"; '
            "printf '%s %s %s\\n' \"$d\" \"$n\" \"$v\"; fi; done; done; true"
        )

    @staticmethod
    def _status(handle: Handle, queue: dict[str, str], files: dict[str, bytes | None]
                ) -> BackendStatus:
        """The protocol's reading of the folder, with Slurm's queue for the worker's lock.

        A job in the queue is alive; its state is Slurm's (a requeued job keeps its old
        ``state`` file, and Slurm's PENDING wins over it). A job gone from the queue without
        a response: Slurm ended it (time, memory, node, cancel), as :meth:`fetch` explains.
        """
        slurm_state = queue.get(str(handle.get("job", "")))
        # The handle exists, so the submission is complete.
        status = FolderStatus.from_files({SUBMITTED: b"", **files}, slurm_state is not None)
        if slurm_state is None or status.state.finished:
            return BackendStatus(*status)
        return BackendStatus(_SLURM_STATES.get(slurm_state, ExecutionState.RUNNING),
                             status.progress)

    # -- fetch ---------------------------------------------------------------------------------

    def fetch(self, handle: Handle) -> TaskExecutionResponse:
        folder = self._folder(handle)
        raw = self._read(posixpath.join(folder, RESPONSE), "fetching a response")
        try:
            data = json.loads(raw) if raw is not None else self._vanished(handle, folder)
            data["output"] = map_filerefs(data.get("output"), self._client_location)
            return converter.structure(data, TaskExecutionResponse)
        except Exception as exc:
            raise BackendError(
                f"the response in {folder} on {self.cfg.login_host} is unreadable: {exc}. The "
                "worker writes it whole, so something else changed it: move that folder aside "
                "and run the call again") from exc

    def _vanished(self, handle: Handle, folder: str) -> dict[str, Any]:
        """The response of an execution whose worker wrote none (see
        :func:`hqs_sdk.control.vanished_response`), with Slurm's account of the job's end
        and the tail of its Slurm output."""
        files = {name: self._read(posixpath.join(folder, name), "reading the job's end")
                 for name in (RESULT, CANCEL, WORKER_MISSING)}
        job = str(handle.get("job", ""))
        output_file = self._remote("batches", str(handle.get("batch", "")), f"slurm-{job}.out")
        slurm_log = (self._read(output_file, "reading the job's output") or b"").decode(
            "utf-8", "replace")
        execution_id = posixpath.basename(folder)
        return vanished_response(
            execution_id, files, slurm_log[-LOG_TAIL_BYTES:],
            f"{folder} on {self.cfg.login_host} (Slurm job {job})",
            _slurm_ending(execution_id, job, slurm_log, files))

    # -- cancel --------------------------------------------------------------------------------

    def cancel(self, handle: Handle) -> None:
        folder = self._folder(handle)
        job = str(handle.get("job", ""))
        q = shlex.quote
        # The protocol's cancel marker first: the worker then takes Slurm's SIGTERM as a
        # cancel, and a job that never started is reported cancelled.
        self.session.run(f"touch {q(posixpath.join(folder, CANCEL))}; scancel {q(job)}",
                         f"cancelling Slurm job {job}")

    def close(self) -> None:
        self.session.close()


def _print_key(name: str, key: str) -> str:
    """Shell that prints ``$d <name> {"<key>": <value>}``: the first ``key`` in the JSON file,
    the top-level one (the protocol's writers put ``state`` and ``ok`` before any output)."""
    pattern = shlex.quote(f'"{key}": *"*[a-z_]*"*')
    file = shlex.quote(name)
    return ("printf '%s %s {%s}\\n' \"$d\" " + file
            + f' "$(grep -o {pattern} "$d/"{file} | head -n 1)"')


def _slurm_ending(execution_id: str, job: str, slurm_log: str,
                  files: dict[str, bytes | None]) -> dict[str, Any] | None:
    """Slurm's account of why a job's worker ended without a response, or None.

    A missing worker (the batch script's ``worker_missing`` note), else the first of
    :data:`_SLURM_ENDINGS` in the job's output. A job cancelled through this backend (the
    folder has a ``cancel`` marker) has none but its time limit: the protocol reports it
    cancelled, whatever an earlier run of a requeued job left in the output.
    """
    lowered = slurm_log.lower()
    ending = next((e for e in _SLURM_ENDINGS if e[0] in lowered), None)
    if files.get(CANCEL) is not None and (ending is None or ending[2] != "timeout"):
        return None
    missing = files.get(WORKER_MISSING)
    if missing is not None:
        message = (f"{missing.decode('utf-8', 'replace').strip()}. Make the worker available "
                   "on the compute nodes with preparation_script_before, e.g. ['source "
                   "/path/to/venv/bin/activate'] (the environment must have hqs-sdk and the "
                   "task's package installed).")
        return error_response(execution_id, "failed", "worker_missing", "WorkerMissing",
                              message, None)
    if ending is None:
        return None
    _, state, kind, type_, message = ending
    return error_response(execution_id, state, kind, type_, f"{message} (Slurm job {job})",
                          None)
