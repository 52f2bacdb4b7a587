"""The examples of docs/rest.md run, as user scripts, against the real service."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from hqs_sdk_server.testing import Service

DOC = Path(__file__).resolve().parents[3] / "docs" / "rest.md"
BLOCK = re.compile(r"<!-- run: rest -->\s*```python\n(?P<code>.*?)```", re.S)
EXAMPLES = [m.group("code") for m in BLOCK.finditer(DOC.read_text())] if DOC.exists() else []

pytestmark = pytest.mark.skipif(not EXAMPLES, reason="docs/rest.md is not in this checkout")
pytest.importorskip("hqs_sdk_example", reason="the examples use the hqs-sdk-example tasks")
pytest.importorskip("hqs_sdk_sqlite", reason="the examples use the default cache")


def test_the_doc_has_examples() -> None:
    assert len(EXAMPLES) >= 2


@pytest.mark.parametrize("code", EXAMPLES, ids=lambda c: c.splitlines()[0][:30])
def test_example_runs(code: str, service: Service, alice: str, tmp_path: Path) -> None:
    env = {**os.environ, "HQS_SDK_URL": service.url, "HQS_SDK_TOKEN": alice,
           "XDG_CONFIG_HOME": str(tmp_path / "config")}
    script = tmp_path / "example.py"
    script.write_text(code)
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                          cwd=tmp_path, env=env, timeout=120)
    assert done.returncode == 0, done.stderr
    if "hello(" in code:
        assert done.stdout.splitlines()[-3:] == ["written on the service",
                                                 "written on the service",
                                                 "from this machine"]
