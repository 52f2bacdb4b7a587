"""``hqs-sdk``: the user's command line (plugins, cache, and what plugins add).

Examples::

    hqs-sdk plugins
    hqs-sdk cache list [--state failed] [--task hello]
    hqs-sdk cache show KEY
    hqs-sdk cache rm KEY [KEY ...]
    hqs-sdk cache rm --failed
    hqs-sdk plan [--json] script.py [ARGS ...]

Cache commands work on ``.hqs_sdk_cache.db`` in the current folder unless ``--file`` (and
``--type``, when the file's name does not tell) say otherwise; both may stand before or after
the cache subcommand. Plugins add commands of their own through the ``hqs_sdk_cli_commands``
hook (``hqs-sdk login`` of hqs-sdk-rest, ``hqs-sdk local prune`` of hqs-sdk-local).

Exit codes: 0 done, 1 an error (one line on stderr saying what to do), 2 a usage mistake,
3 a dry run (``plan``) found calls that a real run would submit or wait for,
130 interrupted (Ctrl+C), 141 the reader of the output went away (``hqs-sdk cache list |
head -1``): the same code a shell shows for a tool stopped by SIGPIPE, so ``set -o pipefail``
scripts see what happened, but without a traceback.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import select
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from hqs_sdk.errors import HqsSdkError, PluginConflictError

if TYPE_CHECKING:
    import pluggy

    from hqs_sdk.cache import Cache, CacheConfiguration
    from hqs_sdk.cli_command import CliCommand

__all__ = ["EXIT_BROKEN_PIPE", "build_parser", "cache_configuration", "main"]

log = logging.getLogger("hqs_sdk")

EXIT_BROKEN_PIPE = 141
"""Exit code when the output's reader went away: 128 + SIGPIPE, as a shell shows for ``head``'s
writers."""

_DEFAULT_CACHE_FILE = ".hqs_sdk_cache.db"


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


def _cmd_plan(args: argparse.Namespace) -> int:
    from hqs_sdk import dry_run

    result = dry_run.plan_script(args.script, args.args, quiet_stdout=args.json)
    if args.json:
        print(dry_run.report_json(result))
    else:
        print(result.report(), file=sys.stderr if result.error else sys.stdout)
    return result.exit_code


def _takes_file(configuration_class: type) -> bool:
    import inspect

    import attrs

    if attrs.has(configuration_class):
        return "file" in attrs.fields_dict(configuration_class)
    try:
        return "file" in inspect.signature(configuration_class).parameters
    except (TypeError, ValueError):
        return False


def _file_exists(path: str) -> bool:
    """True when ``path`` or a file that a dbm-style store derives from it (``path.*``) exists."""
    if os.path.exists(path):
        return True
    folder, name = os.path.split(path)
    try:
        return any(f.startswith(name + ".") and not f.endswith(".lock")
                   for f in os.listdir(folder or "."))
    except OSError:
        return False


def _is_sqlite(path: str) -> bool:
    try:
        with open(path, "rb") as f:
            return f.read(16) == b"SQLite format 3\x00"
    except OSError:
        return False


def cache_configuration(file: str | None = None, kind: str | None = None) -> CacheConfiguration:
    """The configuration of the cache kept in ``file``, for commands that work on cache files.

    Args:
        file: the cache's file; default: the default file of ``kind`` (``.hqs_sdk_cache.db``
            when ``kind`` is not given either) in the current folder.
        kind: the cache plugin's name (``sqlite``, ``shelve``, ...); default: ``shelve`` when
            the file's name contains ``.shelve``, else ``sqlite``.

    Raises:
        HqsSdkError: no such plugin, a plugin whose caches have no file (``memory``,
            ``chained``), or no such file. The message says what to pass instead.
    """
    from hqs_sdk.plugins import registry

    caches = registry().caches
    file_kinds = sorted(name for name, spec in caches.items()
                        if _takes_file(spec.configuration_class))
    if kind is None:
        kind = "shelve" if file and ".shelve" in os.path.basename(file) else "sqlite"
        if file and _is_sqlite(file):
            kind = "sqlite"  # the content says so, whatever the name
        guessed = True
    else:
        guessed = False
    spec = caches.get(kind)
    if spec is None:
        installed = ", ".join(sorted(caches)) or "none"
        hint = (f"pass --type with one of: {', '.join(file_kinds)}" if guessed and file_kinds
                else f"installed cache plugins: {installed}")
        raise HqsSdkError(f"no cache plugin named {kind!r} is installed ({hint}); "
                          f"`pip install hqs-sdk-{kind}` if that is the one you mean")
    if not _takes_file(spec.configuration_class):
        why = {"memory": "it lives inside the process that uses it",
               "chained": "it is a list of other caches; give one of their files instead"}.get(
                   kind, f"its {spec.configuration_class.__name__} takes no file")
        raise HqsSdkError(f"the {kind!r} cache has no file to open ({why}); `hqs-sdk cache` "
                          f"works on cache files: --type {' or '.join(file_kinds) or '<none>'} "
                          f"with --file PATH")
    default_file = getattr(spec.configuration_class, "default_file", None) or _DEFAULT_CACHE_FILE
    path = os.path.abspath(file or default_file)
    if os.path.isdir(path):
        raise HqsSdkError(f"{path} is a folder; pass --file with the path of a cache file")
    if not _file_exists(path):
        raise HqsSdkError(f"there is no cache file {path}; pass --file with the cache's path "
                          "(scripts keep theirs beside them, `.hqs_sdk_cache.db` by default)")
    config: CacheConfiguration = spec.configuration_class(file=path)  # type: ignore[call-arg]
    return config


def _open(args: argparse.Namespace) -> Cache:
    from hqs_sdk.plugins import registry

    config = cache_configuration(getattr(args, "file", None), getattr(args, "type", None))
    return registry().cache_spec_for(config).cache_class(config)


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


def _find_key(cache: Cache, text: str) -> str | None:
    """The key ``text`` names: itself, or the one key it starts (keys are long; users shorten
    them, as the docs do). ``None`` when no key matches."""
    if cache.get(text) is not None:
        return text
    prefix = text.rstrip("…").rstrip(".")
    if not prefix:
        return None
    matches = [entry.key for entry in cache.entries() if entry.key.startswith(prefix)]
    if len(matches) > 1:
        raise HqsSdkError(f"{text!r} starts {len(matches)} keys (e.g. {matches[0]!r}, "
                          f"{matches[1]!r}); give more of the key")
    return matches[0] if matches else None


def _cmd_cache_show(args: argparse.Namespace) -> int:
    from hqs_sdk.serialization import converter

    cache = _open(args)
    try:
        key = _find_key(cache, args.key)
        entry = None if key is None else cache.get(key)
        if entry is None:
            print(f"hqs-sdk: no entry with key {args.key!r} in {cache.config.describe()}; "
                  "`hqs-sdk cache list` shows the keys", file=sys.stderr)
            return 1
        print(json.dumps(converter.unstructure(entry), indent=2, ensure_ascii=False))
    finally:
        cache.close()
    return 0


def _cmd_cache_rm(args: argparse.Namespace) -> int:
    if bool(args.keys) == bool(args.failed):
        print("hqs-sdk cache rm: give cache keys or --failed (not both); `hqs-sdk cache list` "
              "shows the keys", file=sys.stderr)
        return 2
    cache = _open(args)
    try:
        if args.failed:
            keys = [e.key for e in cache.entries()
                    if e.state.finished and e.state.value != "succeeded"]
            missing = []
        else:
            found = {text: _find_key(cache, text) for text in args.keys}
            keys = [key for key in found.values() if key is not None]
            missing = [text for text, key in found.items() if key is None]
        gone = [key for key in keys if not cache.delete(key)]  # removed meanwhile
        missing += gone
        removed = len(keys) - len(gone)
        print(f"removed {removed} entr{'y' if removed == 1 else 'ies'}")
        for key in missing:
            print(f"hqs-sdk: no entry with key {key!r}; `hqs-sdk cache list` shows the keys",
                  file=sys.stderr)
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
    """Add the commands plugins yield from ``hqs_sdk_commands`` (and, deprecated, those that
    ``hqs_sdk_cli_commands`` adds to ``sub`` itself)."""
    from hqs_sdk.plugins import hook_results

    for owner, command in hook_results(pm, "hqs_sdk_commands", on_error=_skip_plugin):
        sub.adding_for = owner
        try:
            _add_command(sub, command)
        except PluginConflictError:
            raise
        except Exception as exc:
            _skip_plugin(owner, exc)
    _add_deprecated_commands(sub, pm)
    sub.adding_for = "hqs-sdk"


def _add_command(sub: _Commands, command: CliCommand) -> None:
    """A parser for ``command`` with its arguments and handler."""
    from hqs_sdk.cli_command import CliCommand

    if not isinstance(command, CliCommand):
        raise TypeError(f"hqs_sdk_commands yielded {command!r}, not a CliCommand")
    parser = sub.add_parser(command.name, help=command.help, aliases=list(command.aliases),
                            description=command.description or command.help)
    if command.run is not None:
        parser.set_defaults(handler=command.run)
    if command.add_arguments is not None:
        command.add_arguments(parser)


def _add_deprecated_commands(sub: _Commands, pm: pluggy.PluginManager) -> None:
    """Let each ``hqs_sdk_cli_commands(subparsers)`` implementation add its parsers to ``sub``.

    Called one by one, as before the hook was deprecated, so that a conflict names the plugin.
    """
    for impl in pm.hook.hqs_sdk_cli_commands.get_hookimpls():
        if impl.hookwrapper or impl.wrapper:
            continue
        sub.adding_for = impl.plugin_name
        try:
            impl.function(*[{"subparsers": sub}[name] for name in impl.argnames])
        except PluginConflictError:
            raise
        except Exception as exc:
            _skip_plugin(impl.plugin_name, exc, hook="hqs_sdk_cli_commands")


def _skip_plugin(plugin: str, exc: Exception, hook: str = "hqs_sdk_commands") -> None:
    # A broken plugin must not take `hqs-sdk plugins` and `cache` down with it.
    from hqs_sdk.plugins import DISABLE_ENV

    log.warning("hqs-sdk: skipping the commands of plugin %r: it failed in %s (%s: %s); fix "
                "it, or block it with %s=%s", plugin, hook, type(exc).__name__, exc,
                DISABLE_ENV, plugin)


def _add_cache_options(parser: argparse.ArgumentParser, default: Any) -> None:
    parser.add_argument("--file", default=default,
                        help="cache file (default: .hqs_sdk_cache.db in this folder)")
    parser.add_argument("--type", default=default,
                        help="cache plugin name, e.g. sqlite or shelve (default: shelve when the "
                             "file name contains .shelve, else sqlite)")


def build_parser(plugin_manager: pluggy.PluginManager | None = None) -> argparse.ArgumentParser:
    """The argument parser with the commands of every plugin (for documentation and tests).

    Args:
        plugin_manager: whose ``hqs_sdk_commands`` to ask; default: the process-wide one.
    """
    summary = __doc__.split("\n")[0].replace("``", "")
    parser = argparse.ArgumentParser(prog="hqs-sdk", description=summary)
    sub = parser.add_subparsers(dest="command", required=True, action=_Commands,
                                metavar="COMMAND")
    plugins = sub.add_parser("plugins", help="list installed plugins and what they provide")
    plugins.set_defaults(handler=_cmd_plugins)
    _add_plan_command(sub)
    _add_cache_command(sub)
    if plugin_manager is None:
        from hqs_sdk.plugins import registry

        plugin_manager = registry().plugin_manager
    assert isinstance(sub, _Commands)
    _add_plugin_commands(sub, plugin_manager)
    return parser


def _add_plan_command(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    dry = sub.add_parser(
        "plan", help="dry-run a script: what comes from the cache, what is pending, what a "
                     "real run would submit (exit code 3 if anything)")
    dry.add_argument("--json", action="store_true", help="print the report as JSON (the "
                     "script's own output then goes to stderr)")
    dry.add_argument("script", help="the Python script to dry-run")
    dry.add_argument("args", nargs=argparse.REMAINDER, help="the script's arguments")
    dry.set_defaults(handler=_cmd_plan)


def _add_cache_command(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    from hqs_sdk.models import ExecutionState

    cache = sub.add_parser("cache", help="inspect and clean the client-side cache")
    _add_cache_options(cache, argparse.SUPPRESS)
    # The same options after the subcommand (`cache list --file X`), where users type them.
    # SUPPRESS keeps a subcommand's absent option from overwriting the one given before it.
    cache_options = argparse.ArgumentParser(add_help=False)
    _add_cache_options(cache_options, argparse.SUPPRESS)
    cache_sub = cache.add_subparsers(dest="cache_command", required=True, metavar="SUBCOMMAND")
    listing = cache_sub.add_parser("list", help="one line per entry", parents=[cache_options])
    listing.add_argument("--state", choices=[state.value for state in ExecutionState],
                         help="only entries in this state")
    listing.add_argument("--task", help="only entries of this task")
    listing.set_defaults(handler=_cmd_cache_list)
    show = cache_sub.add_parser("show", help="one entry in full, as JSON",
                                parents=[cache_options])
    show.add_argument("key")
    show.set_defaults(handler=_cmd_cache_show)
    rm = cache_sub.add_parser("rm", help="remove entries (the executions are not touched)",
                              parents=[cache_options])
    rm.add_argument("keys", nargs="*")
    rm.add_argument("--failed", action="store_true",
                    help="remove every failed, timed-out or cancelled entry")
    rm.set_defaults(handler=_cmd_cache_rm)


def _pipe_closed(stream: Any) -> bool:
    """True when ``stream`` is a pipe or socket whose reader has gone away."""
    try:
        fd = stream.fileno()
    except (AttributeError, OSError, ValueError):
        return False
    poller = select.poll()
    poller.register(fd, select.POLLOUT)
    return any(events & select.POLLERR for _, events in poller.poll(0))


def _quiet_closed_pipes() -> None:
    """Point stdout and stderr at /dev/null when their readers are gone, so that the flush at
    interpreter exit does not print "Exception ignored ... BrokenPipeError"."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        for stream in (sys.stdout, sys.stderr):
            if _pipe_closed(stream):
                os.dup2(devnull, stream.fileno())
    finally:
        os.close(devnull)


def _dispatch(argv: Sequence[str] | None) -> int:
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


def main(argv: Sequence[str] | None = None) -> int:
    """Console entry point of ``hqs-sdk``: run one command and return its exit code.

    Every command, a plugin's too, exits with :data:`EXIT_BROKEN_PIPE` and no traceback when
    the reader of its output goes away (``hqs-sdk cache list | head -1``).
    """
    try:
        try:
            return _dispatch(argv)
        finally:
            # Flush here, not at exit, so a reader that left shows up as an exception we catch.
            sys.stdout.flush()
    except BrokenPipeError:
        if not (_pipe_closed(sys.stdout) or _pipe_closed(sys.stderr)):
            raise  # some other pipe (a plugin's socket or subprocess): a real error
        _quiet_closed_pipes()
        return EXIT_BROKEN_PIPE


if __name__ == "__main__":
    sys.exit(main())
