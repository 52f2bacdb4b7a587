"""Lifecycle events: one frozen record per point, delivered to callbacks and to plugins.

Each event goes to the ``on_<name>`` callbacks of the configuration and to every plugin's
``hqs_sdk_on_event`` hook. A callback receives the event's ``args``, named by the event class's
``arguments`` (for most events the request, then the extra: handle, progress, response or
entry); one that accepts fewer positional parameters gets only as many, so
``def f(request): ...`` works for every request event. What each event passes is documented on
its attribute of :class:`hqs_sdk.config.Configuration` (``help(global_config.on_finished)``),
and typed by the ``*Callback`` aliases here, which a type checker applies to a decorated
function.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Mapping
from typing import TYPE_CHECKING, Any, ClassVar, Generic, TypeAlias, TypeVar

import attrs

from hqs_sdk import instances
from hqs_sdk.models import CacheEntry, Progress, TaskExecutionRequest, TaskExecutionResponse

if TYPE_CHECKING:
    from hqs_sdk.backend import BackendConfiguration

__all__ = [
    "EVENT_NAMES",
    "BackendInitializedCallback",
    "BackendInitializedEvent",
    "CacheHitCallback",
    "CacheHitEvent",
    "CacheIgnoredCallback",
    "CacheIgnoredEvent",
    "CacheMissCallback",
    "CacheMissEvent",
    "CacheWriteCallback",
    "CacheWriteEvent",
    "CallbackList",
    "CreatingCallback",
    "CreatingEvent",
    "Event",
    "FinishedCallback",
    "FinishedEvent",
    "InterruptWaitingCallback",
    "InterruptWaitingEvent",
    "ProgressCallback",
    "ProgressEvent",
    "ReattachedCallback",
    "ReattachedEvent",
    "SubmittedCallback",
    "SubmittedEvent",
    "WaitingEndedCallback",
    "WaitingEndedEvent",
    "WaitingStartedCallback",
    "WaitingStartedEvent",
]

log = logging.getLogger("hqs_sdk")


@attrs.frozen
class Event:
    """Base of all events; ``name`` is the lifecycle point (``"finished"``).

    ``arguments`` names the fields a callback receives, in order, as ``args``.
    """

    name: ClassVar[str] = ""
    arguments: ClassVar[tuple[str, ...]] = ()

    @property
    def args(self) -> tuple[Any, ...]:
        """The positional arguments a callback receives (the fields named by ``arguments``)."""
        return tuple(getattr(self, field) for field in self.arguments)


@attrs.frozen
class _RequestEvent(Event):
    request: TaskExecutionRequest
    backend: str = ""

    arguments: ClassVar[tuple[str, ...]] = ("request",)


@attrs.frozen
class CreatingEvent(_RequestEvent):
    """A new execution is about to be submitted."""

    name: ClassVar[str] = "creating"


@attrs.frozen
class SubmittedEvent(_RequestEvent):
    """The backend accepted the execution; ``handle`` is its reference."""

    name: ClassVar[str] = "submitted"
    arguments: ClassVar[tuple[str, ...]] = ("request", "handle")
    handle: Any = None


@attrs.frozen
class ReattachedEvent(_RequestEvent):
    """A pending execution found in the cache is being waited for again."""

    name: ClassVar[str] = "reattached"
    arguments: ClassVar[tuple[str, ...]] = ("request", "handle")
    handle: Any = None


@attrs.frozen
class ProgressEvent(_RequestEvent):
    """The task reported progress."""

    name: ClassVar[str] = "progress"
    arguments: ClassVar[tuple[str, ...]] = ("request", "progress")
    progress: Progress = attrs.field(factory=Progress)


@attrs.frozen
class FinishedEvent(_RequestEvent):
    """The execution finished (successfully or not); ``response`` says how."""

    name: ClassVar[str] = "finished"
    arguments: ClassVar[tuple[str, ...]] = ("request", "response")
    response: TaskExecutionResponse | None = None


@attrs.frozen
class CacheWriteEvent(_RequestEvent):
    """An entry was written to the cache."""

    name: ClassVar[str] = "cache_write"
    arguments: ClassVar[tuple[str, ...]] = ("request", "entry")
    entry: CacheEntry | None = None


@attrs.frozen
class CacheHitEvent(_RequestEvent):
    """A finished execution was taken from the cache."""

    name: ClassVar[str] = "cache_hit"
    arguments: ClassVar[tuple[str, ...]] = ("request", "entry")
    entry: CacheEntry | None = None


@attrs.frozen
class CacheMissEvent(Event):
    """The cache had no entry for the key; ``request`` is the one the call will submit.

    The cache key comes first for callbacks (as in 0.1, so ``def f(cache_key)`` keeps working),
    the request second.
    """

    name: ClassVar[str] = "cache_miss"
    arguments: ClassVar[tuple[str, ...]] = ("cache_key", "request")
    cache_key: str = ""
    task_name: str = ""
    request: TaskExecutionRequest | None = None


@attrs.frozen
class CacheIgnoredEvent(_RequestEvent):
    """An entry existed but the cache mode said not to use it; ``reason`` says why."""

    name: ClassVar[str] = "cache_ignored"
    arguments: ClassVar[tuple[str, ...]] = ("request", "entry", "reason")
    entry: CacheEntry | None = None
    reason: str = ""


@attrs.frozen
class BackendInitializedEvent(Event):
    """A backend instance was created for a configuration."""

    name: ClassVar[str] = "backend_initialized"
    arguments: ClassVar[tuple[str, ...]] = ("config",)
    backend: str = ""
    config: Any = None


@attrs.frozen
class InterruptWaitingEvent(Event):
    """The user interrupted waiting (Ctrl+C); ``requests`` are the executions still pending."""

    name: ClassVar[str] = "interrupt_waiting"
    arguments: ClassVar[tuple[str, ...]] = ("requests",)
    requests: tuple[TaskExecutionRequest, ...] = ()

    @property
    def args(self) -> tuple[Any, ...]:
        """The pending requests, as a list."""
        return (list(self.requests),)


@attrs.frozen
class WaitingStartedEvent(Event):
    """The caller started waiting for a batch of executions (a ``run_many``, or one call).

    ``executions`` are the :class:`hqs_sdk.Execution` handles of the whole batch, finished ones
    (e.g. from the cache) included; their ``status()``, ``done()`` and ``from_cache`` are live,
    which is what a progress display reads. ``batch`` pairs it with its
    :class:`WaitingEndedEvent`. Only sent when at least one execution is still pending.
    """

    name: ClassVar[str] = "waiting_started"
    arguments: ClassVar[tuple[str, ...]] = ("requests",)
    batch: int = 0
    requests: tuple[TaskExecutionRequest, ...] = ()
    executions: tuple[Any, ...] = ()

    @property
    def args(self) -> tuple[Any, ...]:
        """The requests of the batch, as a list."""
        return (list(self.requests),)


@attrs.frozen
class WaitingEndedEvent(Event):
    """Waiting for the batch ``batch`` ended: all finished, one failed, or the user interrupted.

    ``elapsed`` is the time waited in seconds; ``interrupted`` is true after Ctrl+C (the
    executions still pending keep running).
    """

    name: ClassVar[str] = "waiting_ended"
    arguments: ClassVar[tuple[str, ...]] = ("requests",)
    batch: int = 0
    requests: tuple[TaskExecutionRequest, ...] = ()
    executions: tuple[Any, ...] = ()
    elapsed: float = 0.0
    interrupted: bool = False

    @property
    def args(self) -> tuple[Any, ...]:
        """The requests of the batch, as a list."""
        return (list(self.requests),)


EVENT_CLASSES: dict[str, type[Event]] = {
    cls.name: cls
    for cls in (CreatingEvent, SubmittedEvent, ReattachedEvent, ProgressEvent, FinishedEvent,
                CacheWriteEvent, CacheHitEvent, CacheMissEvent, CacheIgnoredEvent,
                BackendInitializedEvent, InterruptWaitingEvent, WaitingStartedEvent,
                WaitingEndedEvent)
}
EVENT_NAMES: tuple[str, ...] = tuple(EVENT_CLASSES)

# The callback types, one per event. A callback may take fewer leading arguments than the
# event passes, so each alias lists every accepted prefix, longest first.
_Request = TaskExecutionRequest
_Handle = Any  # the backend's JSON-able reference (hqs_sdk.backend.Handle)
_None = Callable[[], object]
CreatingCallback: TypeAlias = Callable[[_Request], object] | _None
"""``on_creating``: ``(request)``."""
SubmittedCallback: TypeAlias = Callable[[_Request, _Handle], object] | CreatingCallback
"""``on_submitted``: ``(request, handle)``."""
ReattachedCallback: TypeAlias = SubmittedCallback
"""``on_reattached``: ``(request, handle)``."""
ProgressCallback: TypeAlias = Callable[[_Request, Progress], object] | CreatingCallback
"""``on_progress``: ``(request, progress)``."""
FinishedCallback: TypeAlias = Callable[[_Request, TaskExecutionResponse], object] | CreatingCallback
"""``on_finished``: ``(request, response)``."""
CacheWriteCallback: TypeAlias = Callable[[_Request, CacheEntry], object] | CreatingCallback
"""``on_cache_write``: ``(request, entry)``."""
CacheHitCallback: TypeAlias = CacheWriteCallback
"""``on_cache_hit``: ``(request, entry)``."""
CacheMissCallback: TypeAlias = Callable[[str, _Request], object] | Callable[[str], object] | _None
"""``on_cache_miss``: ``(cache_key, request)``."""
CacheIgnoredCallback: TypeAlias = Callable[[_Request, CacheEntry, str], object] | CacheWriteCallback
"""``on_cache_ignored``: ``(request, entry, reason)``."""
BackendInitializedCallback: TypeAlias = Callable[["BackendConfiguration"], object] | _None
"""``on_backend_initialized``: ``(config)``."""
InterruptWaitingCallback: TypeAlias = Callable[[list[TaskExecutionRequest]], object] | _None
"""``on_interrupt_waiting``: ``(requests)``."""
WaitingStartedCallback: TypeAlias = InterruptWaitingCallback
"""``on_waiting_started``: ``(requests)``."""
WaitingEndedCallback: TypeAlias = InterruptWaitingCallback
"""``on_waiting_ended``: ``(requests)``."""


def _parameters(fn: Callable[..., Any]) -> tuple[int | None, int, list[str]]:
    """``fn``'s positional parameters (``None`` for ``*args``), required ones, required keywords."""
    import inspect

    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):
        return None, 0, []
    count: int | None = 0
    required = 0
    keywords = []
    for p in params:
        if p.kind is p.VAR_POSITIONAL:
            count = None
        elif p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD):
            if count is not None:
                count += 1
            if p.default is p.empty:
                required += 1
        elif p.kind is p.KEYWORD_ONLY and p.default is p.empty:
            keywords.append(p.name)
    return count, required, keywords


