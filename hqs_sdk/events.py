"""Lifecycle events: one frozen record per point, delivered to callbacks and to plugins.

Each event goes to the ``on_<name>`` callbacks of the configuration and to every plugin's
``hqs_sdk_on_event`` hook. A callback receives the event's ``args`` (for most events the
request, then the extra: response, progress, entry); one that accepts fewer positional
parameters gets only as many, so ``def f(request): ...`` works for every request event.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, ClassVar

import attrs

from hqs_sdk.models import CacheEntry, Progress, TaskExecutionRequest, TaskExecutionResponse

__all__ = [
    "EVENT_NAMES",
    "BackendInitializedEvent",
    "CacheHitEvent",
    "CacheIgnoredEvent",
    "CacheMissEvent",
    "CacheWriteEvent",
    "CreatingEvent",
    "Event",
    "FinishedEvent",
    "InterruptWaitingEvent",
    "ProgressEvent",
    "ReattachedEvent",
    "SubmittedEvent",
]

log = logging.getLogger("hqs_sdk")


@attrs.frozen
class Event:
    """Base of all events; ``name`` is the lifecycle point (``"finished"``)."""

    name: ClassVar[str] = ""

    @property
    def args(self) -> tuple[Any, ...]:
        """The positional arguments a callback receives."""
        return ()


@attrs.frozen
class _RequestEvent(Event):
    request: TaskExecutionRequest
    backend: str = ""

    @property
    def args(self) -> tuple[Any, ...]:
        return (self.request,)


@attrs.frozen
class CreatingEvent(_RequestEvent):
    """A new execution is about to be submitted."""

    name: ClassVar[str] = "creating"


@attrs.frozen
class SubmittedEvent(_RequestEvent):
    """The backend accepted the execution; ``handle`` is its reference."""

    name: ClassVar[str] = "submitted"
    handle: Any = None

    @property
    def args(self) -> tuple[Any, ...]:
        return (self.request, self.handle)


@attrs.frozen
class ReattachedEvent(_RequestEvent):
    """A pending execution found in the cache is being waited for again."""

    name: ClassVar[str] = "reattached"
    handle: Any = None

    @property
    def args(self) -> tuple[Any, ...]:
        return (self.request, self.handle)


@attrs.frozen
class ProgressEvent(_RequestEvent):
    """The task reported progress."""

    name: ClassVar[str] = "progress"
    progress: Progress = attrs.field(factory=Progress)

    @property
    def args(self) -> tuple[Any, ...]:
        return (self.request, self.progress)


@attrs.frozen
class FinishedEvent(_RequestEvent):
    """The execution finished (successfully or not); ``response`` says how."""

    name: ClassVar[str] = "finished"
    response: TaskExecutionResponse | None = None

    @property
    def args(self) -> tuple[Any, ...]:
        return (self.request, self.response)


@attrs.frozen
class CacheWriteEvent(_RequestEvent):
    """An entry was written to the cache."""

    name: ClassVar[str] = "cache_write"
    entry: CacheEntry | None = None

    @property
    def args(self) -> tuple[Any, ...]:
        return (self.request, self.entry)


@attrs.frozen
class CacheHitEvent(_RequestEvent):
    """A finished execution was taken from the cache."""

    name: ClassVar[str] = "cache_hit"
    entry: CacheEntry | None = None

    @property
    def args(self) -> tuple[Any, ...]:
        return (self.request, self.entry)


@attrs.frozen
class CacheMissEvent(Event):
    """The cache had no entry for the key."""

    name: ClassVar[str] = "cache_miss"
    cache_key: str = ""
    task_name: str = ""

    @property
    def args(self) -> tuple[Any, ...]:
        return (self.cache_key,)


@attrs.frozen
class CacheIgnoredEvent(_RequestEvent):
    """An entry existed but the cache mode said not to use it; ``reason`` says why."""

    name: ClassVar[str] = "cache_ignored"
    entry: CacheEntry | None = None
    reason: str = ""

    @property
    def args(self) -> tuple[Any, ...]:
        return (self.request, self.entry)


@attrs.frozen
class BackendInitializedEvent(Event):
    """A backend instance was created for a configuration."""

    name: ClassVar[str] = "backend_initialized"
    backend: str = ""
    config: Any = None

    @property
    def args(self) -> tuple[Any, ...]:
        return (self.config,)


@attrs.frozen
class InterruptWaitingEvent(Event):
    """The user interrupted waiting (Ctrl+C); ``requests`` are the executions still pending."""

    name: ClassVar[str] = "interrupt_waiting"
    requests: tuple[TaskExecutionRequest, ...] = ()

    @property
    def args(self) -> tuple[Any, ...]:
        return (list(self.requests),)


EVENT_CLASSES: dict[str, type[Event]] = {
    cls.name: cls
    for cls in (CreatingEvent, SubmittedEvent, ReattachedEvent, ProgressEvent, FinishedEvent,
                CacheWriteEvent, CacheHitEvent, CacheMissEvent, CacheIgnoredEvent,
                BackendInitializedEvent, InterruptWaitingEvent)
}
EVENT_NAMES: tuple[str, ...] = tuple(EVENT_CLASSES)


def _arity(fn: Callable[..., Any]) -> int | None:
    """How many positional arguments ``fn`` takes; ``None`` for *args."""
    import inspect

    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):
        return None
    count = 0
    for p in params:
        if p.kind is p.VAR_POSITIONAL:
            return None
        if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD):
            count += 1
    return count


class CallbackList:
    """The functions registered for one event; use it as a decorator.

    Example::

        @global_config.on_finished
        def report(request, response):
            print(request.task_name, response.state)
    """

    def __init__(self, name: str) -> None:
        self.name = name
        self._callbacks: list[tuple[Callable[..., Any], int | None]] = []

    def __call__(self, fn: Callable[..., Any]) -> Callable[..., Any]:
        if not callable(fn):
            raise TypeError(f"on_{self.name} registers a function, got {fn!r}")
        self._callbacks.append((fn, _arity(fn)))
        return fn

    def remove(self, fn: Callable[..., Any]) -> None:
        """Unregister ``fn``."""
        self._callbacks = [(f, n) for f, n in self._callbacks if f is not fn]

    def __len__(self) -> int:
        return len(self._callbacks)

    def fire(self, args: tuple[Any, ...]) -> None:
        """Call every callback; one that raises is logged and does not stop the others."""
        for fn, arity in list(self._callbacks):
            try:
                fn(*(args if arity is None else args[:arity]))
            except Exception:
                log.exception("callback %r for event %r raised", fn, self.name)


class Callbacks:
    """One :class:`CallbackList` per event name."""

    def __init__(self) -> None:
        self.lists = {name: CallbackList(name) for name in EVENT_NAMES}


def emit(event: Event, callbacks: Callbacks) -> None:
    """Deliver ``event`` to the callbacks and to the plugins' ``hqs_sdk_on_event`` hooks."""
    callbacks.lists[event.name].fire(event.args)
    from hqs_sdk.plugins import registry

    hook = registry().event_hook
    if hook is not None:
        try:
            hook(event=event)
        except Exception:
            log.exception("a plugin's hqs_sdk_on_event raised for %r", event.name)
