"""``hqs-sdk``: the user's command line (plugins, cache, and what plugins add).

Examples::

    hqs-sdk plugins
    hqs-sdk cache list [--state failed] [--task hello]
    hqs-sdk cache show KEY
    hqs-sdk cache rm KEY [KEY ...]
    hqs-sdk cache rm --failed

Cache commands work on ``.hqs_sdk_cache.db`` in the current folder unless ``--file`` (and
``--type``, when the file's name does not tell) say otherwise. Plugins add commands of their own
through the ``hqs_sdk_cli_commands`` hook (``hqs-sdk login`` of hqs-sdk-rest, for example).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from hqs_sdk.errors import HqsSdkError, PluginConflictError

if TYPE_CHECKING:
    import pluggy

log = logging.getLogger("hqs_sdk")


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


class _Commands(argparse._SubParsersAction):
    """The top-level subcommands: remembers who added each name and refuses a second owner.

    argparse itself refuses a duplicate name, but could not say who else claims it.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.adding_for = "hqs-sdk"
        self.owners: dict[str, str] = {}

    def add_parser(self, name: str, **kwargs: Any) -> argparse.ArgumentParser:
        from hqs_sdk.plugins import DISABLE_ENV

        for alias in (name, *kwargs.get("aliases", ())):
            owner = self.owners.get(alias)
            if owner is None:
                continue
            if owner == "hqs-sdk":
                where = f"`hqs-sdk {alias}` is a built-in command"
            else:
                where = f"plugin {owner!r} already adds `hqs-sdk {alias}`"
            raise PluginConflictError(
                f"plugin {self.adding_for!r} adds the command {alias!r}, but {where}; block "
                f"one of them with {DISABLE_ENV}=<name>")
        parser: argparse.ArgumentParser = super().add_parser(name, **kwargs)
        for alias in (name, *kwargs.get("aliases", ())):
            self.owners[alias] = self.adding_for
        return parser


def _add_plugin_commands(sub: _Commands, pm: pluggy.PluginManager) -> None:
    for impl in pm.hook.hqs_sdk_cli_commands.get_hookimpls():
        sub.adding_for = impl.plugin_name
        try:
            impl.function(*[{"subparsers": sub}[name] for name in impl.argnames])
        except PluginConflictError:
            raise
        except Exception as exc:
            # A broken plugin must not take `hqs-sdk plugins` and `cache` down with it.
            log.warning("hqs-sdk: skipping the commands of plugin %r: it failed in "
                        "hqs_sdk_cli_commands (%s: %s)", impl.plugin_name,
                        type(exc).__name__, exc)
    sub.adding_for = "hqs-sdk"


def build_parser(plugin_manager: pluggy.PluginManager | None = None) -> argparse.ArgumentParser:
    """The argument parser with the commands of every plugin (for documentation and tests).

    Args:
        plugin_manager: whose ``hqs_sdk_cli_commands`` to ask; default: the process-wide one.
    """
    summary = __doc__.split("\n")[0].replace("``", "")
    parser = argparse.ArgumentParser(prog="hqs-sdk", description=summary)
    sub = parser.add_subparsers(dest="command", required=True, action=_Commands,
                                metavar="COMMAND")
    plugins = sub.add_parser("plugins", help="list installed plugins and what they provide")
    plugins.set_defaults(handler=_cmd_plugins)

    cache = sub.add_parser("cache", help="inspect and clean the client-side cache")
    cache.add_argument("--file", default=".hqs_sdk_cache.db",
                       help="cache file (default: .hqs_sdk_cache.db in this folder)")
    cache.add_argument("--type", help="cache plugin name (default: from the file name)")
    cache_sub = cache.add_subparsers(dest="cache_command", required=True)
    listing = cache_sub.add_parser("list", help="one line per entry")
    listing.add_argument("--state", help="only entries in this state (e.g. failed)")
    listing.add_argument("--task", help="only entries of this task")
    listing.set_defaults(handler=_cmd_cache_list)
    show = cache_sub.add_parser("show", help="one entry in full, as JSON")
    show.add_argument("key")
    show.set_defaults(handler=_cmd_cache_show)
    rm = cache_sub.add_parser("rm", help="remove entries (the executions are not touched)")
    rm.add_argument("keys", nargs="*")
    rm.add_argument("--failed", action="store_true",
                    help="remove every failed, timed-out or cancelled entry")
    rm.set_defaults(handler=_cmd_cache_rm)

    if plugin_manager is None:
        from hqs_sdk.plugins import registry

        plugin_manager = registry().plugin_manager
    assert isinstance(sub, _Commands)
    _add_plugin_commands(sub, plugin_manager)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Console entry point of ``hqs-sdk``."""
    try:
        parser = build_parser()
        args = parser.parse_args(argv)
        handler = getattr(args, "handler", None)
        if handler is None:
            parser.error(f"`hqs-sdk {args.command}` does nothing by itself; see "
                         f"`hqs-sdk {args.command} --help`")
        return int(handler(args))
    except HqsSdkError as exc:
        print(f"hqs-sdk: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("\nhqs-sdk: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