F = TypeVar("F", bound=Callable[..., object])


class CallbackList(Generic[F]):
    """The functions registered for one event; use it as a decorator.

    ``F`` is the type of callback the event accepts (see the ``on_*`` attributes of
    :class:`hqs_sdk.config.Configuration`, which document what each event passes).

    Example::

        @global_config.on_finished
        def report(request, response):
            print(request.task_name, response.state.value)
    """

    def __init__(self, name: str, doc: str | None = None) -> None:
        if name not in EVENT_CLASSES:
            raise ValueError(f"no event {name!r}; events are {', '.join(EVENT_NAMES)}")
        self.name = name
        self.arguments = EVENT_CLASSES[name].arguments
        if doc:
            self.__doc__ = doc  # what help(global_config.on_<name>) shows
        self._callbacks: list[tuple[Callable[..., object], int | None]] = []

    def __call__(self, fn: F) -> F:
        """Register ``fn``; it is called with the event's arguments, or as many as it takes."""
        if not callable(fn):
            raise TypeError(f"on_{self.name} registers a function, got {fn!r}")
        count, required, keywords = _parameters(fn)
        offered = f"on_{self.name} callbacks receive ({', '.join(self.arguments)})"
        what = getattr(fn, "__qualname__", repr(fn))
        if required > len(self.arguments):
            raise TypeError(
                f"{what} requires {required} positional arguments, but {offered}. Take at most "
                f"the first {len(self.arguments)} (fewer are fine), or give the rest defaults."
            )
        if keywords:
            raise TypeError(
                f"{what} requires the keyword argument(s) {', '.join(keywords)}, but {offered} "
                "and nothing by keyword. Give them defaults."
            )
        self._callbacks.append((fn, count))
        return fn

    def remove(self, fn: Callable[..., object]) -> None:
        """Unregister ``fn`` (every registration of it; no error if it was not registered).

        Compares with ``==``, so ``remove(obj.method)`` finds ``obj.method`` registered earlier
        (each attribute access makes a new bound-method object).
        """
        self._callbacks = [(f, n) for f, n in self._callbacks if f != fn]

    def __len__(self) -> int:
        return len(self._callbacks)

    def __iter__(self) -> Iterator[Callable[..., object]]:
        return iter([fn for fn, _ in self._callbacks])

    def __repr__(self) -> str:
        return f"<on_{self.name} callbacks ({', '.join(self.arguments)}): {len(self)} registered>"

    def fire(self, args: tuple[Any, ...]) -> None:
        """Call every callback; one that raises is logged and does not stop the others."""
        for fn, count in list(self._callbacks):
            try:
                fn(*(args if count is None else args[:count]))
            except Exception:
                log.exception("callback %r for event %r raised", fn, self.name)


class Callbacks:
    """One :class:`CallbackList` per event name; ``docs`` gives each its docstring."""

    def __init__(self, docs: Mapping[str, str | None] | None = None) -> None:
        docs = docs or {}
        self.lists: dict[str, CallbackList[Any]] = {
            name: CallbackList(name, docs.get(name)) for name in EVENT_NAMES
        }


_registry = instances.registry


def listened(name: str, callbacks: Callbacks) -> bool:
    """Whether a callback or a plugin receives the event ``name`` now.

    A caller on a hot path (a cache hit) may skip building an event nobody receives. Asked on
    every call, so a callback registered at any time gets the next event.
    """
    if callbacks.lists[name]._callbacks:
        return True
    return name in _registry().event_names


def emit(event: Event, callbacks: Callbacks) -> None:
    """Deliver ``event`` to the callbacks and to the plugins' ``hqs_sdk_on_event`` hooks."""
    callbacks.lists[event.name].fire(event.args)
    found = _registry()
    hook = found.event_hook
    if hook is not None and event.name in found.event_names:
        try:
            hook(event=event)
        except Exception:
            log.exception("a plugin's hqs_sdk_on_event raised for %r", event.name)
