"""The import-linter contracts in setup.cfg name every module of the core.

A module left out of the layers is not checked by them at all, and one left out of the
``no-package-imports`` sources may import names from the package; both lists are written by
hand, so a new module must be added to them (see docs/architecture.md).
"""

from __future__ import annotations

import configparser
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SETUP_CFG = ROOT / "setup.cfg"
pytestmark = pytest.mark.skipif(not SETUP_CFG.exists(), reason="setup.cfg is not in this checkout")


def _modules() -> set[str]:
    """Every module of the core package below ``hqs_sdk`` (subpackages as one)."""
    package = ROOT / "hqs_sdk"
    found = {f"hqs_sdk.{p.stem}" for p in package.glob("*.py") if p.stem != "__init__"}
    found |= {f"hqs_sdk.{p.parent.name}" for p in package.glob("*/__init__.py")}
    return found


def _contract(name: str, option: str) -> set[str]:
    parser = configparser.ConfigParser()
    parser.read(SETUP_CFG)
    return set(re.findall(r"hqs_sdk(?:\.\w+)+", parser[f"importlinter:contract:{name}"][option]))


def test_every_module_has_a_layer() -> None:
    missing = sorted(_modules() - _contract("core-layers", "layers"))
    assert not missing, f"add {missing} to the layers in setup.cfg (and docs/architecture.md)"


def test_every_module_but_the_test_support_is_kept_from_importing_the_package() -> None:
    missing = sorted(_modules() - {"hqs_sdk.testing"}
                     - _contract("no-package-imports", "source_modules"))
    assert not missing, f"add {missing} to the no-package-imports sources in setup.cfg"
