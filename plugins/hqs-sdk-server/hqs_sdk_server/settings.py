"""The service's settings, from the command line (see ``hqs-sdk-server serve --help``)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING

import attrs

from hqs_sdk.backend import BackendConfiguration

if TYPE_CHECKING:
    from hqs_sdk.remote_files import FetchPolicy

__all__ = ["Settings", "SettingsError", "default_data_dir"]


class SettingsError(ValueError):
    """A setting that cannot work; the message says which and what to do."""


def _masked(url: str | None) -> str | None:
    from hqs_sdk_server.db import masked

    return None if url is None else masked(url)


def default_data_dir() -> Path:
    base = os.environ.get("XDG_DATA_HOME") or os.path.expanduser("~/.local/share")
    return Path(base) / "hqs-sdk-server"


@attrs.frozen
class Settings:
    """Where the service keeps its data and how it runs executions."""

    data_dir: Path = attrs.field(factory=default_data_dir, converter=Path)
    #: SQLAlchemy URL; default: the SQLite file ``hqs-sdk-server.db`` in ``data_dir``.
    database: str | None = attrs.field(default=None, repr=lambda url: repr(_masked(url)))
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
    #: A JSON file naming the backend executions run on and its configuration, e.g.
    #: ``{"backend": "slurm", "login_host": "...", "slurm_tmp_io": "..."}``; default: the
    #: local backend with its folder in ``data_dir``.
    backend_file: Path | None = attrs.field(default=None, converter=attrs.converters.optional(Path))
    #: The environment of the tasks, besides the standard allow-list (see docs/security.md):
    #: ``NAME`` or ``PATTERN*`` passes the service's own variable, ``NAME=VALUE`` sets one.
    task_env: tuple[str, ...] = attrs.field(default=(), converter=tuple)

    #: URL prefixes (``https://data.example.org/``) whose files workers may fetch for users.
    allow_fetch: tuple[str, ...] = attrs.field(default=(), converter=tuple)
    #: Networks (``10.1.0.0/16``) workers may fetch from although they are not public.
    allow_fetch_addresses: tuple[str, ...] = attrs.field(default=(), converter=tuple)
    #: Seconds a client has to send a request's head, and in which a body must progress.
    request_read_timeout_s: float = 20.0

    def fetch_policy(self, config: BackendConfiguration) -> FetchPolicy:
        """What workers may fetch for users: the allowed prefixes and networks, and
        ``sftp://`` only to the login host of a Slurm backend, for files in its
        ``slurm_tmp_io`` (whose execution folders have unguessable names)."""
        from hqs_sdk.remote_files import FetchPolicy, prefixes

        login_host = getattr(config, "login_host", None)
        io = getattr(config, "slurm_tmp_io", None)
        try:
            return FetchPolicy(prefixes(self.allow_fetch), self.allow_fetch_addresses,
                               (login_host,) if isinstance(login_host, str) else (),
                               (io,) if isinstance(io, str) else ())
        except ValueError as exc:
            raise SettingsError(f"--allow-fetch / --allow-fetch-address: {exc}") from None

    @property
    def database_url(self) -> str:
        return self.database or f"sqlite:///{self.data_dir / 'hqs-sdk-server.db'}"

    @property
    def work_dir(self) -> Path:
        """The local backend's folder; an execution's files are in ``executions/<run id>``."""
        return self.data_dir / "work"

    def backend_config(self) -> BackendConfiguration:
        """The backend executions run on (see :attr:`backend_file`)."""
        from hqs_sdk.plugins import registry

        if self.backend_file is None:
            from hqs_sdk.config import BackendConfigurationLocal

            pass_env, env = self._task_env()
            config: BackendConfiguration = BackendConfigurationLocal(
                work_dir=str(self.work_dir), pass_env=pass_env, env=env)
            return config
        where = f"the backend file {self.backend_file}"
        try:
            data = json.loads(self.backend_file.read_text())
        except OSError as exc:
            raise SettingsError(f"cannot read {where}: {exc.strerror}") from None
        except ValueError as exc:
            raise SettingsError(f"{where} is not JSON: {exc}") from None
        if not isinstance(data, dict) or not isinstance(data.get("backend"), str):
            raise SettingsError(f'{where} must be a JSON object with "backend": "<name>" and '
                                "that backend's configuration fields")
        name = data.pop("backend")
        if name == "local":  # its folder in the data folder, with the service's other data
            data.setdefault("work_dir", str(self.work_dir))
            pass_env, env = self._task_env()
            data["pass_env"] = [*data.get("pass_env", ()), *pass_env]
            data["env"] = {**data.get("env", {}), **env}
        elif self.task_env:
            raise SettingsError(f"--task-env applies to the local backend; {where} names the "
                                f"backend {name!r}: set the tasks' environment there (e.g. "
                                "preparation_script_before of the Slurm backend)")
        backends = registry().backends
        if name not in backends or backends[name].backend_class.delegates_to_service:
            usable = ", ".join(sorted(b for b, spec in backends.items()
                                      if not spec.backend_class.delegates_to_service))
            raise SettingsError(f"{where} names the backend {name!r}; the installed backends "
                                f"the service can use are: {usable}")
        try:
            config = backends[name].configuration_class(**data)
        except (TypeError, ValueError) as exc:
            raise SettingsError(f"{where}: {exc}") from None
        return config

    def _task_env(self) -> tuple[tuple[str, ...], dict[str, str]]:
        """``pass_env`` and ``env`` of the local backend, from :attr:`task_env`."""
        from hqs_sdk.worker import SERVICE_ENV

        pass_env: list[str] = []
        env = {SERVICE_ENV: "1"}  # test-only tasks refuse to run under the service
        for item in self.task_env:
            name, sep, value = item.partition("=")
            if not name:
                raise SettingsError(f"--task-env {item!r}: give NAME, PATTERN* or NAME=VALUE")
            if sep:
                env[name] = value
            else:
                pass_env.append(name)
        return tuple(pass_env), env

    def execution_folders(self, config: BackendConfiguration, run_id: str) -> list[str]:
        """Where the execution ``run_id`` writes its files: what its output may refer to.

        The backend says (:meth:`~hqs_sdk.backend.Backend.output_locations`); a running
        service asks its scheduler's backend instead of making one per call like this.
        """
        from hqs_sdk.plugins import registry

        # Not closed: a backend's close may end what it shares with the process's other
        # instances (the Slurm backend's SSH session), and answering opens nothing.
        backend = registry().backend_spec_for(config).backend_class(config)
        return list(backend.output_locations(run_id))
