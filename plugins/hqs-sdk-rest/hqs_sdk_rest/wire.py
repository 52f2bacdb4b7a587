"""Deprecated: the service's protocol is :mod:`hqs_sdk.wire`, in the core.

The protocol moved to the core so that the service (``hqs-sdk-server``) no longer installs
this client to get it. Every name is the same object there; import ``hqs_sdk.wire`` instead.
Importing this module warns (``DeprecationWarning``).
"""

from __future__ import annotations

import warnings

from hqs_sdk.wire import *  # noqa: F403 (every public name, as the same objects)
from hqs_sdk.wire import __all__ as __all__

# stacklevel 2 is the import statement: the import machinery's frames are skipped.
warnings.warn("hqs_sdk_rest.wire is deprecated: the protocol moved to the core; import "
              "hqs_sdk.wire instead (the same names and objects)", DeprecationWarning,
              stacklevel=2)
