"""The self-hosted hqs-sdk task service (``hqs-sdk-server serve``); see docs/rest.md."""

from hqs_sdk_server.settings import Settings

__all__ = ["Settings"]
