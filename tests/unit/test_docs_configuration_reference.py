"""docs/configuration.md names every field of every installed configuration class."""

from __future__ import annotations

import re
from pathlib import Path

import attrs
import pytest

from hqs_sdk.plugins import registry

DOC = Path(__file__).resolve().parents[2] / "docs" / "configuration.md"
pytestmark = pytest.mark.skipif(not DOC.exists(), reason="docs/ is not in this checkout")


def _fields(cls: type) -> list[str]:
    return [f.name for f in attrs.fields(cls) if not f.name.startswith("_") and f.name != "mode"]


def test_every_backend_configuration_field_has_a_row() -> None:
    text = DOC.read_text()
    for name, spec in registry().backends.items():
        cls = spec.configuration_class
        section = re.search(rf"^### `{cls.__name__}`.*?(?=^##|\Z)", text, re.S | re.M)
        assert section, f"docs/configuration.md has no section ### `{cls.__name__}` ({name})"
        missing = [f for f in _fields(cls) if f"\n| `{f}` |" not in section.group(0)]
        assert not missing, f"{cls.__name__}: no row for {missing} in docs/configuration.md"


def test_every_cache_configuration_field_is_in_the_table() -> None:
    text = DOC.read_text()
    assert "Every cache configuration also has `mode`" in text
    for name, spec in registry().caches.items():
        cls = spec.configuration_class
        row = next((line for line in text.splitlines()
                    if line.startswith(f"| `{cls.__name__}`")), None)
        assert row, f"docs/configuration.md has no row for {cls.__name__} ({name})"
        missing = [f for f in _fields(cls) if f"`{f}=" not in row]
        assert not missing, f"{cls.__name__}: {missing} not in its row of docs/configuration.md"
