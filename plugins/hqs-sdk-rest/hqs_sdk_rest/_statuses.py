"""A states reply read into what a polling round needs: one :class:`BackendStatus` per id.

A polling round reads up to 1,000 records at a time, and the generic cattrs structuring of a
:class:`hqs_sdk.wire.StatesReply` (timestamps parsed, every field checked) costs several times
the reply's JSON decoding. :func:`direct` builds the statuses straight from the JSON in exactly
the shape the service writes, checking the exact JSON type of each value it uses; anything else
(a missing field, an unknown state, a fraction that is not a number, a newer format) makes it
give up, and :func:`statuses` lets the converter read the reply instead, with its checks and
its error messages. Both give equal results (pinned by the plugin's tests/test_statuses.py),
as the core's cache does for its entries (``hqs_sdk.cache._entry_from_json``).
"""

from __future__ import annotations

from typing import Any

from hqs_sdk import wire
from hqs_sdk.backend import BackendStatus
from hqs_sdk.models import ExecutionState, Progress
from hqs_sdk.serialization import converter

__all__ = ["direct", "statuses"]

_STATES = {state.value: state for state in ExecutionState}
#: What most records of a round are (no progress, no message): frozen, so shared.
_PLAIN = {state.value: BackendStatus(state) for state in ExecutionState}


def statuses(reply: Any) -> dict[str, BackendStatus]:
    """Each execution of a states reply (decoded JSON) by id; raises what the converter
    raises when the reply is not a states reply."""
    found = direct(reply)
    if found is not None:
        return found
    structured = converter.structure(reply, wire.StatesReply)
    return {info.id: BackendStatus(info.state, info.progress, info.message)
            for info in structured.executions}


def direct(reply: Any) -> dict[str, BackendStatus] | None:
    """The statuses of ``reply`` if it has exactly the shape the service writes, else None.

    Only what a status holds is read (id, state, progress, message); the other fields of a
    record are left to the service, as their timestamps are not needed for polling.
    """
    try:
        executions = reply["executions"]
        missing = reply.get("missing")
        if type(executions) is not list or not (missing is None or type(missing) is list):
            return None
        found: dict[str, BackendStatus] = {}
        for record in executions:
            execution_id, progress, message = (record["id"], record["progress"],
                                               record["message"])
            if type(execution_id) is not str or type(message) is not str:
                return None
            if progress is None:
                found[execution_id] = (BackendStatus(_STATES[record["state"]], None, message)
                                       if message else _PLAIN[record["state"]])
                continue
            if type(progress) is not dict:
                return None
            fraction, said = progress["fraction"], progress["message"]
            if type(said) is not str:
                return None
            if type(fraction) is int:  # the converter reads a JSON integer as a float too
                fraction = float(fraction)
            elif not (fraction is None or type(fraction) is float):
                return None
            found[execution_id] = BackendStatus(_STATES[record["state"]],
                                                Progress(fraction, said), message)
        return found
    except (KeyError, TypeError, AttributeError):
        return None
