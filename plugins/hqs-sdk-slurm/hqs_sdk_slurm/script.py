"""The batch script and the ``sbatch`` command line, with every value shell-quoted.

Options travel on the ``sbatch`` command line, not as ``#SBATCH`` lines: sbatch does not apply
shell quoting to those, and a path or task name must never be able to inject anything.

The script runs the worker's command line as the core's protocol describes it for a
scheduler (:meth:`hqs_sdk.control.ControlFolder.command`: no lock handed over, Slurm's own
SIGTERM is not a cancel); what is Slurm's here is finding the array index's control folder,
the preparation lines, and the ``worker_missing`` note when no worker is on the node.
"""

from __future__ import annotations

import math
import re
import shlex

from hqs_sdk.control import ControlFolder
from hqs_sdk.models import Provisioning
from hqs_sdk_slurm.config import BackendConfigurationSlurm

__all__ = ["WORKER_MISSING", "batch_script", "sbatch_command", "sbatch_options", "worker_lines"]

#: The worker as the compute node finds it, on the ``PATH`` the preparation lines set.
WORKER = ("hqs-task-execute",)
#: Written into the control folder by the batch script when the node has no worker: why.
WORKER_MISSING = "worker_missing"


def sbatch_options(provisioning: Provisioning) -> list[str]:
    """``--cpus-per-task``, ``--mem``, ``--gres`` and ``--time`` for one provisioning."""
    options = [f"--cpus-per-task={max(1, math.ceil(provisioning.vcpu or 1))}"]
    if provisioning.memory_mb:
        options.append(f"--mem={provisioning.memory_mb}M")
    if provisioning.gpu:
        options.append(f"--gres=gpu:{provisioning.gpu}")
    if provisioning.timeout_s:
        # The worker enforces the exact timeout; Slurm's limit is a backstop with a margin.
        minutes = math.ceil(provisioning.timeout_s / 60) + 1
        options.append(f"--time={minutes}")
    return options


def job_name(task_name: str) -> str:
    """A job name Slurm and shells accept whatever the task is called."""
    return "hqs-" + (re.sub(r"[^A-Za-z0-9_.-]", "_", task_name)[:40] or "task")


def sbatch_command(config: BackendConfigurationSlurm, task_name: str, batch_dir: str,
                   count: int, provisioning: Provisioning) -> str:
    """The shell command that submits one job array for the batch."""
    args = ["sbatch", "--parsable", f"--job-name={job_name(task_name)}",
            f"--array=0-{count - 1}", f"--output={batch_dir}/slurm-%A_%a.out",
            *sbatch_options(provisioning), *config.sbatch_extra, f"{batch_dir}/job.sh"]
    return " ".join(shlex.quote(a) for a in args)


def batch_script(config: BackendConfigurationSlurm, batch_dir: str,
                 environment: str | None = None) -> str:
    """A script that runs ``hqs-task-execute`` on the array index's line of ``dirs.txt``.

    ``environment`` is a deployed virtual environment, activated after
    ``preparation_script_before`` (which may load the Python it was made from).
    """
    dirs = shlex.quote(f"{batch_dir}/dirs.txt")
    program = shlex.quote(WORKER[0])
    activate = [] if environment is None else [
        "# The task's deployed environment (deploy=True):",
        f"export VIRTUAL_ENV={shlex.quote(environment)}",
        'export PATH="$VIRTUAL_ENV/bin:$PATH"',
    ]
    return "\n".join([
        f"#!{config.slurm_script_shell}",
        "# Written by hqs-sdk-slurm. What the task writes (its response, log, files) is the",
        "# user's alone: slurm_tmp_io is seen by other users of the cluster.",
        "umask 077",
        "# The control folder first, so preparation cannot break it:",
        f'DIR=$(sed -n "$((SLURM_ARRAY_TASK_ID + 1))p" {dirs})',
        '[ -n "$DIR" ] || { echo "no control folder for array index $SLURM_ARRAY_TASK_ID"; '
        "exit 1; }",
        "# preparation_script_before and preparation_script_after:",
        *config.preparation_script_before,
        *activate,
        *config.preparation_script_after,
        "",
        f"if ! command -v {program} >/dev/null 2>&1; then",
        f'    echo "{program} was not found on $(hostname); PATH=$PATH" '
        f'> "$DIR/{WORKER_MISSING}"',
        "    exit 127",
        "fi",
        "# Slurm's own SIGTERM (time limit, preemption, node failure) leaves no response:",
        *worker_lines(),
        "",
    ])


def worker_lines() -> list[str]:
    """The lines that run the worker on the control folder in ``$DIR``.

    The command line is the protocol's for a scheduler (see the module docstring), made for
    a stand-in folder that then becomes ``"$DIR"``; its environment is exported.
    """
    stand_in = ControlFolder("/control-folder")
    command = stand_in.command(WORKER, env={}, lock_fd=None, scheduler_sigterm=True)
    exports = [f"export {name}={shlex.quote(value)}" for name, value in command.env.items()]
    argv = ['"$DIR"' if arg == stand_in.path else shlex.quote(arg) for arg in command.argv]
    return [*exports, "exec " + " ".join(argv)]
