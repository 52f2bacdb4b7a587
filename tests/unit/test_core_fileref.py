"""File references found in JSON values (what prune and the dashboard look for)."""

from __future__ import annotations

from hqs_sdk.fileref import FileRef, locations


def test_locations_lists_every_file_reference_in_document_order() -> None:
    value = {"a": FileRef("/x").to_json(),
             "b": [1, {"$fileref": "https://h/f?sig=1"}, {"c": {"$fileref": "/y"}}],
             "not a ref": {"$fileref": "/z", "other": 1}}
    assert locations(value) == ["/x", "https://h/f?sig=1", "/y"]


def test_locations_of_plain_values_is_empty() -> None:
    assert locations(None) == []
    assert locations("/a/path") == []
    assert locations([{"$fileref": 3}]) == []
