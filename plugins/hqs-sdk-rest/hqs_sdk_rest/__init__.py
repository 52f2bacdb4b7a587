"""hqs-sdk backend ``rest``: tasks run by an ``hqs-sdk-server`` service, over HTTP."""

from hqs_sdk_rest.backend import RESTBackend
from hqs_sdk_rest.client import Client
from hqs_sdk_rest.config import BackendConfigurationREST
from hqs_sdk_rest.errors import HTTPStatusError

__all__ = ["BackendConfigurationREST", "Client", "HTTPStatusError", "RESTBackend"]
