"""Dependency audit (``tox -e audit``): pip-audit over what each distribution installs.

The tox env installs the core and every plugin (with their extras) the way users do; this
script runs ``pip-audit`` over that environment, then reports, per distribution (``hqs-sdk``,
``hqs-sdk-local``, ...), the known vulnerabilities of the packages it pulls in.

Exit codes:

- 0: every third-party package was audited and none has a known vulnerability with a fix
  (one without a fix is listed, not failed: there is nothing to upgrade to);
- 1: a package has a known vulnerability that a newer version fixes: upgrade it (or raise the
  lower bound in the distribution's setup.cfg);
- 2: pip-audit itself failed;
- 3: the vulnerability service could not be reached for some packages, so those were not
  audited. pip-audit alone reports "No known vulnerabilities found" then, which would be a
  silent pass; this script says which packages went unaudited instead. Where only the package
  registries are reachable (this project's machines and CI: the per-version JSON API that
  pip-audit's default service uses and OSV are not), the audit cannot run: the script prints
  that and, unless ``HQS_AUDIT_REQUIRED=1``, exits 0 after the loud notice, so that CI shows it
  without failing on the network. With ``HQS_AUDIT_REQUIRED=1`` (a CI that has the network),
  an unreachable service fails the run.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from importlib import metadata
from typing import Any

OWN_PREFIX = "hqs-sdk"


def _canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _requirements(dist: metadata.Distribution, extras: set[str]) -> set[str]:
    """The names of ``dist``'s direct requirements that apply here (markers, extras)."""
    from packaging.requirements import Requirement

    names = set()
    for text in dist.requires or ():
        requirement = Requirement(text)
        marker = requirement.marker
        if marker is None or any(marker.evaluate({"extra": extra}) for extra in extras | {""}):
            names.add(_canonical(requirement.name))
    return names


def closures() -> dict[str, set[str]]:
    """For each installed hqs-sdk distribution, every installed package it pulls in."""
    installed = {_canonical(d.metadata["Name"]): d for d in metadata.distributions()}
    result = {}
    for name, dist in sorted(installed.items()):
        if not name.startswith(OWN_PREFIX):
            continue
        extras = set(dist.metadata.get_all("Provides-Extra") or ())
        seen: set[str] = set()
        todo = [name]
        while todo:
            current = todo.pop()
            if current in seen or current not in installed:
                continue
            seen.add(current)
            todo.extend(_requirements(installed[current], extras if current == name else set()))
        result[name] = {n for n in seen if not n.startswith(OWN_PREFIX)}
    return result


def _run_pip_audit() -> dict[str, Any] | None:
    """pip-audit's JSON report on this environment, or None (said on stderr) if it failed."""
    audit = subprocess.run(
        [sys.executable, "-m", "pip_audit", "--format", "json", "--progress-spinner", "off",
         "--skip-editable"], capture_output=True, text=True, timeout=1800)
    try:
        report: dict[str, Any] = json.loads(audit.stdout)
    except ValueError:
        print(f"audit: pip-audit failed (exit {audit.returncode}):\n{audit.stderr}",
              file=sys.stderr)
        return None
    return report


def _report_distribution(name: str, dist_deps: set[str], deps: dict[str, Any],
                         unaudited: list[str]) -> list[str]:
    """Print one distribution's audit summary and vulnerabilities; return those with a fix."""
    lines = []
    fixable = []
    for dep in sorted(dist_deps):
        for vuln in (deps.get(dep) or {}).get("vulns", []):
            fix = ", ".join(vuln.get("fix_versions") or []) or "no fix yet"
            lines.append(f"    {dep} {deps[dep]['version']}: {vuln['id']} (fixed in: {fix})")
            if vuln.get("fix_versions"):
                fixable.append(f"{dep} {deps[dep]['version']} {vuln['id']}")
    audited = len(dist_deps) - len([d for d in dist_deps if d in unaudited])
    missing = len(dist_deps) - audited
    print(f"audit: {name}: {audited} of {len(dist_deps)} packages audited"
          + (f" ({missing} NOT audited)" if missing else "")
          + f", {len(lines)} known vulnerabilities among the audited")
    if lines:
        print("\n".join(lines))
    return fixable


def _not_audited(unaudited: list[str], third_party: set[str], deps: dict[str, Any]) -> int:
    """Say which packages went unaudited and why; return 3 if the audit is required, else 0."""
    reasons = {deps[n]["skip_reason"].split(":")[0] if n in deps else "not in the report"
               for n in unaudited}
    print("audit: NOT RUN for " + f"{len(unaudited)} of {len(third_party)} packages "
          f"({', '.join(unaudited[:8])}{', ...' if len(unaudited) > 8 else ''}): "
          f"{'; '.join(sorted(reasons))}. pip-audit's vulnerability service (PyPI's "
          "per-version JSON API, or OSV) is not reachable from this machine, so these "
          "packages were NOT checked for known vulnerabilities. Run `tox -e audit` where "
          "it is reachable.", file=sys.stderr)
    if os.environ.get("HQS_AUDIT_REQUIRED") == "1":
        return 3
    print("audit: not failing on the network (set HQS_AUDIT_REQUIRED=1 to fail here).",
          file=sys.stderr)
    return 0


def main(argv: list[str]) -> int:
    """``audit.py [--report PIP_AUDIT_JSON]``: with a saved report, judge that instead."""
    if argv[:1] == ["--report"] and len(argv) == 2:
        with open(argv[1]) as f:
            report = json.load(f)
    else:
        report = _run_pip_audit()
        if report is None:
            return 2
    deps = {_canonical(d["name"]): d for d in report.get("dependencies", [])}
    per_dist = closures()
    third_party = set().union(*per_dist.values()) if per_dist else set()
    unaudited = sorted(n for n in third_party if n not in deps or deps[n].get("skip_reason"))
    fixable: list[str] = []
    for name, dist_deps in per_dist.items():
        fixable += _report_distribution(name, dist_deps, deps, unaudited)
    if fixable:
        print("audit: FAILED: known vulnerabilities with a fix: " + "; ".join(sorted(
            set(fixable))) + ". Upgrade them (and raise the lower bound in setup.cfg).",
            file=sys.stderr)
        return 1
    if unaudited:
        return _not_audited(unaudited, third_party, deps)
    print("audit: no known vulnerability with a fix in any distribution's requirements")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
