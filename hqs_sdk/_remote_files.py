"""The former name of :mod:`hqs_sdk.remote_files`, kept for hqs-sdk-server 0.1 releases that
import it; new code imports :mod:`hqs_sdk.remote_files`."""

from hqs_sdk.remote_files import POLICY_ENV, FetchPolicy, FetchRefused, open_url, prefixes

__all__ = ["POLICY_ENV", "FetchPolicy", "FetchRefused", "open_url", "prefixes"]
