"""hqs_sdk.control's reading of file *contents*: what a backend that reads a control folder
over another transport (the Slurm backend, over SSH) passes as a mapping name -> bytes."""

from __future__ import annotations

import json
from pathlib import Path

from hqs_sdk.control import (
    CANCEL,
    PID,
    PROGRESS,
    REQUEST,
    RESPONSE,
    RESULT,
    STATE,
    SUBMITTED,
    ControlFolder,
    FolderStatus,
    error_response,
    parse_json,
    vanished_response,
    write_atomically,
)
from hqs_sdk.models import ExecutionState, Progress

GONE = {SUBMITTED: b"", RESPONSE: None, RESULT: None, CANCEL: None}


def test_a_response_reduced_to_its_state_is_final_whatever_else_the_folder_shows() -> None:
    files = {RESPONSE: b'{"state": "timed_out"}', STATE: b"running"}
    assert FolderStatus.from_files(files, worker_alive=True).state is ExecutionState.TIMED_OUT
    unknown = {RESPONSE: b'{"state": "exploded"}'}
    assert FolderStatus.from_files(unknown, worker_alive=False).state is ExecutionState.FAILED


def test_a_live_worker_is_running_once_its_state_says_so_with_its_progress() -> None:
    files = {STATE: b"running\n", PROGRESS: b'{"fraction": 0.5, "message": "half"}'}
    assert FolderStatus.from_files(files, True) == (ExecutionState.RUNNING,
                                                    Progress(0.5, "half"), "")
    assert FolderStatus.from_files({STATE: b"queued", PROGRESS: b'{"fract'}, True) == (
        ExecutionState.QUEUED, None, "")


def test_without_worker_the_result_then_the_cancel_marker_then_submission_decide() -> None:
    def state(**changes: bytes | None) -> ExecutionState:
        return FolderStatus.from_files({**GONE, **changes}, False).state

    assert state(**{RESULT: b'{"ok": true}'}) is ExecutionState.SUCCEEDED
    assert state(**{RESULT: b'{"ok": false}', CANCEL: b""}) is ExecutionState.FAILED
    assert state(**{CANCEL: b""}) is ExecutionState.CANCELLED
    assert state(**{SUBMITTED: None}) is ExecutionState.QUEUED  # another client submits it
    assert state(**{SUBMITTED: None, PID: b"12 34"}) is ExecutionState.FAILED
    gone = FolderStatus.from_files(GONE, False)
    assert gone.state is ExecutionState.FAILED and "gone" in gone.message
    assert state(**{SUBMITTED: None, REQUEST: None}) is ExecutionState.FAILED  # no request


def test_the_backends_queue_decides_when_no_worker_holds_the_folder() -> None:
    def status(queued_elsewhere: bool | None, **changes: bytes | None) -> FolderStatus:
        return FolderStatus.from_files({**GONE, **changes}, False,
                                       queued_elsewhere=queued_elsewhere)

    assert status(True) == (ExecutionState.QUEUED, None, "waiting in the backend's queue")
    assert status(True, **{SUBMITTED: None}).state is ExecutionState.QUEUED
    assert status(False, **{SUBMITTED: None}).state is ExecutionState.FAILED  # not submitting
    # What the folder shows as final still wins over the queue's word.
    assert status(True, **{CANCEL: b""}).state is ExecutionState.CANCELLED
    assert status(True, **{RESULT: b'{"ok": true}'}).state is ExecutionState.SUCCEEDED
    assert status(False, **{RESPONSE: b'{"state": "succeeded"}'}).state is \
        ExecutionState.SUCCEEDED


def test_the_vanished_response_prefers_the_result_then_the_backends_account() -> None:
    ending = error_response("e1", "timed_out", "timeout", "SlurmTimeLimit", "time limit", None)
    assert ending["log_tail"] == ""
    with_result = {RESULT: json.dumps({"ok": True, "output": 5}).encode(), CANCEL: b""}
    response = vanished_response("e1", with_result, "the tail", "/io/e1", ending)
    assert (response["state"], response["output"], response["log_tail"]) == (
        "succeeded", 5, "the tail")
    assert vanished_response("e1", {CANCEL: b""}, "t", "/io/e1", ending) == {**ending,
                                                                             "log_tail": "t"}
    cancelled = vanished_response("e1", {CANCEL: b""}, "t", "/io/e1 on cluster")
    assert cancelled["state"] == "cancelled" and cancelled["error"]["kind"] == "cancelled"
    assert "/io/e1 on cluster" in cancelled["error"]["message"]
    lost = vanished_response("e1", {}, "t", "/io/e1")
    assert (lost["state"], lost["error"]["kind"], lost["log_tail"]) == ("failed", "worker_lost",
                                                                        "t")


def test_a_folder_reads_its_files_through_the_same_rules(tmp_path: Path) -> None:
    folder = ControlFolder(tmp_path / "e2")
    folder.prepare({"execution_id": "e2"})
    folder.mark_submitted()
    write_atomically(folder.file(CANCEL), b"")  # bytes are written as they are
    assert folder.contents(CANCEL, RESULT) == {CANCEL: b"", RESULT: None}
    assert folder.status().state is ExecutionState.CANCELLED
    assert folder.vanished_response()["state"] == "cancelled"
    assert folder.fetch().state is ExecutionState.CANCELLED


def test_parse_json_is_none_for_no_file_and_for_a_partial_one() -> None:
    assert parse_json(None) is None and parse_json(b'{"a": ') is None
    assert parse_json(b"\xff") is None
    assert parse_json('{"a": 1}') == {"a": 1}
