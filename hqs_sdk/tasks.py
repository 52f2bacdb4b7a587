"""The ``@task`` decorator, :class:`Task` and :class:`TaskCall`.

A decorated function is both the task's implementation (run by the worker) and its client
function (calling it runs the task on the configured backend and returns the output).

This module avoids importing attrs, cattrs and importlib.metadata at import time: the worker
imports task modules on its start-up path, where every millisecond counts.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from datetime import timedelta
from typing import TYPE_CHECKING, Any, Generic, TypeVar, overload

if TYPE_CHECKING:
    from hqs_sdk.models import Provisioning
    from hqs_sdk.runner import Execution

__all__ = ["Task", "TaskCall", "task"]

R = TypeVar("R")

#: Parameter types checked without cattrs: the JSON types a value must be an instance of.
#: A bool is no int (nor float) here, although Python makes it one; an int is fine for a float.
_PLAIN: dict[Any, tuple[type, ...]] = {
    str: (str,), int: (int,), float: (float, int), bool: (bool,), type(None): (type(None),),
    dict: (dict,), list: (list, tuple),
}


#: The types a value of each annotation may have to enter the input as it is, unchecked: JSON
#: carries them faithfully (a float may be NaN, so floats take the checked path).
_EXACT_JSON: dict[Any, frozenset[type]] = {
    str: frozenset({str}), int: frozenset({int}), bool: frozenset({bool}),
    type(None): frozenset({type(None)}), Any: frozenset({str, int, bool, type(None)}),
}


@functools.cache
def _serialization() -> Any:
    """``hqs_sdk.serialization``, imported on first use (it imports cattrs)."""
    import hqs_sdk.serialization

    return hqs_sdk.serialization


@functools.cache
def _runner() -> Any:
    """``hqs_sdk.runner``, imported on first use (this module is imported by it)."""
    import hqs_sdk.runner

    return hqs_sdk.runner


@functools.cache
def _cache_key_from_canonical() -> Callable[[str, str, bytes], str]:
    from hqs_sdk.cache_key import cache_key_from_canonical

    return cache_key_from_canonical


def _checked_plain(value: Any, annotation: Any, where: str) -> Any:
    """Return ``value`` if it is of the plain type ``annotation``; else raise a
    :class:`~hqs_sdk.errors.SerializationError` naming the argument and both types.

    Nothing is coerced: ``"false"`` is no bool and ``"3"`` no int, so a task never gets a value
    its signature did not ask for, and two values the task tells apart never share a key.
    """
    if annotation is Any:
        return value
    accepted = _PLAIN[annotation]
    if isinstance(value, accepted) and (annotation is bool or not isinstance(value, bool)):
        return value
    from hqs_sdk.errors import SerializationError

    expected = "None" if annotation is type(None) else annotation.__name__
    hint = ("pass True or False (a text such as 'false' is not turned into a bool)"
            if annotation is bool
            else f"convert it before the call if {_article(expected)} is meant")
    raise SerializationError(
        f"{where} must be {_article(expected)}, got {type(value).__name__} {value!r:.60}; "
        f"values are not converted silently: {hint}"
    )


#: Item types of ``list[...]`` and ``dict[str, ...]`` parameters checked without cattrs.
_ITEMS: dict[Any, tuple[type, ...]] = {str: (str,), int: (int,), float: (float, int),
                                       bool: (bool,)}


def _plain_item(annotation: Any) -> Any:
    """``P`` for ``list[P]`` or ``dict[str, P]`` with ``P`` a str, int, float or bool; else
    None (those go through the converter)."""
    from typing import get_args, get_origin

    origin, args = get_origin(annotation), get_args(annotation)
    if origin is list and len(args) == 1 and args[0] in _ITEMS:
        return args[0]
    if origin is dict and len(args) == 2 and args[0] is str and args[1] in _ITEMS:
        return args[1]
    return None


def _checked_items(value: Any, annotation: Any, item: Any, where: str) -> Any:
    """``value`` if it is the list or dict of ``item`` that ``annotation`` asks for; else a
    :class:`~hqs_sdk.errors.SerializationError` naming the position (a long list of numbers is
    checked in one pass, without the converter)."""
    from typing import get_origin

    container = list if get_origin(annotation) is list else dict
    _checked_plain(value, container, where)
    exact = _ITEMS[item]
    if not all(type(v) in exact for v in (value.values() if container is dict else value)):
        positions = value.items() if container is dict else enumerate(value)
        for position, v in positions:  # subclasses (a str enum) pass; the first wrong one raises
            _checked_plain(v, item, f"{where}[{position!r}]")
    return value


def _article(name: str) -> str:
    return name if name == "None" else f"{'an' if name[0] in 'aeiou' else 'a'} {name}"


class Task(Generic[R]):
    """A named, versioned computation; call it like the function it wraps.

    ``hello("world")`` blocks and returns the output; ``hello.bind("world")`` makes a
    :class:`TaskCall` for :func:`hqs_sdk.run_many`; ``hello.submit("world")`` returns an
    :class:`~hqs_sdk.runner.Execution` without waiting; ``await hello.aio("world")`` is the
    asyncio form.
    """

    def __init__(
        self,
        fn: Callable[..., R],
        *,
        name: str | None = None,
        version: str | None = None,
        vcpu: float | None = None,
        memory_mb: int | None = None,
        gpu: int | None = None,
        timeout: timedelta | None = None,
    ) -> None:
        if not callable(fn):
            raise TypeError(f"@task needs a function, got {fn!r}")
        self.fn = fn
        self.name = name or fn.__name__
        self._version = version
        self.default_vcpu = vcpu
        self.default_memory_mb = memory_mb
        self.default_gpu = gpu
        self.default_timeout = timeout
        self.ref = f"{fn.__module__}:{fn.__qualname__}"
        self._signature: Any = None
        self._hints: dict[str, Any] | None = None
        self._plan: tuple[tuple[str, ...] | None, dict[str, Any]] | None = None
        self._checks: dict[str, tuple[Any, str, bool, Any]] | None = None
        functools.update_wrapper(self, fn)

    # -- identity ---------------------------------------------------------------------------

    @property
    def version(self) -> str:
        """The task's version: explicit, else its distribution's version."""
        if self._version is None:
            from hqs_sdk._distribution import version_of_module

            found = version_of_module(self.fn.__module__)
            if found is None:
                from hqs_sdk.errors import ConfigurationError

                raise ConfigurationError(
                    f"task {self.name!r} (in module {self.fn.__module__}) belongs to no installed "
                    "distribution, so it has no version; install its package, or pass "
                    "version='...' to @task"
                )
            self._version = found
        return self._version

    def __repr__(self) -> str:
        return f"<Task {self.name} ({self.ref})>"

    def __get__(self, obj: Any, objtype: Any = None) -> Task[R]:
        return self

    # -- type information (client and worker) -----------------------------------------------

    def _type_hints(self) -> dict[str, Any]:
        if self._hints is None:
            annotations = getattr(self.fn, "__annotations__", {})
            if all(not isinstance(a, str) for a in annotations.values()):
                self._hints = dict(annotations)
            else:
                import typing

                self._hints = typing.get_type_hints(self.fn)
        return self._hints

    @property
    def output_type(self) -> Any:
        """The return annotation (``Any`` when there is none)."""
        return self._type_hints().get("return", Any)

    # -- client side ------------------------------------------------------------------------

    def _signature_of(self) -> Any:
        if self._signature is None:
            import inspect

            try:  # evaluated annotations make error messages read like the source
                self._signature = inspect.signature(self.fn, eval_str=True)
            except Exception:
                self._signature = inspect.signature(self.fn)
        return self._signature

    def _bind_arguments(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> dict[str, Any]:
        try:
            bound = self._signature_of().bind(*args, **kwargs)
        except TypeError as exc:
            from hqs_sdk.errors import SerializationError

            raise SerializationError(
                f"task {self.name!r} cannot take these arguments: {exc}; its signature is "
                f"{self.name}{self._signature}"
            ) from exc
        bound.apply_defaults()
        return dict(bound.arguments)

    def _fast_arguments(self, args: tuple[Any, ...], kwargs: dict[str, Any]
                        ) -> dict[str, Any] | None:
        """The arguments by name, as ``inspect.Signature.bind`` plus ``apply_defaults`` makes
        them, for a signature of plain parameters; ``None`` when the slow path must decide
        (another kind of parameter, or arguments it refuses with an error message)."""
        plan = self._plan
        if plan is None:
            plan = self._plan = self._make_plan()
        names, defaults = plan
        if names is None:
            return None
        given = len(args)
        if not kwargs:
            if given == len(names):
                return dict(zip(names, args, strict=True))
            if given > len(names):
                return None
        arguments = dict(zip(names, args, strict=False))
        taken = 0
        for name in names[given:]:
            if name in kwargs:
                arguments[name] = kwargs[name]
                taken += 1
            elif name in defaults:
                arguments[name] = defaults[name]
            else:
                return None
        return arguments if taken == len(kwargs) else None

    def _make_plan(self) -> tuple[tuple[str, ...] | None, dict[str, Any]]:
        import inspect

        parameters = self._signature_of().parameters.values()
        if any(p.kind is not inspect.Parameter.POSITIONAL_OR_KEYWORD for p in parameters):
            return None, {}
        return (tuple(p.name for p in parameters),
                {p.name: p.default for p in parameters if p.default is not p.empty})

    def _argument_checks(self) -> dict[str, tuple[Any, str, bool, Any]]:
        """Per parameter (``*args`` and ``**kwargs`` too), computed once: annotation, where (for
        messages), plain, list item."""
        checks = self._checks
        if checks is None:
            hints = self._type_hints()
            checks = {}
            for arg_name in self._signature_of().parameters:
                annotation = hints.get(arg_name, Any)
                plain = annotation is Any or annotation in _PLAIN
                checks[arg_name] = (annotation, f"argument {arg_name!r} of task {self.name!r}",
                                    plain, None if plain else _plain_item(annotation))
            self._checks = checks
        return checks

    def bind(self, *args: Any, **kwargs: Any) -> TaskCall[R]:
        """Fix the arguments of one call without running it; see :func:`hqs_sdk.run_many`."""
        if self.fn.__module__ == "__main__":
            from hqs_sdk.errors import ConfigurationError

            raise ConfigurationError(
                f"task {self.name!r} is defined in the script being run; a worker cannot import "
                "it from there. Move it into an importable module of an installed package."
            )
        arguments = self._fast_arguments(args, kwargs)
        if arguments is None:
            arguments = self._bind_arguments(args, kwargs)
        checks = self._argument_checks()
        data: dict[str, Any] = {}
        for arg_name, value in arguments.items():
            annotation, where, plain, item = checks[arg_name]
            if type(value) in _EXACT_JSON.get(annotation, ()):
                data[arg_name] = value  # the type asked for, and JSON carries it as it is
            elif plain or item is not None:
                value = (_checked_plain(value, annotation, where) if plain
                         else _checked_items(value, annotation, item, where))
                problem = _serialization().find_json_problem(value, where)
                if problem is not None:
                    from hqs_sdk.errors import SerializationError

                    raise SerializationError(problem)
                data[arg_name] = value
            else:
                data[arg_name] = _serialization().to_checked_json_value(value, annotation, where)
        try:
            canonical = _serialization().canonical_json(data)
        except (TypeError, ValueError) as exc:
            from hqs_sdk.errors import SerializationError

            raise SerializationError(f"the input of task {self.name!r}: {exc}") from exc
        key = _cache_key_from_canonical()(self.name, self.version, canonical)
        return TaskCall(self, canonical, key)

    def provisioning_defaults(self) -> Provisioning:
        """The task's own provisioning defaults (lowest precedence)."""
        from hqs_sdk.models import Provisioning

        timeout = self.default_timeout.total_seconds() if self.default_timeout else None
        return Provisioning(vcpu=self.default_vcpu, memory_mb=self.default_memory_mb,
                            gpu=self.default_gpu, timeout_s=timeout)

    def __call__(self, *args: Any, **kwargs: Any) -> R:
        return _runner().run(self.bind(*args, **kwargs))

    def submit(self, *args: Any, **kwargs: Any) -> Execution[R]:
        """Start (or re-attach to, or take from the cache) one execution; do not wait."""
        from hqs_sdk.runner import submit

        return submit(self.bind(*args, **kwargs))

    async def aio(self, *args: Any, **kwargs: Any) -> R:
        """Run the task from asyncio code; works under ``asyncio.gather`` and in Jupyter."""
        from hqs_sdk.runner import run_async

        return await run_async(self.bind(*args, **kwargs))

    # -- worker side ------------------------------------------------------------------------

    def execute(self, task_input: dict[str, Any]) -> Any:
        """Run the implementation on a JSON input and return the JSON output (worker side)."""
        hints = self._type_hints()
        kwargs: dict[str, Any] = {}
        for arg_name, value in task_input.items():
            annotation = hints.get(arg_name, Any)
            where = f"argument {arg_name!r} of task {self.name!r}"
            if annotation is Any or annotation in _PLAIN:
                value = _checked_plain(value, annotation, where)
                kwargs[arg_name] = float(value) if annotation is float else value
            else:
                kwargs[arg_name] = _structure(value, annotation, where)
        result = self.fn(**kwargs)
        return _unstructure(result, hints.get("return", Any), f"the output of task {self.name!r}")


