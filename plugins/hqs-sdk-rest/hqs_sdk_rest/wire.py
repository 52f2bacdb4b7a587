"""Deprecated: the service's protocol is :mod:`hqs_sdk.wire`, in the core.

The protocol moved to the core so that the service (``hqs-sdk-server``) no longer installs
this client to get it. Every name is the same object there; import ``hqs_sdk.wire`` instead.
"""

from __future__ import annotations

from hqs_sdk.wire import *  # noqa: F403 (every public name, as the same objects)
from hqs_sdk.wire import __all__ as __all__
