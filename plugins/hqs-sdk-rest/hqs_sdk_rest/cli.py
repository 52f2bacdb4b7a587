"""``hqs-sdk login``, ``logout`` and ``executions``: the REST backend's commands.

Examples::

    hqs-sdk login --url https://tasks.example.org        # asks for the token
    echo "$TOKEN" | hqs-sdk login --url https://tasks.example.org --token-stdin
    hqs-sdk executions list --state failed --since 2024-05-01
    hqs-sdk executions show 0f6c3f1e... --json
    hqs-sdk logout

``login`` checks the token with the service before it saves anything. ``executions`` uses
:class:`hqs_sdk_rest.Client`, the client of the Python API, with the URL and token found as
for the backend: ``HQS_SDK_URL`` and ``HQS_SDK_TOKEN``, then the saved login.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from datetime import UTC, datetime
from itertools import islice
from typing import TYPE_CHECKING, Any

from hqs_sdk.cli_command import CliCommand
from hqs_sdk.errors import (
    BackendRejectedError,
    BackendUnavailableError,
    ConfigurationError,
)
from hqs_sdk.models import ExecutionState
from hqs_sdk_rest.config import BackendConfigurationREST, credentials_file, save
from hqs_sdk_rest.errors import HTTPStatusError, TokenRefused, causes

if TYPE_CHECKING:
    from hqs_sdk_rest.client import Client

__all__ = ["add_commands", "commands"]

#: How long ``login`` retries a service that does not answer (the user is waiting).
LOGIN_RETRY_S = 3.0
#: The same for the other commands.
COMMAND_RETRY_S = 10.0


def _why(exc: BaseException) -> str:
    """A few words on why a service could not be reached, read from the kinds of error in
    the chain (never from their text); the first row of the table found anywhere wins."""
    import socket
    import ssl

    import requests

    chain = list(causes(exc))
    status = next((e.status_code for e in chain if isinstance(e, HTTPStatusError)), None)
    if status is not None:
        return f"it answers HTTP {status}"
    why: tuple[tuple[type[BaseException], str], ...] = (
        # SSLCertVerificationError is an SSLError too: the more precise one first.
        (ssl.SSLCertVerificationError, "its TLS certificate is not trusted"),
        (ssl.SSLError, "the TLS handshake failed"),
        (ConnectionRefusedError, "connection refused: nothing listens there"),
        (socket.gaierror, "unknown host name"),
        (TimeoutError, "it did not answer in time"),
        (requests.Timeout, "it did not answer in time"),
        (json.JSONDecodeError, "its answers are not JSON, so it is not an hqs-sdk-server service"),
        (requests.exceptions.ChunkedEncodingError, "its answer broke off in the middle"),
        (ConnectionResetError, "it closed the connection"),
    )
    for kind, text in why:
        found = next((e for e in chain if isinstance(e, kind)), None)
        if found is not None:
            if isinstance(found, socket.gaierror) and found.errno == socket.EAI_AGAIN:
                return "the host name could not be resolved"
            return text
    return "no answer"


@contextmanager
def _reaching(url: str, hint: str) -> Iterator[None]:
    """Turn the client's "did not answer" into one line about this URL (``hint``: what next)."""
    try:
        yield
    except BackendUnavailableError as exc:
        raise BackendUnavailableError(f"cannot reach {url} ({_why(exc)}); {hint}") from exc


def _client() -> Client:
    from hqs_sdk_rest.client import Client

    client = Client()
    client.retry_seconds = COMMAND_RETRY_S
    return client


def _local_time(value: datetime | None) -> str:
    return value.astimezone().strftime("%Y-%m-%d %H:%M:%S") if value is not None else ""