def _structure(value: Any, annotation: Any, where: str) -> Any:
    from hqs_sdk.fileref import FileRef

    if annotation is FileRef:
        return FileRef.from_json(value)
    from hqs_sdk.serialization import from_json_value

    return from_json_value(value, annotation, where)


def _unstructure(value: Any, annotation: Any, where: str) -> Any:
    from hqs_sdk.fileref import FileRef

    if isinstance(value, FileRef):
        return value.to_json()
    if type(value) in (str, int, bool, type(None)):
        return value
    from hqs_sdk.serialization import to_json_value

    return to_json_value(value, annotation, where)


class TaskCall(Generic[R]):
    """An immutable task call: the task, its canonical JSON input and its cache key."""

    __slots__ = ("cache_key", "canonical_input", "task")

    def __init__(self, task: Task[R], canonical_input: bytes, cache_key: str) -> None:
        object.__setattr__(self, "task", task)
        object.__setattr__(self, "canonical_input", canonical_input)
        object.__setattr__(self, "cache_key", cache_key)

    task: Task[R]
    canonical_input: bytes
    cache_key: str

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError("TaskCall is immutable")

    @property
    def input(self) -> dict[str, Any]:
        """A fresh copy of the JSON input."""
        import json

        result: dict[str, Any] = json.loads(self.canonical_input)
        return result

    def __eq__(self, other: object) -> bool:
        return isinstance(other, TaskCall) and other.cache_key == self.cache_key

    def __hash__(self) -> int:
        return hash(self.cache_key)

    def __repr__(self) -> str:
        return f"TaskCall({self.task.name}, {self.canonical_input.decode()[:80]})"


