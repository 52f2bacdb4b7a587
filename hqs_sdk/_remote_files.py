"""The former name of :mod:`hqs_sdk.remote_files`, kept for hqs-sdk-server 0.1 releases that
import it; new code imports :mod:`hqs_sdk.remote_files`. Importing this module warns
(``DeprecationWarning``)."""

import warnings

from hqs_sdk.remote_files import POLICY_ENV, FetchPolicy, FetchRefused, open_url, prefixes

__all__ = ["POLICY_ENV", "FetchPolicy", "FetchRefused", "open_url", "prefixes"]

warnings.warn("hqs_sdk._remote_files is deprecated: import hqs_sdk.remote_files instead (the "
              "same names and objects)", DeprecationWarning, stacklevel=2)
