"""The dry-run record: exit codes, the report, the stop place, and that only a stop is quiet.

Whole scripts under ``hqs-sdk plan`` are in tests/integration/test_plan_dry_run.py.
"""

from __future__ import annotations

import json

import pytest

from hqs_sdk import dry_run
from hqs_sdk.dry_run import PendingExecution, Plan, PlannedCall, PlanStop, StopPlace, plan


def planned(name: str, **resources: object) -> PlannedCall:
    full = {"vcpu": None, "memory_mb": None, "gpu": None, "timeout_s": None, **resources}
    return PlannedCall(task="hello", version="1.0", cache_key=f"hello@1.0:{name}",
                       input=json.dumps({"name": name}), backend="local", resources=full)


def test_exit_codes() -> None:
    assert Plan(completed=True).exit_code == 0
    assert Plan(completed=False).exit_code == 3, "stopped early: what follows is unknown"
    assert Plan(completed=True, would_submit=[planned("a")]).exit_code == 3
    pending = PendingExecution("hello", "1.0", "k", "local", {"pid": 1}, "running")
    assert Plan(completed=False, pending=[pending]).exit_code == 3
    assert Plan(completed=False, error="RuntimeError: x").exit_code == 1


def test_the_report_lists_what_a_real_run_would_do() -> None:
    result = Plan(from_cache=5, from_cache_failed=1, script="s.py",
                  would_submit=[planned("a", vcpu=2.5, memory_mb=512, timeout_s=60.0),
                                planned("b")],
                  pending=[PendingExecution("countdown", "0.1", "countdown@0.1:x", "local",
                                            {"pid": 1}, "running", "40% 3 s to go")],
                  stopped_at=StopPlace("s.py", 7, "run_many(calls)"))
    text = result.report()
    assert text.splitlines() == [
        "dry run of s.py",
        "  from the cache: 5 call(s) (1 of them failed)",
        "  pending: 1 execution(s), a real run waits for them",
        "    countdown 0.1  running on 'local'  key countdown@0.1:x; 40% 3 s to go",
        "  would submit: 2 call(s)",
        '    hello 1.0  {"name": "a"}  [vcpu 2.5, memory MiB 512, timeout s 60] on \'local\'',
        '    hello 1.0  {"name": "b"}  [backend defaults] on \'local\'',
        "  stopped at s.py:7: run_many(calls)",
        "    (its result is needed to go on; what the script does after it is not known)",
        "  a real run would submit 2 call(s) (and perhaps more after the stop)",
    ]
    data = result.to_json()
    assert data["exit_code"] == 3 and data["stopped_at"] == {"file": "s.py", "line": 7,
                                                             "code": "run_many(calls)"}
    assert json.loads(dry_run.report_json(result))["would_submit"][0]["resources"]["vcpu"] == 2.5


def test_a_batch_is_reported_in_its_own_order() -> None:
    result = Plan(would_submit=[planned("z"), planned("c"), planned("a"), planned("b")])
    result.in_order(["hello@1.0:a", "hello@1.0:b", "hello@1.0:c"])
    assert [c.cache_key[-1] for c in result.would_submit] == ["z", "a", "b", "c"]


def test_a_long_input_is_shortened() -> None:
    assert dry_run._shorten("x" * 500) == "x" * 119 + "…"
    assert dry_run._shorten("short") == "short"


def test_plan_ends_the_block_only_on_a_stop_and_keeps_where() -> None:
    with plan() as p:
        assert dry_run.current() is p
        raise PlanStop("needs a result")
    assert dry_run.current() is None
    assert p.stopped_at is not None and p.stopped_at.file == __file__
    assert p.stopped_at.code == 'raise PlanStop("needs a result")'
    assert not p.completed

    with pytest.raises(ValueError, match="the block's own error"), plan() as q:
        raise ValueError("the block's own error")
    assert dry_run.current() is None and not q.completed and q.stopped_at is None

    with plan() as r:
        pass
    assert r.completed and r.exit_code == 0


def test_plans_nest_and_the_inner_one_is_in_force() -> None:
    with plan() as outer:
        with plan() as inner:
            assert dry_run.current() is inner
        assert dry_run.current() is outer
    assert dry_run.current() is None


def test_the_stop_is_not_an_exception_a_script_would_catch() -> None:
    assert not issubclass(PlanStop, Exception)
