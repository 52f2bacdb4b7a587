"""The protocol lives in the core (``hqs_sdk.wire``); ``hqs_sdk_rest.wire`` is its old name.

The service imports the protocol without installing this client, so the core's module must
need neither requests nor this package, and stays out of ``import hqs_sdk``.
"""

from __future__ import annotations

import subprocess
import sys

import pytest

import hqs_sdk.wire


def _imported_by(statement: str) -> set[str]:
    """The top-level packages and ``hqs_sdk`` modules a fresh interpreter has after
    ``statement``."""
    code = (f"import sys\n{statement}\n"
            "print('\\n'.join(m for m in sys.modules if '.' not in m or m.startswith('hqs_sdk')))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60, check=True)
    return set(done.stdout.split())


def test_the_core_protocol_needs_neither_the_client_nor_requests() -> None:
    modules = _imported_by("import hqs_sdk.wire")
    assert "hqs_sdk.wire" in modules
    assert not modules & {"hqs_sdk_rest", "hqs_sdk_server", "requests", "tenacity", "urllib3",
                          "cattrs"}
    # Beyond what `import hqs_sdk` brings, only the records it is made of.
    beyond = modules - _imported_by("import hqs_sdk")
    assert {m for m in beyond if m.startswith("hqs_sdk.")} == {"hqs_sdk.models", "hqs_sdk.wire"}


def test_import_hqs_sdk_does_not_import_the_protocol() -> None:
    assert "hqs_sdk.wire" not in _imported_by("import hqs_sdk")


def test_the_old_module_warns_and_gives_the_same_objects() -> None:
    sys.modules.pop("hqs_sdk_rest.wire", None)  # the warning comes with the import
    with pytest.warns(DeprecationWarning, match=r"import hqs_sdk\.wire instead") as caught:
        from hqs_sdk_rest import wire as old
    assert caught[0].filename == __file__  # it points at the import, not at importlib

    assert set(old.__all__) == set(hqs_sdk.wire.__all__)
    for name in hqs_sdk.wire.__all__:
        assert getattr(old, name) is getattr(hqs_sdk.wire, name), name
