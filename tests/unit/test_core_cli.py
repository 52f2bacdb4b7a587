"""The ``hqs_sdk_commands`` hook (and the deprecated ``hqs_sdk_cli_commands``): plugins add
``hqs-sdk`` subcommands."""

from __future__ import annotations

import argparse
import logging
import os
import subprocess
import sys
import textwrap
import types
from collections.abc import Iterator
from typing import Any

import pytest

from hqs_sdk import hookimpl
from hqs_sdk.cli import build_parser, main
from hqs_sdk.cli_command import CliCommand
from hqs_sdk.errors import ConfigurationError, PluginConflictError
from hqs_sdk.plugins import PluginManager, get_plugin_manager, use_plugin_manager


def _greet(args: argparse.Namespace) -> int:
    greeting = f"Hello, {args.name}!"
    print(greeting.upper() if args.shout else greeting)
    return 3 if args.name == "three" else 0


def _jobs_list(args: argparse.Namespace) -> int:
    print("jobs:", args.state or "all")
    return 0


def _jobs_fail(args: argparse.Namespace) -> int:
    raise ConfigurationError("no jobs service configured; run `hqs-sdk greet` first")


def _greet_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("name")
    parser.add_argument("--shout", action="store_true")


def _jobs_arguments(parser: argparse.ArgumentParser) -> None:
    jobs_sub = parser.add_subparsers(dest="jobs_command", required=True)
    listing = jobs_sub.add_parser("list")
    listing.add_argument("--state")
    listing.set_defaults(handler=_jobs_list)
    jobs_sub.add_parser("fail").set_defaults(handler=_jobs_fail)


class _GreetPlugin:
    """A plugin with a flat command, one with subcommands of its own and one without a handler."""

    @hookimpl
    def hqs_sdk_commands(self) -> Iterator[CliCommand]:
        yield CliCommand("greet", "say hello", _greet_arguments, _greet)
        yield CliCommand("jobs", "look at jobs", _jobs_arguments)
        yield CliCommand("idle", "a command without a handler")


def _plugin_adding(name: str) -> types.SimpleNamespace:
    @hookimpl
    def hqs_sdk_commands() -> Iterator[CliCommand]:
        yield CliCommand(name, "", run=lambda args: 0)

    return types.SimpleNamespace(hqs_sdk_commands=hqs_sdk_commands)


@pytest.fixture
def pm() -> Iterator[PluginManager]:
    pm = get_plugin_manager(load_entrypoints=False)
    with use_plugin_manager(pm):
        yield pm


def test_plugin_commands_run_their_handler_and_return_its_exit_code(
    pm: PluginManager, capsys: pytest.CaptureFixture[str]
) -> None:
    pm.register(_GreetPlugin(), name="greeter")
    assert main(["greet", "world"]) == 0
    assert capsys.readouterr().out == "Hello, world!\n"
    assert main(["greet", "--shout", "three"]) == 3
    assert capsys.readouterr().out == "HELLO, THREE!\n"
    assert main(["jobs", "list", "--state", "failed"]) == 0
    assert capsys.readouterr().out == "jobs: failed\n"


def test_plugin_commands_are_listed_in_the_help_beside_the_built_in_ones(
    pm: PluginManager, capsys: pytest.CaptureFixture[str]
) -> None:
    pm.register(_GreetPlugin(), name="greeter")
    with pytest.raises(SystemExit) as done:
        main(["--help"])
    assert done.value.code == 0
    out = capsys.readouterr().out
    for command in ("plugins", "cache", "greet", "jobs"):
        assert f"    {command} " in out
    assert "say hello" in out


def test_an_sdk_error_in_a_handler_is_one_line_with_exit_code_1(
    pm: PluginManager, capsys: pytest.CaptureFixture[str]
) -> None:
    pm.register(_GreetPlugin(), name="greeter")
    assert main(["jobs", "fail"]) == 1
    err = capsys.readouterr().err
    assert err == "hqs-sdk: no jobs service configured; run `hqs-sdk greet` first\n"


