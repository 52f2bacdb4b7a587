"""Progress reports from inside a running task.

Inside a worker, :func:`progress` writes ``progress.json`` in the execution's control folder
(atomically); backends read it while polling and the client fires ``on_progress``. Outside a
worker (e.g. the task function called directly in a test) it only logs.
"""

from __future__ import annotations

import json
import logging
import os

from hqs_sdk.control import CONTROL_DIR_ENV, PROGRESS, write_atomically

__all__ = ["CONTROL_DIR_ENV", "progress"]


def progress(fraction: float | None = None, message: str = "") -> None:
    """Report how far the task is: ``fraction`` in [0, 1] (or None) and a short message.

    Example::

        @task
        def simulate(steps: int) -> float:
            for i in range(steps):
                ...
                progress((i + 1) / steps, f"step {i + 1} of {steps}")
    """
    if fraction is not None and not 0.0 <= float(fraction) <= 1.0:
        raise ValueError(f"progress fraction must be between 0 and 1, got {fraction!r}")
    control = os.environ.get(CONTROL_DIR_ENV)
    if not control:
        logging.getLogger("hqs_sdk").info("progress %s %s", fraction, message)
        return
    write_atomically(os.path.join(control, PROGRESS),
                     json.dumps({"fraction": fraction, "message": str(message)}))
