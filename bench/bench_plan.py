"""`hqs-sdk plan` over a script of 10,000 cached calls against running that script normally."""

from __future__ import annotations

import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path
from typing import Any

from _timing import interleaved, result, run_process
from bench_cache_hit import FILL

CALLS = 10_000

SCRIPT = textwrap.dedent(f"""
    from hqs_sdk_example import hello
    for i in range({CALLS}):
        hello(f"name{{i}}")
""")


def run(samples: int) -> list[dict[str, Any]]:
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        script = folder / "results.py"
        script.write_text(SCRIPT)
        subprocess.run([sys.executable, "-c", FILL, str(folder / ".hqs_sdk_cache.db"),
                        str(CALLS)], check=True)
        normal = [sys.executable, str(script)]
        dry = [sys.executable, "-m", "hqs_sdk.cli", "plan", str(script)]
        run_process(dry)  # exit code 0: every call is in the cache
        medians = interleaved(max(3, samples // 3), normal=lambda: run_process(normal),
                              plan=lambda: run_process(dry))
    return [result(f"hqs-sdk plan, script of {CALLS:,} cached calls", medians["plan"], "s",
                   medians["normal"], 1.5, "floor = the same script run normally")]
