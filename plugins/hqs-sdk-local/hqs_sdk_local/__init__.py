"""hqs-sdk backend ``local``: tasks run as detached processes on this machine."""

from hqs_sdk_local.backend import BackendConfigurationLocal, LocalBackend

__all__ = ["BackendConfigurationLocal", "LocalBackend"]
