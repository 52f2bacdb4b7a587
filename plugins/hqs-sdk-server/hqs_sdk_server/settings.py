"""The service's settings, from the command line (see ``hqs-sdk-server serve --help``)."""

from __future__ import annotations

import os
from pathlib import Path

import attrs

from hqs_sdk.backend import BackendConfiguration

__all__ = ["Settings", "default_data_dir"]


def default_data_dir() -> Path:
    base = os.environ.get("XDG_DATA_HOME") or os.path.expanduser("~/.local/share")
    return Path(base) / "hqs-sdk-server"


@attrs.frozen
class Settings:
    """Where the service keeps its data and how it runs executions."""

    data_dir: Path = attrs.field(factory=default_data_dir, converter=Path)
    #: SQLAlchemy URL; default: the SQLite file ``hqs-sdk-server.db`` in ``data_dir``.
    database: str | None = None
    host: str = "127.0.0.1"
    port: int = 8750
    #: How many executions run at once; the others wait in the database.
    max_running: int = attrs.field(factory=lambda: len(os.sched_getaffinity(0)))
    #: Modules whose tasks the service runs besides the registered ones.
    tasks_from: tuple[str, ...] = attrs.field(default=(), converter=tuple)
    #: Largest JSON request body, in bytes.
    max_body_bytes: int = 16 * 1024 * 1024
    #: The URL clients reach the service at (for the OpenAPI document and file URLs);
    #: default: the URL each request came to.
    public_url: str | None = None
    #: How long a signed file URL works, in seconds.
    url_lifetime_s: int = 7 * 24 * 3600
    #: Largest file one upload may carry, in bytes.
    max_file_bytes: int = 64 * 1024**3

    @property
    def database_url(self) -> str:
        return self.database or f"sqlite:///{self.data_dir / 'hqs-sdk-server.db'}"

    @property
    def work_dir(self) -> Path:
        """The local backend's folder; an execution's files are in ``executions/<run id>``."""
        return self.data_dir / "work"

    def backend_config(self) -> BackendConfiguration:
        """The backend executions run on: the local one, with its folder in ``data_dir``."""
        from hqs_sdk.config import BackendConfigurationLocal

        config: BackendConfiguration = BackendConfigurationLocal(
            work_dir=str(self.work_dir))
        return config
