"""Run the benchmarks and compare each figure with its target.

    python bench/run.py [hello|run_many|cache_hit|import|rest|slurm|shelve|peers ...] [--quick]

`display` and `plan`: what the progress display adds to a run_many, and `hqs-sdk plan` on
a script of cached calls against running it.
`slurm` starts the real test cluster (scripts/test-cluster.sh; root and its packages needed).
`rest` starts hqs-sdk-server (plugins hqs-sdk-server and hqs-sdk-rest needed).
`peers` runs submitit, Parsl and joblib alongside (their own virtual environment, made from
PyPI on the first run: see bench/peers.py).

Prints a table, writes bench/results/latest.json, and exits 1 when a target is missed.
Every figure except the cache hit is a ratio against a floor measured in the same run, since
the machines this runs on are noisy.
"""

from __future__ import annotations

import json
import os
import platform
import sys
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

import bench_cache_hit
import bench_dashboard
import bench_display
import bench_hello
import bench_import
import bench_plan
import bench_rest
import bench_run_many
import bench_shelve
import bench_slurm
import peers

BENCHMARKS = {"hello": bench_hello, "run_many": bench_run_many, "cache_hit": bench_cache_hit,
              "import": bench_import, "display": bench_display, "plan": bench_plan,
              "rest": bench_rest, "slurm": bench_slurm,
              "shelve": bench_shelve, "dashboard": bench_dashboard, "peers": peers}
DEFAULT = ["hello", "run_many", "cache_hit", "import", "rest", "shelve",
           "display", "plan"]  # slurm: root; peers: PyPI


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as info:
            for line in info:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def main() -> int:
    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    samples = 7 if "--quick" in sys.argv else 21
    chosen = args or DEFAULT
    records = []
    for name in chosen:
        print(f"running {name} ...", file=sys.stderr, flush=True)
        records += BENCHMARKS[name].run(samples)
    print(f"\n{'benchmark':<46} {'value':>10} {'floor':>10} {'ratio':>7} {'limit':>7}  verdict")
    for r in records:
        value = f"{r['value']:.1f}{r['unit']:>2}"
        floor = f"{r['floor']:.1f}" if r["floor"] else "-"
        ratio = f"{r['ratio']:.2f}x" if r["ratio"] else "-"
        limit = f"{'>=' if r.get('at_least') else ''}{r['limit']}" if r["limit"] else "-"
        verdict = "ok" if r["passed"] else "MISSED"
        print(f"{r['name']:<46} {value:>10} {floor:>10} {ratio:>7} {limit:>7}  {verdict}  "
              f"{r['note']}")
    meta = {"date": datetime.now(UTC).isoformat(timespec="seconds"),
            "python": sys.version.split()[0], "cpus": os.cpu_count(), "cpu": cpu_model(),
            "interpreter": sys.executable}
    out = Path(__file__).parent / "results"
    out.mkdir(exist_ok=True)
    (out / "latest.json").write_text(json.dumps({"meta": meta, "results": records}, indent=2))
    print(f"\n{meta}")
    return 0 if all(r["passed"] for r in records) else 1


if __name__ == "__main__":
    sys.exit(main())
