"""What enters a cache key: file contents by hash, URLs by stable identity, values by exact type.

Regression tests of issue 11 (defects 2, 3 and 9) at the level of the core, with real files and
real processes; the scripts a user runs are in tests/integration/test_regression_keys.py.
"""

from __future__ import annotations

import enum
import hashlib
import json
import os
import subprocess
import sys
import time
import types
from pathlib import Path
from typing import Any

import attrs
import pytest

from hqs_sdk import FileRef, hookimpl, task
from hqs_sdk import file_digest as digest
from hqs_sdk.cache_key import file_identity, key_form
from hqs_sdk.errors import SerializationError
from hqs_sdk.plugins import get_plugin_manager, use_plugin_manager
from hqs_sdk.serialization import converter
from hqs_sdk.testing import tasks

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def own_memo(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A memo of file hashes per test (and for the processes it starts), not the user's."""
    folder = tmp_path_factory.mktemp("xdg-cache")
    monkeypatch.setenv("XDG_CACHE_HOME", str(folder))
    monkeypatch.setattr(digest, "_known", {})
    return folder / "hqs-sdk" / "file-hashes.sqlite"


def _settled(path: Path, content: bytes, age_s: float = 60.0) -> os.stat_result:
    """Write ``content`` to ``path`` as if a while ago; return its state."""
    path.write_bytes(content)
    past = time.time() - age_s
    os.utime(path, (past, past))
    return path.stat()


def _rewrite_keeping_state(path: Path, content: bytes, state: os.stat_result) -> None:
    """Change the content in place (same inode) and put size and times back: only a re-read
    could notice."""
    assert len(content) == state.st_size
    with open(path, "r+b") as f:
        f.write(content)
    os.utime(path, ns=(state.st_atime_ns, state.st_mtime_ns))
    assert path.stat().st_mtime_ns == state.st_mtime_ns


# -- defect 2: a local file enters the key by its content ------------------------------------

def test_a_changed_input_file_changes_the_key(tmp_path: Path) -> None:
    data = tmp_path / "input.txt"
    data.write_text("first")
    first = tasks.read_text.bind(FileRef.from_path(data))
    data.write_text("second")  # same size, within the same second
    second = tasks.read_text.bind(FileRef.from_path(data))
    assert first.cache_key != second.cache_key
    data.write_text("first")
    assert tasks.read_text.bind(FileRef.from_path(data)).cache_key == first.cache_key


def test_the_key_is_the_content_not_the_path_and_the_request_keeps_the_path(tmp_path: Path
                                                                          ) -> None:
    one, two = tmp_path / "one.bin", tmp_path / "two.bin"
    one.write_bytes(b"same bytes")
    two.write_bytes(b"same bytes")
    call = tasks.read_text.bind(FileRef.from_path(one))
    assert call.cache_key == tasks.read_text.bind(FileRef.from_path(two)).cache_key
    assert call.input == {"ref": {"$fileref": str(one)}}  # what the backend is sent
    sha = hashlib.sha256(b"same bytes").hexdigest()
    keyed = json.dumps({"ref": {"$fileref": f"sha256:{sha}"}}, separators=(",", ":")).encode()
    assert key_form(call.canonical_input) == keyed
    assert call.cache_key == (f"read_text@{tasks.read_text.version}:"
                              f"{hashlib.sha256(keyed).hexdigest()}")
    assert file_identity(f"file://{one}") == f"sha256:{sha}"


def test_file_references_anywhere_in_an_input_are_keyed_by_content(tmp_path: Path) -> None:
    data = tmp_path / "nested.txt"
    data.write_text("v1")
    nested = {"runs": [{"input": FileRef.from_path(data).to_json(), "n": 1}]}
    first = tasks.echo.bind(nested).cache_key
    data.write_text("v2")
    assert tasks.echo.bind(nested).cache_key != first


def test_an_input_without_files_keeps_its_key_and_is_not_walked(tmp_path: Path) -> None:
    canonical = b'{"value":{"a":[1,"$fileref x"]}}'
    assert key_form(canonical) is canonical  # the same object: no parse, no walk
    call = tasks.echo.bind({"b": [1, 2.5, "ü"], "a": None})
    assert call.cache_key.endswith(hashlib.sha256(call.canonical_input).hexdigest())


def test_a_missing_or_unreadable_input_file_is_an_error_at_the_call(tmp_path: Path) -> None:
    missing = tmp_path / "nope.txt"
    with pytest.raises(SerializationError,
                       match=r"argument 'ref' of task 'read_text' is the file .*nope\.txt, "
                             r"which cannot be read \(No such file or directory\)"):
        tasks.read_text.bind(FileRef.from_path(missing))
    with pytest.raises(SerializationError,
                       match=r"argument 'ref' .*\(it is a folder, not a file\)"):
        tasks.read_text.bind(FileRef.from_path(tmp_path))
    if os.geteuid() != 0:  # root reads anything
        locked = tmp_path / "locked.txt"
        locked.write_text("secret")
        locked.chmod(0)
        with pytest.raises(SerializationError, match=r"locked\.txt.*Permission denied"):
            tasks.read_text.bind(FileRef.from_path(locked))


def test_relative_and_other_locations_enter_the_key_as_they_are() -> None:
    # A relative path is resolved by the worker in its own folder; the client cannot hash it.
    assert file_identity("out.txt") == "out.txt"
    assert file_identity("hqs-file:0123") == "hqs-file:0123"
    assert tasks.read_text.bind(FileRef("out.txt")).input == {"ref": {"$fileref": "out.txt"}}


# -- the memo: hashes remembered per file state, in process and across processes ------------

def test_a_settled_file_is_hashed_once_per_state(tmp_path: Path, own_memo: Path) -> None:
    data = tmp_path / "big.bin"
    state = _settled(data, b"a" * 100_000)
    first = digest.sha256_of(str(data))
    assert first == hashlib.sha256(b"a" * 100_000).hexdigest()
    _rewrite_keeping_state(data, b"b" * 100_000, state)
    assert digest.sha256_of(str(data)) == first  # remembered: not read again
    os.utime(data, ns=(state.st_atime_ns, state.st_mtime_ns + 1))  # a new state
    assert digest.sha256_of(str(data)) == hashlib.sha256(b"b" * 100_000).hexdigest()
    assert own_memo.is_file()


def test_a_file_modified_just_before_hashing_is_not_remembered(tmp_path: Path) -> None:
    data = tmp_path / "fresh.bin"
    data.write_bytes(b"1234")
    state = data.stat()
    assert digest.sha256_of(str(data)) == hashlib.sha256(b"1234").hexdigest()
    # Rewritten within the same timestamp: only a file too fresh to trust is re-read.
    _rewrite_keeping_state(data, b"5678", state)
    assert digest.sha256_of(str(data)) == hashlib.sha256(b"5678").hexdigest()


HASH_IN_NEW_PROCESS = """
import sys
from hqs_sdk.file_digest import sha256_of
print(sha256_of(sys.argv[1]))
print("sqlite3" in sys.modules)
"""


def _hash_in_new_process(path: Path) -> str:
    out = subprocess.run([sys.executable, "-c", HASH_IN_NEW_PROCESS, str(path)], check=True,
                         capture_output=True, text=True, timeout=60).stdout.split()
    return out[0]


def test_a_later_process_takes_the_remembered_hash(tmp_path: Path, own_memo: Path) -> None:
    data = tmp_path / "shared.bin"
    state = _settled(data, b"x" * 4096)
    first = _hash_in_new_process(data)
    assert own_memo.is_file()
    _rewrite_keeping_state(data, b"y" * 4096, state)
    assert _hash_in_new_process(data) == first  # from the memo, not from the file


def test_a_broken_memo_means_hashing_again(tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                                           ) -> None:
    blocked = tmp_path / "not-a-folder"
    blocked.write_text("a file where the cache folder would be")
    monkeypatch.setenv("XDG_CACHE_HOME", str(blocked))
    data = tmp_path / "data.bin"
    _settled(data, b"hashed all the same")
    assert _hash_in_new_process(data) == hashlib.sha256(b"hashed all the same").hexdigest()

    damaged = tmp_path / "damaged"
    (damaged / "hqs-sdk").mkdir(parents=True)
    (damaged / "hqs-sdk" / "file-hashes.sqlite").write_bytes(b"garbage " * 1000)
    monkeypatch.setenv("XDG_CACHE_HOME", str(damaged))
    assert _hash_in_new_process(data) == hashlib.sha256(b"hashed all the same").hexdigest()


def test_inputs_without_files_import_no_hashing_or_sqlite() -> None:
    code = ("import sys\nfrom hqs_sdk.testing import tasks\n"
            "tasks.echo.bind({'a': [1, 'x']}); tasks.add.bind(1, 2)\n"
            "print(sorted(m for m in ('hqs_sdk.file_digest', 'sqlite3') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True,
                         text=True, timeout=60, cwd=ROOT).stdout
    assert out.strip() == "[]"


# -- defect 3: a URL enters the key by the identity its plugin gives it ----------------------

SIGNED = "https://files.example.org/objects/{id}?token={token}&expires={expires}"


def _identity_plugin() -> Any:
    @hookimpl
    def hqs_sdk_file_identity(location: str) -> str | None:
        if location.startswith("https://files.example.org/objects/"):
            return location.partition("?")[0]
        return None

    return types.SimpleNamespace(hqs_sdk_file_identity=hqs_sdk_file_identity)


def test_a_url_is_its_own_identity_unless_a_plugin_says_what_is_stable() -> None:
    old = FileRef(SIGNED.format(id="a1", token="t1", expires=1))
    fresh = FileRef(SIGNED.format(id="a1", token="t2", expires=2))
    other = FileRef(SIGNED.format(id="b2", token="t2", expires=2))
    pm = get_plugin_manager(load_entrypoints=False)
    with use_plugin_manager(pm):
        assert tasks.read_text.bind(old).cache_key != tasks.read_text.bind(fresh).cache_key
    pm.register(_identity_plugin(), name="identity-test")
    with use_plugin_manager(pm):
        assert file_identity(fresh.location) == "https://files.example.org/objects/a1"
        assert tasks.read_text.bind(old).cache_key == tasks.read_text.bind(fresh).cache_key
        assert tasks.read_text.bind(old).cache_key != tasks.read_text.bind(other).cache_key
        assert tasks.read_text.bind(fresh).input == {"ref": fresh.to_json()}  # sent as given
        assert file_identity("sftp://host/x") == "sftp://host/x"  # nobody claims it


# -- defect 9: values of the wrong type are refused, never coerced ---------------------------

class Mode(enum.Enum):
    FAST = "fast"


@attrs.frozen
class Options:
    verbose: bool
    repeat: int
    scale: float = 1.0


@task(version="1")
def configure(flag: bool, count: int, ratio: float, label: str, options: Options | None = None
              ) -> str:
    """Takes one parameter of each plain type, and a record."""
    return f"{flag!r} {count!r} {ratio!r} {label!r} {options!r}"


GOOD: dict[str, Any] = {"flag": False, "count": 3, "ratio": 0.5, "label": "x"}


@pytest.mark.parametrize(("name", "value", "words"), [
    ("flag", "false", r"argument 'flag' of task 'configure' must be a bool, got str 'false'"),
    ("flag", 0, "must be a bool, got int 0"),
    ("count", "3", "argument 'count' of task 'configure' must be an int, got str '3'"),
    ("count", True, "must be an int, got bool True"),
    ("count", 3.0, "must be an int, got float 3.0"),
    ("ratio", "0.5", "must be a float, got str '0.5'"),
    ("ratio", False, "must be a float, got bool False"),
    ("label", 7, "must be a str, got int 7"),
    ("options", Options("no", 1), r"argument 'options' .* expected bool, got str 'no' "
                                  r"@ \$\.verbose"),
    ("options", Options(True, "2"), r"expected int, got str '2' @ \$\.repeat"),
])
def test_a_value_of_the_wrong_type_is_refused_at_the_call(name: str, value: Any, words: str
                                                          ) -> None:
    with pytest.raises(SerializationError, match=words):
        configure.bind(**{**GOOD, name: value})


class Name(enum.StrEnum):
    ADA = "ada"


@task(version="1")
def summarise(values: list[float], counts: dict[str, int], names: list[str]) -> float:
    """Takes lists and dicts of plain types (checked in one pass, without the converter)."""
    return sum(values) + sum(counts.values()) + len(names)


@pytest.mark.parametrize(("arguments", "words"), [
    ({"values": [1.0, "2"]}, r"argument 'values' of task 'summarise'\[1\] must be a float, "
                             r"got str '2'"),
    ({"values": (1, 2.0, True)}, r"'values' of task 'summarise'\[2\] must be a float, got bool"),
    ({"counts": {"a": 1, "b": False}}, r"'counts' of task 'summarise'\['b'\] must be an int"),
    ({"counts": {1: 2}}, "has the key 1 of type int"),
    ({"names": "abc"}, "argument 'names' of task 'summarise' must be a list, got str 'abc'"),
    ({"values": [float("nan")]}, r"'values' of task 'summarise'\[0\] is nan"),
])
def test_lists_and_dicts_of_plain_types_are_checked_item_by_item(arguments: dict[str, Any],
                                                                 words: str) -> None:
    with pytest.raises(SerializationError, match=words):
        summarise.bind(**{"values": [], "counts": {}, "names": [], **arguments})


def test_lists_and_dicts_of_plain_types_keep_their_keys() -> None:
    call = summarise.bind((1, 2.5), {"a": 3}, ["x", Name.ADA])
    assert call.input == {"values": [1, 2.5], "counts": {"a": 3}, "names": ["x", "ada"]}
    assert summarise.execute(call.input) == 8.5


def test_values_of_the_declared_types_pass_and_an_int_is_fine_for_a_float() -> None:
    call = configure.bind(True, 3, 2, "x", Options(False, 1, 2))
    assert call.input == {"flag": True, "count": 3, "ratio": 2, "label": "x",
                          "options": {"verbose": False, "repeat": 1, "scale": 2}}
    assert configure.execute(call.input) == ("True 3 2.0 'x' "
                                             "Options(verbose=False, repeat=1, scale=2.0)")


def test_the_worker_refuses_what_the_client_would_have_refused() -> None:
    with pytest.raises(SerializationError, match=r"argument 'flag' .* must be a bool, got str"):
        configure.execute({**GOOD, "flag": "false"})
    with pytest.raises(SerializationError, match=r"expected int, got str '2' @ \$\.repeat"):
        configure.execute({**GOOD, "options": {"verbose": True, "repeat": "2"}})


@pytest.mark.parametrize(("value", "kind", "expected"), [
    (True, bool, True), (3, int, 3), (3, float, 3.0), (2.5, float, 2.5), ("fast", Mode, Mode.FAST),
])
def test_the_converter_takes_exact_types(value: Any, kind: type, expected: Any) -> None:
    result = converter.structure(value, kind)
    assert result == expected and type(result) is type(expected)


@pytest.mark.parametrize(("value", "kind"), [
    ("false", bool), (1, bool), ("3", int), (True, int), (2.5, int), ("1.5", float),
    (True, float), (None, int),
])
def test_the_converter_refuses_coercions(value: Any, kind: type) -> None:
    with pytest.raises(TypeError, match=f"expected {kind.__name__}, got"):
        converter.structure(value, kind)
