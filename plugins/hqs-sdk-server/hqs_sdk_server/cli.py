"""``hqs-sdk-server``: run the service and manage its tokens.

Examples::

    hqs-sdk-server serve                          # 127.0.0.1:8750, SQLite in the data folder
    HQS_SDK_DATABASE_URL=postgresql+psycopg://user:pw@host/db hqs-sdk-server serve --port 9000
    hqs-sdk-server serve --database-url-file /etc/hqs-sdk-server/database-url
    hqs-sdk-server serve --allow-fetch https://data.example.org/   # tasks may read its files
    hqs-sdk-server token create --user alice      # prints the token, once
    hqs-sdk-server token list [--user alice]
    hqs-sdk-server token revoke ID
    hqs-sdk-server migrate                        # bring the database schema up to date
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from hqs_sdk_server.settings import Settings, default_data_dir

__all__ = ["main"]


def _storage_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data-dir", type=Path, default=default_data_dir(),
                        help="folder for the SQLite database, files and work folders "
                             "(default: %(default)s)")
    parser.add_argument("--database-url", default=None,
                        help="SQLAlchemy database URL, e.g. postgresql+psycopg://user@host/db. "
                             "Other users see the command line: give a URL with a password in "
                             f"${DATABASE_URL_ENV} or with --database-url-file instead "
                             "(default: SQLite in the data folder)")
    parser.add_argument("--database-url-file", type=Path, default=None, metavar="FILE",
                        help="read the database URL from the first line of FILE (keep it "
                             "mode 600)")


#: The environment variable the database URL may come from (keeps a password out of ``ps``).
DATABASE_URL_ENV = "HQS_SDK_DATABASE_URL"


def _database_url(args: argparse.Namespace) -> str | None:
    """The database URL: --database-url, else --database-url-file, else $HQS_SDK_DATABASE_URL."""
    if args.database_url and args.database_url_file:
        raise ValueError("give --database-url or --database-url-file, not both")
    if args.database_url:
        return str(args.database_url)
    if args.database_url_file:
        try:
            text = args.database_url_file.read_text().strip().splitlines()
        except OSError as exc:
            raise ValueError(f"cannot read the database URL from {args.database_url_file}: "
                             f"{exc.strerror}") from None
        if not text or not text[0].strip():
            raise ValueError(f"{args.database_url_file} holds no database URL")
        return text[0].strip()
    return os.environ.get(DATABASE_URL_ENV) or None


def _settings(args: argparse.Namespace, **more: object) -> Settings:
    return Settings(data_dir=args.data_dir, database=_database_url(args), **more)  # type: ignore[arg-type]


def _private_process() -> None:
    """What the service writes (database, files, logs, work folders) only its user reads."""
    os.umask(0o077)


def _engine(args: argparse.Namespace):  # type: ignore[no-untyped-def]
    from hqs_sdk_server.db import make_engine, migrate

    _private_process()
    settings = _settings(args)
    settings.data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    engine = make_engine(settings.database_url)
    migrate(engine)
    return engine


def _cmd_serve(args: argparse.Namespace) -> int:
    import logging

    import uvicorn

    from hqs_sdk_server.app import create_app
    from hqs_sdk_server.db import masked
    from hqs_sdk_server.malloc import keep_transfer_buffers
    from hqs_sdk_server.protocol import MAX_HEAD_BYTES, protocol_for

    extra: dict[str, object] = {"host": args.host, "port": args.port,
                                "tasks_from": tuple(args.tasks_from),
                                "public_url": args.public_url,
                                "url_lifetime_s": args.url_lifetime,
                                "max_file_bytes": args.max_file_size,
                                "backend_file": args.backend_file,
                                "task_env": tuple(args.task_env)}
    if args.max_running is not None:
        extra["max_running"] = args.max_running
    extra["allow_fetch"] = tuple(args.allow_fetch)
    extra["allow_fetch_addresses"] = tuple(args.allow_fetch_address)
    extra["request_read_timeout_s"] = args.request_read_timeout
    _private_process()
    settings = _settings(args, **extra)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    keep_transfer_buffers()
    app = create_app(settings)
    print(f"hqs-sdk-server: serving on http://{args.host}:{args.port} "
          f"(database {masked(settings.database_url)})", file=sys.stderr, flush=True)
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning", access_log=False,
                http=protocol_for(settings.request_read_timeout_s),
                h11_max_incomplete_event_size=MAX_HEAD_BYTES, timeout_graceful_shutdown=10)
    return 0


def _cmd_token_create(args: argparse.Namespace) -> int:
    from hqs_sdk_server.auth import create_token

    token = create_token(_engine(args), args.user, args.label)
    print(token)
    print(f"(the token of {args.user}; it is shown only now: keep it)", file=sys.stderr)
    return 0


def _cmd_token_list(args: argparse.Namespace) -> int:
    from hqs_sdk_server.auth import list_tokens

    print(f"{'id':>4}  {'user':<20} {'created':<20} {'revoked':<20} label")
    for t in list_tokens(_engine(args), args.user):
        revoked = t.revoked_at.strftime("%Y-%m-%d %H:%M:%S") if t.revoked_at else "-"
        print(f"{t.id:>4}  {t.user:<20} {t.created_at.strftime('%Y-%m-%d %H:%M:%S'):<20} "
              f"{revoked:<20} {t.label}")
    return 0


def _cmd_token_revoke(args: argparse.Namespace) -> int:
    from hqs_sdk_server.auth import revoke_token

    if not revoke_token(_engine(args), args.id):
        print(f"hqs-sdk-server: there is no active token with id {args.id} "
              "(see `hqs-sdk-server token list`)", file=sys.stderr)
        return 1
    print(f"revoked token {args.id}")
    return 0


def _cmd_migrate(args: argparse.Namespace) -> int:
    _engine(args)
    print("the database schema is up to date")
    return 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="hqs-sdk-server", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    _add_serve(commands)
    _add_token(commands)
    migrate = commands.add_parser("migrate", help="bring the database schema up to date")
    _storage_options(migrate)
    migrate.set_defaults(func=_cmd_migrate)
    return parser


def _add_serve(commands: Any) -> None:
    """``serve``: where it listens, what it accepts from clients, and how it runs tasks."""
    serve = commands.add_parser("serve", help="run the service")
    _storage_options(serve)
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on "
                       "(default: %(default)s; only this machine can connect)")
    serve.add_argument("--port", type=int, default=8750, help="default: %(default)s")
    serve.add_argument("--public-url", default=None,
                       help="the URL clients reach the service at, which file URLs start with "
                            "(default: the URL each request came to)")
    serve.add_argument("--url-lifetime", type=int, default=7 * 24 * 3600, metavar="SECONDS",
                       help="how long a signed file URL works (default: %(default)s, a week)")
    serve.add_argument("--max-file-size", type=int, default=64 * 1024**3, metavar="BYTES",
                       help="largest file one upload may carry (default: %(default)s, 64 GiB)")
    serve.add_argument("--request-read-timeout", type=float, default=20.0, metavar="SECONDS",
                       help="a client must send a request's head within this time, and a "
                            "body at least 1 KiB in every such period (default: %(default)s)")
    _execution_options(serve)
    serve.set_defaults(func=_cmd_serve)


def _execution_options(serve: argparse.ArgumentParser) -> None:
    """How ``serve`` runs tasks: the backend, which tasks, what they may fetch and see."""
    tasks = serve.add_argument_group("how tasks run")
    tasks.add_argument("--max-running", type=int, default=None,
                       help="executions running at once (default: the CPUs available)")
    tasks.add_argument("--tasks-from", action="append", default=[], metavar="MODULE",
                       help="also run the tasks defined in this module (repeatable)")
    tasks.add_argument("--backend-file", type=Path, default=None, metavar="JSON",
                       help='the backend executions run on, as a JSON object: {"backend": '
                            '"slurm", "login_host": ..., "slurm_tmp_io": ...} (default: the '
                            "local backend, its folder in the data folder)")
    tasks.add_argument("--allow-fetch", action="append", default=[], metavar="URL",
                       help="let tasks fetch input URLs under this prefix, e.g. "
                            "https://data.example.org/ (repeatable; default: none, tasks get "
                            "only the service's own files)")
    tasks.add_argument("--allow-fetch-address", action="append", default=[],
                       metavar="NETWORK",
                       help="let tasks fetch from these loopback, private or link-local "
                            "addresses, e.g. 10.1.0.0/16, when an --allow-fetch host resolves "
                            "to them (repeatable; default: none)")
    tasks.add_argument("--task-env", action="append", default=[], metavar="NAME[=VALUE]",
                       help="tasks run with an allow-listed environment (PATH, HOME, locale, "
                            "PYTHON* import settings, thread counts; never tokens or passwords): "
                            "NAME or PATTERN* also passes this variable of the service's "
                            "environment, NAME=VALUE sets one (repeatable; local backend)")


def _add_token(commands: Any) -> None:
    """``token create|list|revoke``."""
    token = commands.add_parser("token", help="create, list and revoke bearer tokens")
    token_commands = token.add_subparsers(dest="token_command", required=True)
    create = token_commands.add_parser("create", help="create a token (and the user)")
    _storage_options(create)
    create.add_argument("--user", required=True)
    create.add_argument("--label", default="", help="a note, e.g. which machine uses it")
    create.set_defaults(func=_cmd_token_create)
    listing = token_commands.add_parser("list", help="list tokens (never their values)")
    _storage_options(listing)
    listing.add_argument("--user", default=None)
    listing.set_defaults(func=_cmd_token_list)
    revoke = token_commands.add_parser("revoke", help="revoke a token by its id")
    _storage_options(revoke)
    revoke.add_argument("id", type=int)
    revoke.set_defaults(func=_cmd_token_revoke)


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        return int(args.func(args))
    except ValueError as exc:
        print(f"hqs-sdk-server: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