@overload
def task(fn: Callable[..., R], /) -> Task[R]: ...


@overload
def task(
    *,
    name: str | None = ...,
    version: str | None = ...,
    vcpu: float | None = ...,
    memory_mb: int | None = ...,
    memory_gb: float | None = ...,
    gpu: int | None = ...,
    timeout: timedelta | None = ...,
    timeout_minutes: float | None = ...,
    timeout_hours: float | None = ...,
) -> Callable[[Callable[..., R]], Task[R]]: ...


def task(
    fn: Callable[..., R] | None = None,
    /,
    *,
    name: str | None = None,
    version: str | None = None,
    vcpu: float | None = None,
    memory_mb: int | None = None,
    memory_gb: float | None = None,
    gpu: int | None = None,
    timeout: timedelta | None = None,
    timeout_minutes: float | None = None,
    timeout_hours: float | None = None,
) -> Task[R] | Callable[[Callable[..., R]], Task[R]]:
    """Declare a task; its name defaults to the function's, its version to its distribution's.

    Example::

        from hqs_sdk import task

        @task(vcpu=1, memory_mb=256, timeout_minutes=5)
        def hello(name: str) -> str:
            return f"Hello, {name}!"

    The provisioning keywords are the task's defaults; global and scoped configuration
    override them.
    """
    if memory_gb is not None:
        if memory_mb is not None:
            raise TypeError("@task takes memory_mb or memory_gb, not both")
        memory_mb = int(memory_gb * 1024)
    given = [t for t in (timeout, timeout_minutes, timeout_hours) if t is not None]
    if len(given) > 1:
        raise TypeError("@task takes one of timeout, timeout_minutes, timeout_hours")
    if timeout_minutes is not None:
        timeout = timedelta(minutes=timeout_minutes)
    elif timeout_hours is not None:
        timeout = timedelta(hours=timeout_hours)

    def decorate(f: Callable[..., R]) -> Task[R]:
        return Task(f, name=name, version=version, vcpu=vcpu, memory_mb=memory_mb, gpu=gpu,
                    timeout=timeout)

    return decorate(fn) if fn is not None else decorate
