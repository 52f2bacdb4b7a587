"""Kill this script while it waits, run it again, and it re-attaches to the running task.

    python examples/reattach.py      # press Ctrl+C (or kill it) during the countdown
    python examples/reattach.py      # picks up the same execution, does not start a new one
"""

from hqs_sdk_example import countdown

from hqs_sdk import global_config


@global_config.on_submitted
def submitted(request):
    print(f"submitted {request.task_name} as execution {request.execution_id}")


@global_config.on_reattached
def reattached(request):
    print(f"re-attached to execution {request.execution_id}, started before")


@global_config.on_progress
def show(request, progress):
    print(f"  {progress.message}", flush=True)


print(countdown(15))
