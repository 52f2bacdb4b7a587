"""A griffe extension that turns the reStructuredText bits of hqs-sdk's docstrings into Markdown.

The docstrings are written for ``help()`` and IDEs: Sphinx roles (``:class:`~hqs_sdk.x.Y```)
for cross-references and ``Example::`` literal blocks for code. mkdocstrings renders Markdown,
so before it parses a docstring this extension rewrites

- a role whose target is an object of the ``hqs_sdk`` packages into a cross-reference that
  mkdocs-autorefs resolves (``[`Y`][hqs_sdk.x.Y]``): a target that names nothing makes the
  strict build fail, so a stale reference in a docstring is caught here;
- a role whose target is outside the project (``argparse.Namespace``) into inline code: the
  build fetches no inventory from another site;
- a ``::`` literal block into a fenced code block (Python when it parses as Python).

Relative targets (``:meth:`submit```, ``:class:`Backend.states```) are resolved in the scope of
the object whose docstring holds them, as Sphinx does. Names that the lazy packages
(``hqs_sdk``, ``hqs_sdk.testing``) export through ``_EXPORTS`` resolve to their defining module.
"""

from __future__ import annotations

import ast
import logging
import re
import textwrap
from typing import Any

import griffe

ROLE = re.compile(r":(?P<role>class|meth|func|data|attr|mod|exc|obj):`(?P<body>[^`]+)`")
EXPLICIT = re.compile(r"^(?P<title>.*?)\s*<(?P<target>[^>]+)>$")
PROJECT = ("hqs_sdk",)
log = logging.getLogger("mkdocs.plugins.rst_docstrings")


class RstDocstrings(griffe.Extension):
    """Rewrite roles and literal blocks once the whole package is loaded."""

    def on_package(self, *, pkg: griffe.Module, loader: griffe.GriffeLoader, **_: Any) -> None:
        for obj in _walk(pkg):
            if obj.docstring is not None:
                obj.docstring.value = _literal_blocks(_roles(obj.docstring.value, obj, loader))


def _walk(obj: griffe.Object) -> Any:
    yield obj
    for member in obj.members.values():
        if not member.is_alias:
            yield from _walk(member)  # type: ignore[arg-type]


def _roles(text: str, obj: griffe.Object, loader: griffe.GriffeLoader) -> str:
    def replace(match: re.Match[str]) -> str:
        body = match.group("body").strip()
        explicit = EXPLICIT.match(body)
        if explicit:
            title, target = explicit.group("title"), explicit.group("target").strip()
        else:
            target = body
            short = target.startswith("~")
            target = target.lstrip("~")
            title = target.rsplit(".", 1)[-1] if short else target
        if match.group("role") in {"meth", "func"} and not title.endswith(")"):
            title += "()"
        path = _resolve(target, obj, loader)
        if path is None:
            log.debug("%s: %r names nothing in the project; shown as code", obj.path, target)
            return f"`{title}`"
        return f"[`{title}`][{path}]"

    return ROLE.sub(replace, text)


def _resolve(target: str, obj: griffe.Object, loader: griffe.GriffeLoader) -> str | None:
    """The full path of ``target`` in the project, or None when it lies outside of it.

    A target in the project that names nothing is returned as written, so that the strict
    build reports it instead of rendering a dead name.
    """
    first, _, rest = target.partition(".")
    candidates = [target]
    scope: griffe.Object | None = obj
    while scope is not None:
        try:
            resolved = scope.resolve(first)
        except griffe.NameResolutionError:
            scope = scope.parent
            continue
        candidates.insert(0, f"{resolved}.{rest}" if rest else resolved)
        break
    if not obj.is_module and obj.parent is not None and first in obj.parent.members:
        candidates.insert(0, f"{obj.parent.path}.{target}")
    if obj.is_class and first in obj.members:
        candidates.insert(0, f"{obj.path}.{target}")
    for candidate in candidates:
        found = _lookup(candidate, loader)
        if found is not None:
            return found
    if any(target == p or target.startswith(p + ".") or target.startswith(p + "_")
           for p in PROJECT):
        return target
    return None


def _lookup(path: str, loader: griffe.GriffeLoader) -> str | None:
    """The canonical path of the object at ``path``, following aliases and lazy exports."""
    parts = path.split(".")
    try:
        current: Any = loader.modules_collection[parts[0]]
    except KeyError:
        return None
    for part in parts[1:]:
        try:
            member = current.members.get(part)
        except griffe.AliasResolutionError:  # e.g. an alias to a module griffe did not load
            return None
        if member is None:
            member = _lazy_export(current, part, loader)
        if member is None:
            return None
        current = member
    try:
        return str(current.final_target.path) if current.is_alias else str(current.path)
    except (griffe.AliasResolutionError, griffe.CyclicAliasError):  # a target not loaded
        return None


def _lazy_export(module: Any, name: str, loader: griffe.GriffeLoader) -> Any:
    exports = module.members.get("_EXPORTS") if getattr(module, "is_module", False) else None
    if exports is None or exports.is_alias or exports.value is None:
        return None
    try:
        table = ast.literal_eval(str(exports.value))
    except (ValueError, SyntaxError):
        return None
    home = table.get(name)
    if home is None:
        return None
    try:
        return loader.modules_collection[f"{home}.{name}"]
    except KeyError:
        return None


def _literal_blocks(text: str) -> str:
    """``Text::`` + an indented block -> ``Text:`` + a fenced block (rst literal blocks)."""
    lines = text.splitlines()
    out: list[str] = []
    i = 0
    while i < len(lines):
        line = lines[i]
        if not line.rstrip().endswith("::"):
            out.append(line)
            i += 1
            continue
        indent = len(line) - len(line.lstrip())
        j = i + 1
        while j < len(lines) and not lines[j].strip():
            j += 1
        k = j
        while k < len(lines) and (not lines[k].strip()
                                  or len(lines[k]) - len(lines[k].lstrip()) > indent):
            k += 1
        while k > j and not lines[k - 1].strip():
            k -= 1
        if k == j:  # no indented block follows: an ordinary line that ends in "::"
            out.append(line)
            i += 1
            continue
        head = line.rstrip()[:-2].rstrip()
        if head.strip():
            out.append(head + ":")
        code = textwrap.dedent("\n".join(lines[j:k]))
        language = "python" if _is_python(code) else "text"
        pad = " " * indent
        out.extend(["", f"{pad}```{language}"])
        out.extend(pad + x if x.strip() else "" for x in code.splitlines())
        out.extend([f"{pad}```", ""])
        i = k
    return "\n".join(out)


def _is_python(code: str) -> bool:
    try:
        ast.parse(code)
    except SyntaxError:
        return False
    return True
