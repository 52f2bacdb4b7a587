"""The service asks its backend (Backend.output_locations, delegates_to_service) instead of
knowing plugin names and folder layouts."""

from __future__ import annotations

import types
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import attrs
import pytest

from hqs_sdk.backend import Backend, BackendConfiguration, BackendSpec, Handle
from hqs_sdk.hookspecs import hookimpl
from hqs_sdk.plugins import get_plugin_manager, use_plugin_manager


@attrs.frozen
class BackendConfigurationElsewhere(BackendConfiguration):
    root: str = "/data/elsewhere"


@attrs.frozen
class BackendConfigurationDelegating(BackendConfiguration):
    url: str = "http://127.0.0.1:1"


_UNUSED = "the settings tests only ask this backend where outputs go; they run nothing on it"


class ElsewhereBackend(Backend):
    """Keeps outputs in a layout no one else knows: ``<root>/outputs/<execution id>``.

    Only :meth:`output_locations` is used; the abstract methods raise if ever called.
    """

    def output_locations(self, execution_id: str, handle: Handle | None = None
                         ) -> Sequence[str]:
        return [f"{self.config.root}/outputs/{execution_id}"]  # type: ignore[attr-defined]

    def submit(self, request: Any) -> Handle:
        raise NotImplementedError(_UNUSED)

    def states(self, handles: Any) -> Any:
        raise NotImplementedError(_UNUSED)

    def fetch(self, handle: Handle) -> Any:
        raise NotImplementedError(_UNUSED)

    def cancel(self, handle: Handle) -> None:
        raise NotImplementedError(_UNUSED)


class DelegatingBackend(ElsewhereBackend):
    delegates_to_service = True


@pytest.fixture
def plugins() -> Iterator[None]:
    specs = [BackendSpec("elsewhere", BackendConfigurationElsewhere, ElsewhereBackend),
             BackendSpec("delegating", BackendConfigurationDelegating, DelegatingBackend)]
    pm = get_plugin_manager()
    pm.register(types.SimpleNamespace(hqs_sdk_backends=hookimpl(lambda: specs)),
                name="test-settings-backends")
    with use_plugin_manager(pm):
        yield


def test_execution_folders_are_what_the_backend_names(plugins: None, tmp_path: Path) -> None:
    from hqs_sdk_server.settings import Settings

    settings = Settings(data_dir=tmp_path)
    config = BackendConfigurationElsewhere(root="/srv/x")
    assert settings.execution_folders(config, "run7") == ["/srv/x/outputs/run7"]


def test_a_backend_that_delegates_to_a_service_is_refused(plugins: None, tmp_path: Path) -> None:
    from hqs_sdk_server.settings import Settings, SettingsError

    backend_file = tmp_path / "backend.json"
    backend_file.write_text('{"backend": "delegating"}')
    settings = Settings(data_dir=tmp_path / "data", backend_file=backend_file)
    with pytest.raises(SettingsError, match=r"can use are: .*elsewhere") as caught:
        settings.backend_config()
    assert "delegating" not in str(caught.value).rpartition("can use are:")[2]
    backend_file.write_text('{"backend": "elsewhere", "root": "/srv/y"}')
    assert settings.backend_config() == BackendConfigurationElsewhere(root="/srv/y")
