"""An mkdocs hook: a guide added to docs/ shows in the navigation even before mkdocs.yml lists it.

mkdocs.yml orders the pages; a ``docs/*.md`` page it does not name yet is appended to the
"Guides" section (titled by its first heading), with a log line that says to place it, so a new
page never breaks the strict build and never goes missing from the site.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

log = logging.getLogger("mkdocs.hooks.nav_guides")
SECTION = "Guides"


def _named(nav: Any) -> set[str]:
    if isinstance(nav, str):
        return {nav}
    if isinstance(nav, dict):
        return set().union(*(_named(v) for v in nav.values()))
    if isinstance(nav, list):
        return set().union(*(_named(v) for v in nav)) if nav else set()
    return set()


def on_config(config: Any) -> Any:
    """Append the top-level pages that the nav does not name to its Guides section."""
    nav = config.get("nav")
    if not nav:
        return config
    named = _named(nav)
    missing = sorted(p.name for p in Path(config["docs_dir"]).glob("*.md") if p.name not in named)
    if not missing:
        return config
    guides = next((entry[SECTION] for entry in nav
                   if isinstance(entry, dict) and isinstance(entry.get(SECTION), list)), None)
    if guides is None:
        guides = []
        nav.append({SECTION: guides})
    for name in missing:
        log.info("%s is not in mkdocs.yml's nav: listed under %s; give it its place there",
                 name, SECTION)
        guides.append(name)
    return config
