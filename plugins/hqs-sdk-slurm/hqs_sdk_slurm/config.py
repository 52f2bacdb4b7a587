"""``BackendConfigurationSlurm`` and the parsing of its OpenSSH-style ``ssh_extra`` options."""

from __future__ import annotations

import os
import posixpath
from typing import Any

import attrs

from hqs_sdk.backend import BackendConfiguration
from hqs_sdk.errors import ConfigurationError

__all__ = ["BackendConfigurationSlurm", "SSHOptions", "parse_ssh_extra"]


def _strings(value: Any) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        raise ConfigurationError(f"expected a list of strings, got the string {value!r}")
    items = tuple(value)
    for item in items:
        if not isinstance(item, str):
            raise ConfigurationError(f"expected a list of strings, got {item!r} in {value!r}")
    return items


def _absolute(_: Any, attribute: Any, value: Any) -> None:
    if value is None:
        return
    if not isinstance(value, str) or not posixpath.isabs(value):
        raise ConfigurationError(f"{attribute.name} must be an absolute path, got {value!r}")


def _required_text(_: Any, attribute: Any, value: Any) -> None:
    if not isinstance(value, str) or not value.strip():
        raise ConfigurationError(f"{attribute.name} is required, got {value!r}")


def _port(_: Any, __: Any, value: Any) -> None:
    if value is not None and (isinstance(value, bool) or not isinstance(value, int)
                              or not 0 < value < 65536):
        raise ConfigurationError(f"port must be a whole number from 1 to 65535, got {value!r}")


@attrs.frozen
class SSHOptions:
    """What ``ssh_extra`` amounts to."""

    identity_files: tuple[str, ...] = ()
    port: int | None = None
    jump: str | None = None
    options: tuple[tuple[str, str], ...] = ()
    config_file: str | None = None


_KNOWN_O = {"userknownhostsfile", "globalknownhostsfile", "stricthostkeychecking",
            "serveraliveinterval", "user", "port", "identityfile", "proxyjump", "connecttimeout",
            "compression"}

#: The values each ``-o`` option may take (checked when configured, so a typo never turns
#: into a weaker setting); options not listed take any value.
_O_VALUES: dict[str, tuple[str, ...]] = {
    "stricthostkeychecking": ("yes", "accept-new", "no", "off", "ask"),
    "compression": ("yes", "no"),
}
_O_NUMBERS = ("serveraliveinterval", "connecttimeout", "port")


_WITH_VALUE = ("-i", "-p", "-J", "-o", "-F")


def parse_ssh_extra(args: tuple[str, ...]) -> SSHOptions:
    """Read the common OpenSSH options (``-i``, ``-p``, ``-J``, ``-F``, ``-o Key=Value``)."""
    identity: list[str] = []
    port = jump = config_file = None
    options: list[tuple[str, str]] = []
    items = list(args)
    while items:
        flag = items.pop(0)
        if flag in _WITH_VALUE:
            if not items:
                raise ConfigurationError(f"ssh_extra: {flag} needs a value")
            value = items.pop(0)
        elif len(flag) > 2 and flag[:2] in _WITH_VALUE:
            flag, value = flag[:2], flag[2:]
        else:
            raise ConfigurationError(
                f"ssh_extra: {flag!r} is not supported; use -i FILE, -p PORT, "
                "-J [USER@]HOST[:PORT], -F CONFIG_FILE or -o Key=Value, or put the setting in "
                "~/.ssh/config"
            )
        if flag == "-i":
            identity.append(os.path.expanduser(value))
        elif flag == "-p":
            try:
                port = int(value)
            except ValueError:
                raise ConfigurationError(
                    f"ssh_extra: -p needs a port number, got {value!r}") from None
        elif flag == "-J":
            jump = value
        elif flag == "-F":
            config_file = os.path.expanduser(value)
        else:
            key, sep, option = value.partition("=")
            if not sep or key.lower() not in _KNOWN_O:
                raise ConfigurationError(
                    f"ssh_extra: -o {value!r} is not supported; known: "
                    f"{', '.join(sorted(_KNOWN_O))} (as Key=Value)"
                )
            key = key.lower()
            allowed = _O_VALUES.get(key)
            if allowed is not None and option.lower() not in allowed:
                raise ConfigurationError(
                    f"ssh_extra: -o {value!r}: {key} takes one of {', '.join(allowed)}")
            if key in _O_NUMBERS and not option.strip().isdigit():
                raise ConfigurationError(
                    f"ssh_extra: -o {value!r}: {key} takes a whole number")
            options.append((key, option.lower() if allowed is not None else option))
    return SSHOptions(tuple(identity), port, jump, tuple(options), config_file)