def test_usage_errors_and_commands_without_a_handler_exit_2(
    pm: PluginManager, capsys: pytest.CaptureFixture[str]
) -> None:
    pm.register(_GreetPlugin(), name="greeter")
    for argv in (["jobs"], ["greet"], ["idle"]):
        with pytest.raises(SystemExit) as done:
            main(argv)
        assert done.value.code == 2, argv
    assert "`hqs-sdk idle` does nothing by itself" in capsys.readouterr().err


def test_a_plugin_may_not_replace_a_built_in_command(
    pm: PluginManager, capsys: pytest.CaptureFixture[str]
) -> None:
    pm.register(_plugin_adding("cache"), name="greedy")
    assert main(["plugins"]) == 1
    err = capsys.readouterr().err
    assert "plugin 'greedy' adds the command 'cache'" in err
    assert "built-in" in err and "HQS_SDK_DISABLE_PLUGINS" in err


def test_two_plugins_adding_one_command_are_refused_naming_both(pm: PluginManager) -> None:
    pm.register(_plugin_adding("deploy"), name="first")
    pm.register(_plugin_adding("deploy"), name="second")
    with pytest.raises(PluginConflictError, match="'deploy'") as info:
        build_parser(pm)
    # pluggy calls the plugin registered last first
    assert "plugin 'first' adds the command 'deploy'" in str(info.value)
    assert "plugin 'second' already adds `hqs-sdk deploy`" in str(info.value)


