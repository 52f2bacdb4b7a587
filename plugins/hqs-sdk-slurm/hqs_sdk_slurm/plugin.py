"""Registers the ``slurm`` backend with hqs-sdk (entry point ``slurm``)."""

from __future__ import annotations

from collections.abc import Iterator

from hqs_sdk.backend import BackendSpec
from hqs_sdk.fileref import FileOpenerSpec
from hqs_sdk.hookspecs import hookimpl


@hookimpl
def hqs_sdk_backends() -> Iterator[BackendSpec]:
    from hqs_sdk_slurm.backend import SlurmBackend
    from hqs_sdk_slurm.config import BackendConfigurationSlurm

    yield BackendSpec("slurm", BackendConfigurationSlurm, SlurmBackend,
                      "Slurm jobs submitted over SSH")


@hookimpl
def hqs_sdk_file_openers() -> Iterator[FileOpenerSpec]:
    from hqs_sdk_slurm.files import SCHEME, open_sftp

    yield FileOpenerSpec(SCHEME, open_sftp, "files Slurm tasks wrote, read over SSH")
