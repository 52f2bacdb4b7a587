"""The client's own installed distributions, as wheels that install the same code elsewhere.

Task deployment installs exactly what the client runs: the task's distribution, ``hqs-sdk``
and everything they require, at the versions installed here. Nothing is fetched from an index:

- an installed distribution with a ``RECORD`` is packed back into a wheel from its files (the
  wheel's tag comes from its ``WHEEL`` file, so binary wheels keep their platform);
- an editable install (``direct_url.json`` says so, or the metadata is a source tree's
  ``.egg-info``) is packed from the files the client imports now (every file of its top-level
  packages), with its metadata; no build backend and no index are needed.

The packed zip is byte-for-byte reproducible (sorted entries, fixed timestamps), so the same
installation always gives the same wheel hash, and uploads are shared between clients.
"""

from __future__ import annotations

import base64
import hashlib
import importlib.metadata as md
import json
import os
import re
import sys
import zipfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import attrs

from hqs_sdk.errors import ConfigurationError

__all__ = ["LocalDistribution", "closure", "distribution_of_module", "pack"]

_NAME = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)\s*(?:\[([^\]]*)\])?")
_EXTRA = re.compile(r"""\bextra\s*==\s*['"]([^'"]+)['"]""")
# Files of an installed distribution that describe that installation, not the distribution.
_INSTALL_ONLY = {"RECORD", "INSTALLER", "REQUESTED", "direct_url.json"}


def normalise(name: str) -> str:
    """The PEP 503 form of a distribution name."""
    return re.sub(r"[-_.]+", "-", name).lower()


@attrs.frozen
class LocalDistribution:
    """One installed distribution: its name, version and what identifies its content."""

    name: str
    version: str
    dist: Any = attrs.field(eq=False, repr=False)
    #: The source folder of an editable install (built with ``pip wheel``), else None.
    editable_source: str | None = None

    def fingerprint(self) -> str | None:
        """A hash of the installed files' recorded hashes; None for editable installs."""
        if self.editable_source is not None:
            return None
        record = self.dist.read_text("RECORD")
        if record is None:
            return None
        return hashlib.sha256(record.encode()).hexdigest()


def _installed() -> dict[str, Any]:
    found: dict[str, Any] = {}
    for dist in md.distributions():  # in sys.path order: the first one is the imported one
        name = dist.metadata["Name"]
        if name:
            found.setdefault(normalise(name), dist)
    return found


def _editable_source(dist: Any) -> str | None:
    path = getattr(dist, "_path", None)
    if path is not None and str(path).endswith(".egg-info"):
        # A source tree's own metadata (setup.py develop, or running from the checkout).
        folder = Path(str(path)).parent
        if any((folder / f).exists() for f in ("pyproject.toml", "setup.py", "setup.cfg")):
            return str(folder)
    text = dist.read_text("direct_url.json")
    if not text:
        return None
    try:
        info = json.loads(text)
    except ValueError:
        return None
    url = str(info.get("url", ""))
    if info.get("dir_info", {}).get("editable") and url.startswith("file://"):
        from urllib.parse import unquote, urlparse

        return unquote(urlparse(url).path)
    return None


def distribution_of_module(module: str) -> str:
    """The installed distribution that provides ``module``'s top-level package."""
    top = module.partition(".")[0]
    names = md.packages_distributions().get(top, [])
    if not names:
        raise ConfigurationError(
            f"the module {module!r} belongs to no installed distribution, so it cannot be "
            "deployed; put the task in a package and install it (pip install -e ...), or turn "
            "deploy off and install the task on the cluster yourself"
        )
    return str(names[0])


def closure(roots: Iterable[str]) -> list[LocalDistribution]:
    """``roots`` and everything they require, as installed here, sorted by name.

    A requirement counts when it is installed here and, if it is tied to an extra, that extra
    was asked for; other environment markers are taken as the installation here decided them
    (the cluster runs the same Python).
    """
    installed = _installed()
    wanted: list[tuple[str, frozenset[str]]] = [(normalise(r), frozenset()) for r in roots]
    seen: dict[str, set[str]] = {}
    result: dict[str, LocalDistribution] = {}
    while wanted:
        key, extras = wanted.pop()
        dist = installed.get(key)
        if dist is None:
            if key in {normalise(r) for r in roots}:
                raise ConfigurationError(f"the distribution {key!r} is not installed here")
            continue
        done = seen.setdefault(key, set())
        if key in result and extras <= done:
            continue
        done.update(extras)
        result[key] = LocalDistribution(dist.metadata["Name"], dist.version, dist,
                                        _editable_source(dist))
        for text in dist.requires or []:
            match = _NAME.match(text)
            if not match:
                continue
            _, _, marker = text.partition(";")
            extra = _EXTRA.search(marker)
            if extra and normalise(extra.group(1)) not in {normalise(e) for e in done}:
                continue
            sub = frozenset(e.strip() for e in (match.group(2) or "").split(",") if e.strip())
            wanted.append((normalise(match.group(1)), sub))
    return [result[k] for k in sorted(result)]


def _tag(dist: Any) -> str:
    """The wheel's compressed tag set (``py2.py3-none-any``) from its ``WHEEL`` file."""
    parts: list[list[str]] = [[], [], []]
    for line in (dist.read_text("WHEEL") or "").splitlines():
        key, _, value = line.partition(":")
        pieces = value.strip().split("-")
        if key.strip() == "Tag" and len(pieces) == 3:
            for known, piece in zip(parts, pieces, strict=True):
                if piece not in known:
                    known.append(piece)
    if not parts[0]:
        return "py3-none-any"
    return "-".join(".".join(p) for p in parts)