def _when(text: str) -> datetime:
    """An ISO 8601 date or time from the command line; without a zone it is local time."""
    try:
        value = datetime.fromisoformat(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not an ISO 8601 date or time (e.g. 2024-05-01, 2024-05-01T14:30 or "
            "2024-05-01T14:30:00+02:00)") from exc
    # astimezone() reads a naive value as local time; the service compares in UTC.
    return value.astimezone(UTC)


def _limit(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise argparse.ArgumentTypeError(f"--limit must be a whole number >= 0, not {text!r}")
    return value


# -- login / logout ---------------------------------------------------------------------------


def _saved_url() -> str | None:
    try:
        saved = json.loads(credentials_file().read_text())
    except (OSError, ValueError):
        return None
    url = saved.get("url") if isinstance(saved, dict) else None
    return url if isinstance(url, str) else None


def _read_token(url: str, from_stdin: bool) -> str:
    if not from_stdin and sys.stdin is not None and sys.stdin.isatty():
        import getpass

        try:
            token = getpass.getpass(f"Token for {url}: ")
        except EOFError:
            token = ""
    else:
        token = sys.stdin.readline() if sys.stdin is not None else ""
    token = token.strip()
    if not token:
        raise ConfigurationError(
            f"no token given for {url}; nothing was saved. Type it when asked, or pipe it in "
            "with --token-stdin (the service's administrator creates tokens with "
            "`hqs-sdk-server token create --user NAME`)")
    return token


def _cmd_login(args: argparse.Namespace) -> int:
    from hqs_sdk import wire
    from hqs_sdk_rest.client import Client

    url = args.url or os.environ.get("HQS_SDK_URL") or _saved_url()
    if not url:
        raise ConfigurationError("give the service's URL: hqs-sdk login --url https://...")
    url = BackendConfigurationREST(url=url.strip().rstrip("/")).url
    assert url is not None
    token = _read_token(url, args.token_stdin)
    client = Client(url=url, token=token)
    client.retry_seconds = LOGIN_RETRY_S
    try:
        with _reaching(url, "check the URL and that the service is running. Nothing was saved"):
            who = client.whoami()
    except TokenRefused as exc:
        raise ConfigurationError(
            f"{url} refused the token: it is unknown, revoked or mistyped. Nothing was saved; "
            "the service's administrator creates tokens with "
            "`hqs-sdk-server token create --user NAME`") from exc
    except BackendRejectedError as exc:
        raise BackendRejectedError(
            f"{url} does not look like an hqs-sdk-server service ({exc}); check the URL. "
            "Nothing was saved") from exc
    if who.api_version != wire.API_VERSION:
        print(f"hqs-sdk: warning: {url} speaks API version {who.api_version}, this client "
              f"version {wire.API_VERSION}; some commands may fail", file=sys.stderr)
    path = save(url, token)
    print(f"logged in to {url} as {who.user}; saved in {path}")
    if os.environ.get("HQS_SDK_URL", url).rstrip("/") != url or os.environ.get("HQS_SDK_TOKEN"):
        print("hqs-sdk: note: HQS_SDK_URL or HQS_SDK_TOKEN is set in this environment and is "
              "used before the saved login", file=sys.stderr)
    return 0


def _cmd_logout(args: argparse.Namespace) -> int:
    path = credentials_file()
    url = _saved_url()
    try:
        path.unlink()
    except FileNotFoundError:
        print(f"not logged in (there is no {path})")
        return 0
    except OSError as exc:
        raise ConfigurationError(f"cannot remove {path}: {exc}") from exc
    print(f"logged out of {url or 'the service'}: removed {path} (the token itself stays "
          "valid until the service's administrator revokes it)")
    if os.environ.get("HQS_SDK_TOKEN"):
        print("hqs-sdk: note: HQS_SDK_TOKEN is still set in this environment", file=sys.stderr)
    return 0


# -- executions -------------------------------------------------------------------------------


def _cmd_list(args: argparse.Namespace) -> int:
    from hqs_sdk.serialization import converter

    client = _client()
    limit: int = args.limit
    page_size = min(limit + 1, 1000) if limit else 1000
    found = client.executions(task=args.task, state=args.state, since=args.since,
                              until=args.until, page_size=page_size)
    with _reaching(client.url, "check that the service is running"):
        items = list(islice(found, limit + 1) if limit else found)
    more = bool(limit) and len(items) > limit
    items = items[:limit] if limit else items
    if args.json:
        print(json.dumps(converter.unstructure(items), indent=2, ensure_ascii=False))
    else:
        rows = [(i.id, i.task_name, i.task_version, i.state.value, _local_time(i.created_at),
                 " ".join(i.message.split())) for i in items]
        widths = [max([len(row[c]) for row in rows] + [0]) for c in range(5)]
        for row in rows:
            line = "  ".join(value.ljust(width) for value, width in zip(row, widths, strict=False))
            print(f"{line}  {row[5]}".rstrip())
    count = f"{len(items)} execution{'' if len(items) == 1 else 's'}"
    if more:
        count += " (the newest; more match: raise --limit, or --limit 0 for all)"
    print(count, file=sys.stderr)
    return 0


def _indented(text: str) -> str:
    return "\n".join(f"    {line}" for line in text.rstrip("\n").splitlines())


def _show_text(info: Any, response: Any) -> None:
    fields = [("id", info.id), ("task", f"{info.task_name} {info.task_version}"),
              ("state", info.state.value), ("created", _local_time(info.created_at)),
              ("started", _local_time(info.started_at)),
              ("finished", _local_time(info.finished_at))]
    if info.progress is not None and not info.state.finished:
        fraction = info.progress.fraction
        done = f"{fraction:.0%} " if fraction is not None else ""
        fields.append(("progress", f"{done}{info.progress.message}".strip()))
    if info.message:
        fields.append(("message", info.message))
    for name, value in fields:
        if value:
            print(f"{name + ':':<10}{value}")
    if response is None:
        if info.state.finished:
            print("response: not available yet; try again in a moment")
        return
    _show_response(response)


def _show_response(response: Any) -> None:
    """The output or error, log tail and metrics of a finished execution, as text."""
    from hqs_sdk.serialization import converter

    if response.error is None:
        output = json.dumps(converter.unstructure(response.output), indent=2,
                            ensure_ascii=False)
        if "\n" in output:
            print(f"output:\n{_indented(output)}")
        else:
            print(f"{'output:':<10}{output}")
    else:
        error = response.error
        print(f"{'error:':<10}{error.type}: {error.message} ({error.kind})")
        if error.traceback:
            print(f"traceback:\n{_indented(error.traceback)}")
    if response.log_tail:
        print(f"log (last lines):\n{_indented(response.log_tail)}")
    metrics = response.metrics
    parts = [f"{label} {value:.{digits}f} {unit}" for label, value, digits, unit in (
        ("wall", metrics.wall_time_s, 2, "s"), ("cpu", metrics.cpu_time_s, 2, "s"),
        ("peak memory", metrics.peak_memory_mb, 1, "MiB"), ("queued", metrics.queued_s, 2, "s"))
        if value is not None]
    if parts:
        print(f"{'metrics:':<10}{', '.join(parts)}")


def _cmd_show(args: argparse.Namespace) -> int:
    from hqs_sdk.serialization import converter
    from hqs_sdk_rest.client import NotFinished, NotFound

    client = _client()
    with _reaching(client.url, "check that the service is running"):
        try:
            info = client.get(args.id)
        except NotFound as exc:
            raise BackendRejectedError(
                f"{client.url} has no execution {args.id!r} of yours; "
                "`hqs-sdk executions list` shows their ids") from exc
        response = None
        if info.state.finished:
            with suppress(NotFinished):  # finished a moment ago; the response is being stored
                response = client.response(args.id)
    if args.json:
        print(json.dumps({"execution": converter.unstructure(info),
                          "response": converter.unstructure(response)},
                         indent=2, ensure_ascii=False))
    else:
        _show_text(info, response)
    return 0


# -- the parsers ------------------------------------------------------------------------------


def commands() -> list[CliCommand]:
    """``login``, ``logout`` and ``executions`` (see the module docstring), as the records the
    plugin's ``hqs_sdk_commands`` hook yields."""
    return [
        CliCommand("login", "save the REST service's URL and a token for it (checked first)",
                   _login_arguments, _cmd_login,
                   description="Check a token with the service and save the URL and token in "
                               f"{credentials_file()} (mode 0600) for the REST backend and these "
                               "commands. The token is asked for without echo when a terminal "
                               "is attached, otherwise read from the first line of stdin."),
        CliCommand("logout", "forget the saved REST service and token", None, _cmd_logout),
        CliCommand("executions", "your executions on the REST service", _executions_arguments),
    ]


def add_commands(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the commands of :func:`commands` to an ``add_subparsers()`` object (the form of the
    deprecated ``hqs_sdk_cli_commands`` hook). Deprecated: use :func:`commands`."""
    import warnings

    warnings.warn("hqs_sdk_rest.cli.add_commands is deprecated: the commands are the records "
                  "of hqs_sdk_rest.cli.commands(), for the hqs_sdk_commands hook",
                  DeprecationWarning, stacklevel=2)
    for command in commands():
        parser = subparsers.add_parser(command.name, help=command.help,
                                       description=command.description or command.help)
        if command.run is not None:
            parser.set_defaults(handler=command.run)
        if command.add_arguments is not None:
            command.add_arguments(parser)


def _login_arguments(login: argparse.ArgumentParser) -> None:
    """``hqs-sdk login [--url URL] [--token-stdin]``."""
    login.add_argument("--url", help="the service, e.g. https://tasks.example.org (default: "
                                     "HQS_SDK_URL, else the saved one)")
    login.add_argument("--token-stdin", action="store_true",
                       help="read the token from stdin even when a terminal is attached")


def _executions_arguments(executions: argparse.ArgumentParser) -> None:
    """``hqs-sdk executions list|show``."""
    executions_sub = executions.add_subparsers(dest="executions_command", required=True,
                                               metavar="{list,show}")
    listing = executions_sub.add_parser(
        "list", help="one line per execution, newest first",
        description="One line per execution, newest first: id, task, version, state, created "
                    "(local time) and message.")
    listing.add_argument("--task", help="only executions of this task")
    listing.add_argument("--state", choices=[s.value for s in ExecutionState
                                             if s is not ExecutionState.CREATED],
                         help="only executions in this state")
    listing.add_argument("--since", type=_when, metavar="ISO",
                         help="only those created at or after this time (local time unless it "
                              "has a zone)")
    listing.add_argument("--until", type=_when, metavar="ISO",
                         help="only those created before this time")
    listing.add_argument("--limit", type=_limit, default=100, metavar="N",
                         help="at most N executions (default 100; 0 for all)")
    listing.add_argument("--json", action="store_true", help="a JSON array instead")
    listing.set_defaults(handler=_cmd_list)

    show = executions_sub.add_parser(
        "show", help="one execution, with its output or error once it finished")
    show.add_argument("id", help="the execution id (from `hqs-sdk executions list`)")
    show.add_argument("--json", action="store_true",
                      help='{"execution": ..., "response": ... or null} instead')
    show.set_defaults(handler=_cmd_show)
