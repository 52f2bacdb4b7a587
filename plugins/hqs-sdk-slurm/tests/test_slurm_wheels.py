"""Wheels of the client's installed distributions, as task deployment uploads them."""

from __future__ import annotations

import base64
import hashlib
import zipfile
from pathlib import Path

import attrs
import pytest
from hqs_sdk_slurm import wheels
from hqs_sdk_slurm.wheels import closure, distribution_of_module, pack

from hqs_sdk.errors import ConfigurationError


class FakeDist:
    """Just enough of importlib.metadata.Distribution for the closure."""

    def __init__(self, name: str, requires: list[str], wheel: str = "") -> None:
        self.metadata = {"Name": name}
        self.version = "1.0"
        self.requires = requires
        self._wheel = wheel

    def read_text(self, name: str) -> str | None:
        return self._wheel if name == "WHEEL" else None


def test_the_closure_follows_requirements_and_only_the_extras_asked_for(
        monkeypatch: pytest.MonkeyPatch) -> None:
    installed = {
        "app": FakeDist("App", ["lib[fast]>=1", "tool; extra == 'cli'", "gone>=2",
                                'old; python_version < "3.8"']),
        "lib": FakeDist("Lib", ["speedup; extra == \"fast\"", "slow; extra == 'slow'"]),
        "speedup": FakeDist("speedup", []), "slow": FakeDist("slow", []),
        "tool": FakeDist("tool", []), "old": FakeDist("old", []),
    }
    monkeypatch.setattr(wheels, "_installed", lambda: installed)
    names = [d.name for d in closure(["app"])]
    # "gone" is not installed here (nothing to ship); "old" is: this installation took it.
    assert names == ["App", "Lib", "old", "speedup"]
    with pytest.raises(ConfigurationError, match="'missing' is not installed"):
        closure(["missing"])


def test_the_core_and_its_requirements_are_in_every_closure() -> None:
    names = {d.name.lower() for d in closure(["hqs-sdk"])}
    assert {"hqs-sdk", "pluggy", "attrs", "cattrs", "tenacity", "requests", "fabric"} <= names
    assert "pytest" not in names


def test_a_wheel_tag_set_is_compressed_as_in_file_names() -> None:
    dist = FakeDist("x", [], "Wheel-Version: 1.0\nTag: py2-none-any\nTag: py3-none-any\n")
    assert wheels._tag(dist) == "py2.py3-none-any"
    dist = FakeDist("x", [], "Tag: cp311-cp311-manylinux_2_17_x86_64\n"
                             "Tag: cp311-cp311-manylinux2014_x86_64\n")
    assert wheels._tag(dist) == "cp311-cp311-manylinux_2_17_x86_64.manylinux2014_x86_64"


@pytest.mark.parametrize(("name", "as_source"),
                         [("attrs", False), ("hqs-sdk", False), ("hqs-sdk", True)])
def test_a_packed_wheel_is_reproducible_and_records_its_files(name: str, as_source: bool,
                                                             tmp_path: Path) -> None:
    [local] = [d for d in closure([name]) if d.name.lower() == name]
    if as_source:  # packed from the files the client imports, as for an editable install
        local = attrs.evolve(local, editable_source=str(tmp_path))
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    first, second = pack(local, tmp_path / "a"), pack(local, tmp_path / "b")
    assert first.name == second.name and first.read_bytes() == second.read_bytes()
    with zipfile.ZipFile(first) as archive:
        names = archive.namelist()
        [record] = [n for n in names if n.endswith(".dist-info/RECORD")]
        info_dir = record.rsplit("/", 1)[0]
        assert not {f"{info_dir}/{n}" for n in ("INSTALLER", "direct_url.json")} & set(names)
        assert f"{info_dir}/METADATA" in names and f"{info_dir}/WHEEL" in names
        assert not any("__pycache__" in n or n.startswith("..") for n in names)
        for line in archive.read(record).decode().splitlines():
            path, digest, size = line.split(",")
            if path == record:
                continue
            data = archive.read(path)
            expected = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=")
            assert digest == f"sha256={expected.decode()}" and int(size) == len(data)
    top = name.replace("-", "_")
    assert f"{top}/__init__.py" in names


def test_a_module_of_no_distribution_is_refused() -> None:
    with pytest.raises(ConfigurationError, match="belongs to no installed distribution"):
        distribution_of_module("__main__")
    assert distribution_of_module("hqs_sdk.testing.tasks") == "hqs-sdk"

