"""The shelve cache: put cost as the cache grows, and several processes writing at once.

    python bench/bench_shelve.py [--quick]

Figures: the median cost of a put (each one fsync'ed) into a cache of 1,000 and of 4,000
entries (the second must not be more than 1.5x the first: a put costs O(1)), and the wall
time of 8 processes each putting 1,000 entries into one cache (target: under 30 s). Every
process is a fresh interpreter, as a user's scripts are.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))

from _timing import result

PUTS = textwrap.dedent("""
    import json, statistics, sys, time
    from hqs_sdk.testing import make_entry
    from hqs_sdk_shelve import CacheConfigurationShelve, ShelveCache
    cache = ShelveCache(CacheConfigurationShelve(file=sys.argv[1]))
    fill, measure = int(sys.argv[2]), int(sys.argv[3])
    for i in range(fill):
        cache.put(make_entry(f"fill-{i}", n=i))
    times = []
    for i in range(measure):
        entry = make_entry(f"new-{i}", n=i)
        started = time.perf_counter()
        cache.put(entry)
        times.append(time.perf_counter() - started)
    cache.close()
    print(json.dumps({"median": statistics.median(times)}))
""")

WRITER = textwrap.dedent("""
    import sys
    from hqs_sdk.testing import make_entry
    from hqs_sdk_shelve import CacheConfigurationShelve, ShelveCache
    cache = ShelveCache(CacheConfigurationShelve(file=sys.argv[1]))
    for i in range(int(sys.argv[3])):
        cache.put(make_entry(f"{sys.argv[2]}-{i}", n=i))
    cache.close()
""")


def _put_cost(folder: Path, fill: int, measure: int) -> float:
    out = subprocess.run([sys.executable, "-c", PUTS, str(folder / f"fill{fill}"), str(fill),
                          str(measure)], check=True, capture_output=True, text=True).stdout
    return float(json.loads(out.strip().splitlines()[-1])["median"])


def _writers(folder: Path, processes: int, puts: int) -> float:
    path = folder / "shared"
    started = time.perf_counter()
    procs = [subprocess.Popen([sys.executable, "-c", WRITER, str(path), f"p{n}", str(puts)])
             for n in range(processes)]
    for proc in procs:
        if proc.wait(600) != 0:
            raise RuntimeError(f"writer {proc.args} failed")
    return time.perf_counter() - started


def run(samples: int = 3, processes: int = 8, puts: int = 1000) -> list[dict[str, Any]]:
    """The figures, as records for ``bench/run.py``."""
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        small = min(_put_cost(folder, 1000, 200) for _ in range(samples))
        large = min(_put_cost(folder, 4000, 200) for _ in range(samples))
        wall = _writers(folder, processes, puts)
    return [
        result("shelve put at 1,000 entries", small * 1e3, "ms", None, None,
               "median of 200 puts, each fsync'ed"),
        result("shelve put at 4,000 entries", large * 1e3, "ms", small * 1e3, 1.5,
               "ratio against the put at 1,000 entries: flat when a put is O(1)"),
        result(f"shelve {processes} processes x {puts:,} puts", wall, "s", None, 30.0,
               "wall time, one shared cache, fresh interpreters"),
    ]


def main() -> None:
    quick = "--quick" in sys.argv
    for record in run(samples=1 if quick else 3, puts=200 if quick else 1000):
        ratio = f" ({record['ratio']:.2f}x)" if record["ratio"] is not None else ""
        verdict = "ok" if record["passed"] else "MISSED"
        print(f"{record['name']:<40} {record['value']:9.3f} {record['unit']}{ratio}  "
              f"{verdict}  {record['note']}")


if __name__ == "__main__":
    main()
