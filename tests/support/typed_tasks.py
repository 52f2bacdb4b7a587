"""Tasks with rich parameter types; importable by workers when tests/ is on PYTHONPATH."""

from __future__ import annotations

import dataclasses
import enum
from datetime import datetime

import attrs

from hqs_sdk import FileRef, task


class Colour(enum.Enum):
    RED = "red"
    BLUE = "blue"


@attrs.frozen
class Point:
    x: float
    y: float


@dataclasses.dataclass(frozen=True)
class Shape:
    name: str
    corners: list[Point]
    colour: Colour
    made: datetime


@task(version="1.0")
def describe(shape: Shape, tags: dict[str, int], ref: FileRef | None = None) -> Shape:
    """Move every corner by one and return the shape (exercises structure/unstructure)."""
    moved = [Point(p.x + 1, p.y + 1) for p in shape.corners]
    return Shape(shape.name.upper(), moved, Colour.BLUE, shape.made)


@task(version="2.5", vcpu=2, memory_mb=300, timeout_minutes=3)
def with_defaults(x: int) -> int:
    """A task with provisioning defaults."""
    return x
