"""The direct reading of a states reply (``hqs_sdk_rest._statuses``) against the converter.

A polling round reads the service's reply without cattrs; what it builds must equal what the
converter makes of the same reply, for every state and every kind of progress and message,
and anything not in the service's exact shape must go to the converter (which then decides,
with its defaults and its errors). The reply as the real service writes it is checked in
test_rest_states.py.
"""

from __future__ import annotations

import itertools
from typing import Any

import pytest
from hqs_sdk_rest import _statuses

from hqs_sdk import wire
from hqs_sdk.backend import BackendStatus
from hqs_sdk.models import ExecutionState
from hqs_sdk.serialization import converter

PROGRESS: list[Any] = [None, {"fraction": None, "message": ""},
                       {"fraction": 0.25, "message": "step 1 of 4"},
                       {"fraction": 1, "message": "done"}, {"fraction": 0, "message": ""}]
MESSAGES = ["", "killed: out of memory", "ünïcode ✓"]


def _record(n: int, state: ExecutionState, progress: Any, message: str) -> dict[str, Any]:
    finished = "2026-01-01T00:00:02+00:00" if state.finished else None
    return {"id": f"{n:032x}", "task_name": "add", "task_version": "1.0", "state": state.value,
            "created_at": "2026-01-01T00:00:00+00:00",
            "started_at": None if state is ExecutionState.QUEUED else "2026-01-01T00:00:01Z",
            "finished_at": finished, "progress": progress, "message": message}


def _varied() -> dict[str, Any]:
    combos = itertools.product(ExecutionState, PROGRESS, MESSAGES)
    return {"executions": [_record(n, *combo) for n, combo in enumerate(combos)],
            "missing": ["nobody-has-this"]}


def _by_converter(reply: Any) -> dict[str, BackendStatus]:
    infos = converter.structure(reply, wire.StatesReply).executions
    return {info.id: BackendStatus(info.state, info.progress, info.message) for info in infos}


def test_the_direct_reading_equals_the_converters_for_every_state_progress_and_message(
        ) -> None:
    reply = _varied()
    found = _statuses.direct(reply)
    assert found is not None  # the service's shape is read directly
    expected = _by_converter(reply)
    assert len(found) == len(expected) == len(ExecutionState) * len(PROGRESS) * len(MESSAGES)
    assert found == expected
    for execution_id, status in found.items():  # the same types too, not only equal values
        want = expected[execution_id]
        assert type(status.state) is type(want.state)
        assert type(status.progress) is type(want.progress)
        if status.progress is not None and want.progress is not None:
            assert type(status.progress.fraction) is type(want.progress.fraction)
    assert _statuses.statuses(reply) == expected


def test_fields_a_status_does_not_hold_may_come_and_go() -> None:
    reply = {"executions": [{**_record(1, ExecutionState.RUNNING, None, ""), "new": [1]}]}
    assert _statuses.direct(reply) == _by_converter(reply)


@pytest.mark.parametrize("change", [
    {"message": None}, {"progress": {"fraction": "half", "message": ""}},
    {"progress": {"fraction": True, "message": ""}}, {"progress": [0.5, ""]},
    {"state": "exploded"}, {"id": 7},
], ids=["message-none", "fraction-text", "fraction-bool", "progress-list", "unknown-state",
        "id-number"])
def test_a_record_not_in_the_services_shape_is_left_to_the_converter(
        change: dict[str, Any]) -> None:
    reply = {"executions": [{**_record(1, ExecutionState.RUNNING, None, ""), **change}]}
    assert _statuses.direct(reply) is None
    # What the converter makes of it, or the kind of error it raises (it reads a list as a
    # Progress with the defaults; the others it refuses).
    assert _outcome(_statuses.statuses, reply) == _outcome(_by_converter, reply)


def _outcome(read: Any, reply: Any) -> Any:
    try:
        return read(reply)
    except Exception as exc:  # compared: the same kind of error
        return type(exc)


_RECORD = _record(1, ExecutionState.FAILED, None, "gone")


@pytest.mark.parametrize("record", [
    {k: v for k, v in _RECORD.items() if k != "message"},
    {k: v for k, v in _RECORD.items() if k != "progress"},
    {**_RECORD, "progress": {"fraction": 0.5}},
], ids=["no-message", "no-progress", "progress-no-message"])
def test_a_missing_field_with_a_default_is_read_by_the_converter(record: Any) -> None:
    reply = {"executions": [record]}
    assert _statuses.direct(reply) is None
    assert _statuses.statuses(reply) == _by_converter(reply)


def test_the_timestamps_are_not_read_directly() -> None:
    reply = {"executions": [{k: v for k, v in _RECORD.items() if k != "created_at"}]}
    assert _statuses.direct(reply) == {"1".zfill(32): BackendStatus(ExecutionState.FAILED,
                                                                    message="gone")}


@pytest.mark.parametrize("reply", [["e1"], {"items": []}, {"executions": "e1"},
                                   {"executions": [], "missing": "e1"}, None])
def test_a_reply_that_is_no_states_reply_is_not_read_directly(reply: Any) -> None:
    assert _statuses.direct(reply) is None
    with pytest.raises(Exception):  # noqa: B017 (whatever the converter raises)
        _statuses.statuses(reply)
