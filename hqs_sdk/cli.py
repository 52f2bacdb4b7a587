"""``hqs-sdk``: the user's command line (plugins and cache).

Examples::

    hqs-sdk plugins
    hqs-sdk cache list [--state failed] [--task hello]
    hqs-sdk cache show KEY
    hqs-sdk cache rm KEY [KEY ...]
    hqs-sdk cache rm --failed

Cache commands work on ``.hqs_sdk_cache.db`` in the current folder unless ``--file`` (and
``--type``, when the file's name does not tell) say otherwise.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence

from hqs_sdk.errors import HqsSdkError


def _cmd_plugins(args: argparse.Namespace) -> int:
    from hqs_sdk.plugins import registry

    reg = registry()
    infos = reg.plugin_manager.infos
    if not infos:
        print("no hqs-sdk plugins installed; `pip install hqs-sdk-local hqs-sdk-sqlite` for the "
              "defaults")
    width = max([len(i.name) for i in infos] + [6])
    print(f"{'plugin':<{width}}  {'distribution':<20} {'version':<10} status")
    for info in infos:
        print(f"{info.name:<{width}}  {info.distribution:<20} {info.version:<10} {info.status}")
    print()
    print("backends:", ", ".join(sorted(reg.backends)) or "none")
    print("caches:  ", ", ".join(sorted(reg.caches)) or "none")
    print("tasks:   ", ", ".join(sorted(reg.tasks)) or "none")
    return 0


def _open(args: argparse.Namespace):  # type: ignore[no-untyped-def]
    from hqs_sdk.plugins import registry

    path = os.path.abspath(args.file)
    kind = args.type or ("shelve" if ".shelve" in os.path.basename(path) else "sqlite")
    spec = registry().caches.get(kind)
    if spec is None:
        raise HqsSdkError(f"no cache plugin named {kind!r} is installed; "
                          f"installed: {', '.join(sorted(registry().caches))}")
    if not os.path.exists(path) and kind == "sqlite":
        raise HqsSdkError(f"there is no cache file {path}; pass --file with the cache's path")
    config = spec.configuration_class(file=path)  # type: ignore[call-arg]
    return spec.cache_class(config)


def _cmd_cache_list(args: argparse.Namespace) -> int:
    cache = _open(args)
    try:
        count = 0
        for entry in cache.entries():
            if args.state and entry.state.value != args.state:
                continue
            if args.task and entry.request.task_name != args.task:
                continue
            updated = entry.updated_at.strftime("%Y-%m-%d %H:%M:%S") if entry.updated_at else ""
            print(f"{entry.key}  {entry.state.value:<9}  {entry.backend:<6}  {updated}")
            count += 1
        print(f"{count} entr{'y' if count == 1 else 'ies'}", file=sys.stderr)
    finally:
        cache.close()
    return 0


def _cmd_cache_show(args: argparse.Namespace) -> int:
    from hqs_sdk.serialization import converter

    cache = _open(args)
    try:
        entry = cache.get(args.key)
        if entry is None:
            print(f"no entry with key {args.key!r}; `hqs-sdk cache list` shows the keys",
                  file=sys.stderr)
            return 1
        print(json.dumps(converter.unstructure(entry), indent=2, ensure_ascii=False))
    finally:
        cache.close()
    return 0


def _cmd_cache_rm(args: argparse.Namespace) -> int:
    if bool(args.keys) == bool(args.failed):
        print("give cache keys or --failed (not both)", file=sys.stderr)
        return 2
    cache = _open(args)
    try:
        keys = list(args.keys)
        if args.failed:
            keys = [e.key for e in cache.entries()
                    if e.state.finished and e.state.value != "succeeded"]
        missing = [k for k in keys if not cache.delete(k)]
        removed = len(keys) - len(missing)
        print(f"removed {removed} entr{'y' if removed == 1 else 'ies'}")
        for key in missing:
            print(f"no entry with key {key!r}", file=sys.stderr)
    finally:
        cache.close()
    return 1 if missing else 0


def build_parser() -> argparse.ArgumentParser:
    """The argument parser (exposed for documentation and tests)."""
    parser = argparse.ArgumentParser(prog="hqs-sdk", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    plugins = sub.add_parser("plugins", help="list installed plugins and what they provide")
    plugins.set_defaults(fn=_cmd_plugins)

    cache = sub.add_parser("cache", help="inspect and clean the client-side cache")
    cache.add_argument("--file", default=".hqs_sdk_cache.db",
                       help="cache file (default: .hqs_sdk_cache.db in this folder)")
    cache.add_argument("--type", help="cache plugin name (default: from the file name)")
    cache_sub = cache.add_subparsers(dest="cache_command", required=True)
    listing = cache_sub.add_parser("list", help="one line per entry")
    listing.add_argument("--state", help="only entries in this state (e.g. failed)")
    listing.add_argument("--task", help="only entries of this task")
    listing.set_defaults(fn=_cmd_cache_list)
    show = cache_sub.add_parser("show", help="one entry in full, as JSON")
    show.add_argument("key")
    show.set_defaults(fn=_cmd_cache_show)
    rm = cache_sub.add_parser("rm", help="remove entries (the executions are not touched)")
    rm.add_argument("keys", nargs="*")
    rm.add_argument("--failed", action="store_true",
                    help="remove every failed, timed-out or cancelled entry")
    rm.set_defaults(fn=_cmd_cache_rm)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Console entry point of ``hqs-sdk``."""
    args = build_parser().parse_args(argv)
    try:
        return int(args.fn(args))
    except HqsSdkError as exc:
        print(f"hqs-sdk: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
