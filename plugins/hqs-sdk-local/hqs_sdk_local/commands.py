"""``hqs-sdk local``: the size of the local backend's work folder, and pruning it.

Examples::

    hqs-sdk local du                               # count, size, oldest, what a prune frees
    hqs-sdk local prune --older-than 30d --dry-run # what would go
    hqs-sdk local prune --older-than 30d           # delete finished executions older than 30 days
    hqs-sdk local prune --older-than 7d --cache ~/project/.hqs_sdk_cache.db
    hqs-sdk local prune --older-than 30d --force   # also those that cached results point to

See :mod:`hqs_sdk_local.retention` for what is never deleted.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from typing import TYPE_CHECKING, Any

from hqs_sdk.errors import ConfigurationError, HqsSdkError

if TYPE_CHECKING:
    from hqs_sdk.cache import CacheConfiguration
    from hqs_sdk_local.retention import PrunePlan

__all__ = ["HELP", "add_arguments", "add_commands"]

HELP = "the local backend's work folder: its size, and pruning old executions"

_DEFAULT_AGE = "30d"


def _age(text: str) -> str:
    from hqs_sdk_local.retention import parse_age

    try:
        parse_age(text)
    except ConfigurationError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return text


def _executions_dir(args: argparse.Namespace) -> str:
    from hqs_sdk_local.backend import _default_work_dir

    return os.path.join(os.path.abspath(args.work_dir or _default_work_dir()), "executions")


def _caches(args: argparse.Namespace) -> list[CacheConfiguration]:
    """The caches recorded on this machine, plus those named with ``--cache``."""
    from hqs_sdk.cli import cache_configuration

    try:
        from hqs_sdk.cache import recorded_caches
    except ImportError as exc:  # a core older than this plugin expects
        raise HqsSdkError(
            "this hqs-sdk core cannot list the caches your scripts used, so a prune cannot tell "
            "which executions they point to; upgrade hqs-sdk") from exc
    configs = list(recorded_caches())
    known = {config.identity() for config in configs}
    for file in args.cache or ():
        config = cache_configuration(file)
        if config.identity() not in known:
            known.add(config.identity())
            configs.append(config)
    return configs


def _plan(args: argparse.Namespace, force: bool) -> tuple[str, list[Any], PrunePlan, int]:
    from hqs_sdk_local.retention import cache_references, parse_age, plan_prune, scan

    executions_dir = _executions_dir(args)
    now = time.time()
    folders = scan(executions_dir, now)
    caches = _caches(args)
    references = cache_references(executions_dir, caches) if folders else {}
    plan = plan_prune(folders, references, parse_age(args.older_than), now, force)
    return executions_dir, folders, plan, len(caches)


def _kept(plan: PrunePlan, verb: str) -> str:
    parts = []
    if plan.active:
        parts.append(f"{len(plan.active)} running or queued")
    if plan.referenced:
        parts.append(f"{len(plan.referenced)} that a cache points to (--force {verb} them too)")
    return f"; kept {', '.join(parts)}" if parts else ""


def _cmd_du(args: argparse.Namespace) -> int:
    from hqs_sdk_local.retention import format_age, format_size

    executions_dir, folders, plan, cache_count = _plan(args, force=False)
    now = time.time()
    total = sum(folder.size for folder in folders)
    print(f"work folder  {executions_dir}")
    print(f"executions   {len(folders)} ({len(plan.active)} running or queued)")
    print(f"size         {format_size(total)}")
    if folders:
        oldest = min(folder.last_change for folder in folders)
        stamp = time.strftime("%Y-%m-%d %H:%M", time.localtime(oldest))
        print(f"oldest       {stamp} ({format_age(now - oldest)} ago)")
    print(f"prunable     {len(plan.remove)} older than {args.older_than}, "
          f"{format_size(plan.size)}: `hqs-sdk local prune --older-than {args.older_than}`"
          f"{_kept(plan, 'frees')}")
    print(f"caches read  {cache_count}")
    return 0


def _cmd_prune(args: argparse.Namespace) -> int:
    from hqs_sdk_local.retention import format_age, format_size, prune

    executions_dir, folders, plan, _ = _plan(args, force=args.force)
    now = time.time()
    if args.dry_run:
        for folder in plan.remove:
            print(f"would remove {folder.execution_id}  {format_size(folder.size):>10}  "
                  f"{format_age(now - folder.last_change)} old")
        print(f"would free {format_size(plan.size)} in {len(plan.remove)} of {len(folders)} "
              f"executions in {executions_dir}{_kept(plan, 'removes')}", file=sys.stderr)
        return 0
    removed, failed = prune(plan)
    for folder, why in failed:
        print(f"hqs-sdk: kept {folder.path}: {why}", file=sys.stderr)
    freed = sum(folder.size for folder in removed)
    print(f"removed {len(removed)} of {len(folders)} executions in {executions_dir}, freed "
          f"{format_size(freed)}{_kept(plan, 'removes')}")
    return 1 if failed else 0


def _add_common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--work-dir", metavar="DIR",
                        help="the local backend's work folder (default: $XDG_CACHE_HOME/hqs-sdk/"
                             "local, that is ~/.cache/hqs-sdk/local)")
    parser.add_argument("--cache", action="append", metavar="FILE",
                        help="also keep what this cache file points to (repeatable); the caches "
                             "your scripts opened on this machine are read anyway")


def add_commands(subparsers: Any) -> None:
    """Add ``hqs-sdk local`` to the top-level ``add_subparsers()`` object ``subparsers`` (the
    form of the deprecated ``hqs_sdk_cli_commands`` hook). Deprecated: the plugin's
    ``hqs_sdk_commands`` hook describes the command with :data:`HELP` and :func:`add_arguments`."""
    import warnings

    warnings.warn("hqs_sdk_local.commands.add_commands is deprecated: the plugin's "
                  "hqs_sdk_commands hook adds `hqs-sdk local` (HELP and add_arguments)",
                  DeprecationWarning, stacklevel=2)
    add_arguments(subparsers.add_parser("local", help=HELP))


def add_arguments(local: argparse.ArgumentParser) -> None:
    """Add ``du`` and ``prune`` to the parser of ``hqs-sdk local`` (the plugin's command)."""
    commands = local.add_subparsers(dest="local_command", required=True, metavar="SUBCOMMAND")

    du = commands.add_parser(
        "du", aliases=["usage"],
        help="how many executions, their size, the oldest, and what a prune would free")
    _add_common(du)
    du.add_argument("--older-than", type=_age, default=_DEFAULT_AGE, metavar="AGE",
                    help=f"the age for the prune estimate (default: {_DEFAULT_AGE})")
    du.set_defaults(handler=_cmd_du)

    prune = commands.add_parser(
        "prune", help="delete the folders of finished executions older than an age",
        description="Delete the folders of finished executions that changed longer ago than "
                    "AGE. Running and queued executions are never deleted; executions that a "
                    "cached result points to only with --force.")
    prune.add_argument("--older-than", type=_age, required=True, metavar="AGE",
                       help="a number and a unit s, m, h or d, e.g. 30d")
    _add_common(prune)
    prune.add_argument("--dry-run", action="store_true",
                       help="list what would be deleted, delete nothing")
    prune.add_argument("--force", action="store_true",
                       help="also delete executions that cached results point to (their FileRefs "
                            "then name missing files)")
    prune.set_defaults(handler=_cmd_prune)
