"""The tasks dashboard: executions in a web browser.

Two ways in, one implementation:

- ``hqs-sdk ui [--cache FILE]`` serves the executions this machine's scripts made (every cache
  they opened), on 127.0.0.1 with a secret in its URL (:mod:`hqs_sdk_dashboard.local`);
- the task service mounts :func:`hqs_sdk_dashboard.service.create_service_dashboard` at
  ``/ui/``, each user seeing their own executions (:mod:`hqs_sdk_dashboard.service`).

Both read through :class:`hqs_sdk_dashboard.source.ExecutionSource`.
"""

from __future__ import annotations

__version__ = "0.1.0"