def _record_hash(data: bytes) -> str:
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    return f"sha256={digest}"


def _repack(local: LocalDistribution, into: Path) -> Path:
    dist = local.dist
    files = dist.files
    if files is None:
        raise ConfigurationError(
            f"{local.name} {local.version} was installed without a RECORD (by a system package "
            "manager?), so it cannot be packed for deployment; install it with pip in the "
            "client's environment"
        )
    info_dirs = {f.parts[0] for f in files if f.parts and f.parts[0].endswith(".dist-info")}
    if len(info_dirs) != 1:
        raise ConfigurationError(f"{local.name} {local.version}: cannot find its .dist-info")
    info_dir = info_dirs.pop()
    entries: dict[str, bytes] = {}
    for path in files:
        parts = path.parts
        if (not parts or parts[0] == ".." or "__pycache__" in parts or path.suffix == ".pyc"
                or (parts[0] == info_dir and len(parts) == 2 and parts[1] in _INSTALL_ONLY)):
            continue  # console scripts are made again from entry_points.txt on install
        try:
            entries[path.as_posix()] = Path(str(dist.locate_file(path))).read_bytes()
        except FileNotFoundError:
            continue
    return _write_wheel(into / f"{info_dir[:-len('.dist-info')]}-{_tag(dist)}.whl",
                        info_dir, entries)


def _write_wheel(target: Path, info_dir: str, entries: dict[str, bytes]) -> Path:
    """A reproducible wheel: sorted entries, fixed timestamps, a fresh ``RECORD``."""
    record_name = f"{info_dir}/RECORD"
    record = "".join(f"{name},{_record_hash(data)},{len(data)}\n"
                     for name, data in sorted(entries.items())) + f"{record_name},,\n"
    entries = {**entries, record_name: record.encode()}
    with zipfile.ZipFile(target, "w", zipfile.ZIP_DEFLATED) as archive:
        for name in sorted(entries):
            info = zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            archive.writestr(info, entries[name])
    return target


def _metadata(dist: Any) -> str:
    """``METADATA``; a source tree's ``PKG-INFO`` gets its ``requires.txt`` added."""
    text = dist.read_text("METADATA")
    if text is not None:
        return str(text)
    text = str(dist.read_text("PKG-INFO") or "")
    requires = []
    for line in (dist.read_text("requires.txt") or "").splitlines():
        if line.startswith("["):
            break  # extras and markers follow; the base requirements come first
        if line.strip():
            requires.append(f"Requires-Dist: {line.strip()}\n")
    head, sep, body = text.partition("\n\n")
    return head.rstrip("\n") + "\n" + "".join(requires) + sep + body


def _source_files(top: str) -> dict[str, bytes]:
    """The files of the importable package or module ``top``, as the client imports them."""
    import importlib.util

    spec = importlib.util.find_spec(top)
    if spec is None:
        return {}
    if spec.submodule_search_locations:
        base = Path(next(iter(spec.submodule_search_locations)))
        return {f"{top}/{path.relative_to(base).as_posix()}": path.read_bytes()
                for path in sorted(base.rglob("*"))
                if path.is_file() and "__pycache__" not in path.relative_to(base).parts
                and path.suffix not in (".pyc", ".pyo")}
    if spec.origin and os.path.isfile(spec.origin):
        return {os.path.basename(spec.origin): Path(spec.origin).read_bytes()}
    return {}


def _pack_source(local: LocalDistribution, into: Path) -> Path:
    """A wheel of what the client imports from an editable install's source folder."""
    import sysconfig

    dist = local.dist
    entries: dict[str, bytes] = {}
    for top in (dist.read_text("top_level.txt") or "").split():
        entries.update(_source_files(top))
    if not entries:
        raise ConfigurationError(
            f"cannot find the modules of the editable install {local.name} "
            f"({local.editable_source}); reinstall it, or install it without -e")
    compiled = any(name.endswith(".so") for name in entries)
    python = f"cp{sys.version_info.major}{sys.version_info.minor}"
    platform = re.sub(r"[-.]", "_", sysconfig.get_platform())
    tag = f"{python}-{python}-{platform}" if compiled else "py3-none-any"
    stem = f"{re.sub(r'[-_.]+', '_', local.name)}-{local.version}"
    info_dir = f"{stem}.dist-info"
    entries[f"{info_dir}/METADATA"] = _metadata(dist).encode()
    entries[f"{info_dir}/WHEEL"] = (
        "Wheel-Version: 1.0\nGenerator: hqs-sdk-slurm\n"
        f"Root-Is-Purelib: {str(not compiled).lower()}\nTag: {tag}\n").encode()
    for name in ("entry_points.txt", "top_level.txt"):
        text = dist.read_text(name)
        if text:
            entries[f"{info_dir}/{name}"] = text.encode()
    return _write_wheel(into / f"{stem}-{tag}.whl", info_dir, entries)


def pack(local: LocalDistribution, into: Path) -> Path:
    """A wheel file in ``into`` that installs ``local`` as it is installed here."""
    if local.editable_source is not None:
        return _pack_source(local, into)
    return _repack(local, into)


def file_hash(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
