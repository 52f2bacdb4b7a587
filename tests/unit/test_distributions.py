"""Every distribution in this repository ships what its metadata names.

setuptools only warns when ``long_description = file: README.md`` names a file that is not
there, and the package index then shows an empty page: the warning scrolls by on every
install and nobody reads it. This check makes it a failure.
"""

from __future__ import annotations

import configparser
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DISTRIBUTIONS = [ROOT, *sorted(p.parent for p in (ROOT / "plugins").glob("*/setup.cfg"))]


@pytest.mark.parametrize("folder", DISTRIBUTIONS, ids=lambda p: p.name)
def test_the_files_named_by_the_metadata_exist(folder: Path) -> None:
    parser = configparser.ConfigParser()
    parser.read(folder / "setup.cfg")
    name = parser.get("metadata", "name")
    value = parser.get("metadata", "long_description", fallback="")
    assert value.startswith("file:"), f"{name}: long_description should name a README file"
    for item in value[len("file:"):].split(","):
        path = folder / item.strip()
        assert path.is_file(), f"{name} names {item.strip()} in setup.cfg, but {path} is missing"
        text = path.read_text(encoding="utf-8")
        assert text.startswith("# "), f"{path} should start with a heading naming {name}"
        assert len(text.split()) >= 30, f"{path} is too short to tell a user what {name} is"


def test_every_plugin_folder_is_a_distribution() -> None:
    folders = sorted(p for p in (ROOT / "plugins").iterdir() if p.is_dir())
    assert folders == DISTRIBUTIONS[1:]