def test_a_plugin_whose_hook_fails_is_skipped_with_a_warning(
    pm: PluginManager, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    def raises_at_once() -> list[CliCommand]:
        raise RuntimeError("boom")

    def raises_while_read() -> Iterator[CliCommand]:
        yield CliCommand("half", "a command before the failure")
        raise RuntimeError("half way")

    def bad_arguments(parser: argparse.ArgumentParser) -> None:
        raise RuntimeError("no arguments today")

    def plugin(function: Any) -> Any:
        # a module or a class instance, as real plugins are: pluggy leaves a plugin that raised
        # out of the next call by its hash, which a SimpleNamespace does not have
        return type("Plugin", (), {"hqs_sdk_commands": staticmethod(hookimpl(function))})()

    pm.register(plugin(raises_at_once), name="broken")
    pm.register(plugin(raises_while_read), name="halfway")
    pm.register(plugin(lambda: [CliCommand("args", "", bad_arguments)]), name="badargs")
    pm.register(_GreetPlugin(), name="greeter")
    with caplog.at_level(logging.WARNING, logger="hqs_sdk"):
        assert main(["greet", "world"]) == 0
    assert capsys.readouterr().out == "Hello, world!\n"
    for plugin, error in (("broken", "RuntimeError: boom"), ("halfway", "RuntimeError: half way"),
                          ("badargs", "RuntimeError: no arguments today")):
        assert f"skipping the commands of plugin {plugin!r}" in caplog.text
        assert error in caplog.text
        assert f"block it with HQS_SDK_DISABLE_PLUGINS={plugin}" in caplog.text


def test_a_record_that_is_not_a_cli_command_is_skipped_with_a_warning(
    pm: PluginManager, caplog: pytest.LogCaptureFixture
) -> None:
    pm.register(types.SimpleNamespace(hqs_sdk_commands=hookimpl(lambda: ["greet"])),
                name="confused")
    with caplog.at_level(logging.WARNING, logger="hqs_sdk"):
        build_parser(pm)
    assert "plugin 'confused'" in caplog.text and "'greet', not a CliCommand" in caplog.text


class _DeprecatedPlugin:
    """A plugin still on the hook that edits the argparse object itself."""

    @hookimpl
    def hqs_sdk_cli_commands(self, subparsers: Any) -> None:
        greet = subparsers.add_parser("greet", help="say hello")
        _greet_arguments(greet)
        greet.set_defaults(handler=_greet)


def test_the_deprecated_hook_warns_what_to_use_instead_and_keeps_working(
    pm: PluginManager, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.warns(DeprecationWarning, match=r"hqs_sdk_cli_commands\(subparsers\) is "
                      r"deprecated.*CliCommand\(name, help, add_arguments, run\).*"
                      r"hqs_sdk_commands\(\) instead"):
        pm.register(_DeprecatedPlugin(), name="old")
    assert main(["greet", "--shout", "world"]) == 0
    assert capsys.readouterr().out == "HELLO, WORLD!\n"


def test_a_deprecated_hook_that_fails_is_skipped_with_a_warning_naming_that_hook(
    pm: PluginManager, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    class Broken:
        @hookimpl
        def hqs_sdk_cli_commands(self, subparsers: Any) -> None:
            raise RuntimeError("old and broken")

    with pytest.warns(DeprecationWarning):
        pm.register(Broken(), name="old")
    pm.register(_GreetPlugin(), name="greeter")
    with caplog.at_level(logging.WARNING, logger="hqs_sdk"):
        assert main(["greet", "world"]) == 0
    assert capsys.readouterr().out == "Hello, world!\n"
    assert ("skipping the commands of plugin 'old': it failed in hqs_sdk_cli_commands "
            "(RuntimeError: old and broken); fix it, or block it with "
            "HQS_SDK_DISABLE_PLUGINS=old") in caplog.text


def test_a_deprecated_command_and_a_new_one_of_one_name_are_refused_naming_both(
    pm: PluginManager,
) -> None:
    with pytest.warns(DeprecationWarning):
        pm.register(_DeprecatedPlugin(), name="old")
    pm.register(_plugin_adding("greet"), name="new")
    with pytest.raises(PluginConflictError) as info:
        build_parser(pm)
    assert "plugin 'old' adds the command 'greet'" in str(info.value)
    assert "plugin 'new' already adds `hqs-sdk greet`" in str(info.value)


_CHATTY_PLUGIN = textwrap.dedent("""
    import sys

    from hqs_sdk import hookimpl
    from hqs_sdk.cli import main
    from hqs_sdk.cli_command import CliCommand
    from hqs_sdk.plugins import get_plugin_manager, use_plugin_manager

    def chat(args):
        for number in range(100_000):
            print("line", number)
        return 0

    def own_pipe(args):
        raise BrokenPipeError(32, "Broken pipe (the plugin's own connection)")

    class Chatty:
        @hookimpl
        def hqs_sdk_commands(self):
            yield CliCommand("chat", "", run=chat)
            yield CliCommand("own-pipe", "", run=own_pipe)

    pm = get_plugin_manager(load_entrypoints=False)
    pm.register(Chatty(), name="chatty")
    with use_plugin_manager(pm):
        sys.exit(main(sys.argv[1:]))
""")


def _run_plugin_command(command: str, stdout: int) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", _CHATTY_PLUGIN, command], stdout=stdout,
                          stderr=subprocess.PIPE, text=True, timeout=60)


def test_a_plugin_command_whose_reader_goes_away_exits_141_without_a_traceback() -> None:
    read_end, write_end = os.pipe()
    os.close(read_end)  # `hqs-sdk chat | head -1` after head has its line
    try:
        done = _run_plugin_command("chat", write_end)
    finally:
        os.close(write_end)
    assert done.stderr == ""
    assert done.returncode == 141


def test_a_broken_pipe_that_is_not_the_output_stays_an_error() -> None:
    done = _run_plugin_command("own-pipe", subprocess.DEVNULL)
    assert done.returncode == 1
    assert "the plugin's own connection" in done.stderr


def test_the_cache_options_are_accepted_before_and_after_the_subcommand(
    pm: PluginManager,
) -> None:
    parser = build_parser(pm)
    for argv in (["cache", "--file", "a.db", "--type", "sqlite", "list"],
                 ["cache", "list", "--file", "a.db", "--type", "sqlite"],
                 ["cache", "--type", "sqlite", "show", "KEY", "--file", "a.db"],
                 ["cache", "--file", "a.db", "rm", "--failed", "--type", "sqlite"]):
        args = parser.parse_args(argv)
        assert (args.file, args.type) == ("a.db", "sqlite"), argv
    args = parser.parse_args(["cache", "list"])
    assert getattr(args, "file", None) is None and getattr(args, "type", None) is None