@attrs.frozen
class BackendConfigurationSlurm(BackendConfiguration):
    """Run tasks as Slurm jobs on a cluster reached through its login node.

    Attributes:
        login_host: the login node's host name (or an alias from ``~/.ssh/config``).
        slurm_tmp_io: a folder that the login node and every compute node see; each execution
            gets a sub-folder there.
        slurm_tmp_io_local: the same folder as this machine sees it, if it does (then files
            are read and written directly instead of over SFTP).
        login_user: the SSH user; default from ``~/.ssh/config``, else the local user.
        port: the SSH port; default from ``~/.ssh/config``, else 22.
        ssh_extra: OpenSSH options: ``-i FILE``, ``-p PORT``, ``-J JUMPHOST``, ``-F CONFIG``
            (instead of ``~/.ssh/config``), ``-o Key=Value`` for ``User``, ``Port``,
            ``IdentityFile``, ``ProxyJump``, ``ConnectTimeout``, ``UserKnownHostsFile`` and
            ``GlobalKnownHostsFile`` (several files each, space-separated),
            ``StrictHostKeyChecking`` (``yes``, ``ask`` = refuse unknown keys; ``accept-new``,
            ``no`` = record them; a changed key is always refused), ``ServerAliveInterval``
            (seconds, default 30) and ``Compression``. Each is honoured as ssh does.
        sbatch_extra: extra ``sbatch`` arguments (passed quoted, one argument each).
        slurm_script_shell: the shell of the batch script.
        preparation_script_before: shell lines run first in every job (e.g. activating the
            environment that has ``hqs-task-execute``).
        preparation_script_after: shell lines run after them, just before the task.
        debug_slurm_script: log every generated batch script.
        known_hosts: the user known-hosts file host keys are checked against (besides the
            global ones); default ``UserKnownHostsFile`` from ``ssh_extra`` or the SSH config,
            else ``~/.ssh/known_hosts`` and ``~/.ssh/known_hosts2``. The global files
            (``GlobalKnownHostsFile``, default ``/etc/ssh/ssh_known_hosts`` and
            ``/etc/ssh/ssh_known_hosts2``) are checked too. Unknown or changed keys are
            refused, for jump hosts too (see ``StrictHostKeyChecking`` above).
        deploy: install each task's distribution, ``hqs-sdk`` and their requirements, as
            installed on this client, into a virtual environment under
            ``slurm_tmp_io/deploy`` (built once per version, reused by every client) and run
            the task there. The wheels are made here and uploaded: the cluster needs no index.
        deploy_python: the Python on the login node that deployed environments are made from;
            the compute nodes must see it at the same path, and for wheels with compiled code
            it must be the client's Python version.
    """

    login_host: str = attrs.field(validator=_required_text)
    slurm_tmp_io: str = attrs.field(validator=_absolute)
    slurm_tmp_io_local: str | None = attrs.field(default=None, validator=_absolute)
    login_user: str | None = None
    port: int | None = attrs.field(default=None, validator=_port)
    ssh_extra: tuple[str, ...] = attrs.field(default=(), converter=_strings)
    sbatch_extra: tuple[str, ...] = attrs.field(default=(), converter=_strings)
    slurm_script_shell: str = "/bin/bash"
    preparation_script_before: tuple[str, ...] = attrs.field(default=(), converter=_strings)
    preparation_script_after: tuple[str, ...] = attrs.field(default=(), converter=_strings)
    debug_slurm_script: bool = False
    known_hosts: str | None = None
    deploy: bool = False
    deploy_python: str = attrs.field(default="python3", validator=_required_text)

    def __attrs_post_init__(self) -> None:
        parse_ssh_extra(self.ssh_extra)  # refuse unsupported options when configured
