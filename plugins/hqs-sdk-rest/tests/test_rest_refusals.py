"""A request the service cannot provision, from a real user script: refused, never cached."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import uuid
from pathlib import Path

import pytest
from hqs_sdk_rest import Client
from hqs_sdk_server.testing import Service

pytest.importorskip("hqs_sdk_sqlite", reason="needs the hqs-sdk-sqlite plugin")

SCRIPT = """
import os
from hqs_sdk import global_config, scoped_config
from hqs_sdk.config import BackendConfigurationREST, CacheConfigurationSQLite
from hqs_sdk.errors import BackendRejectedError
from hqs_sdk.testing import tasks

global_config.backend = BackendConfigurationREST(url={url!r}, token={token!r})
global_config.cache = CacheConfigurationSQLite(file="cache.db")
machine = len(os.sched_getaffinity(0))  # the service runs its tasks on this machine
try:
    with scoped_config(vcpu=4 * machine):
        tasks.add(20, 22)
except BackendRejectedError as exc:
    print("REFUSED", " ".join(str(exc).split()))
else:
    print("NOT REFUSED")
print("RESULT", tasks.add(20, 22))
"""


def test_a_scoped_refusal_is_not_cached_and_the_plain_call_then_runs(
        service: Service, tmp_path: Path) -> None:
    """Issue 11, defect 4: the refusal used to be stored as a failed execution, so the plain
    call after the scope failed "from the cache"."""
    token = service.token(f"refused-{uuid.uuid4().hex[:6]}")
    (tmp_path / "script.py").write_text(textwrap.dedent(SCRIPT.format(url=service.url,
                                                                      token=token)))
    done = subprocess.run([sys.executable, "script.py"], cwd=tmp_path, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    lines = done.stdout.splitlines()
    refused = next((line for line in lines if line.startswith("REFUSED")), None)
    assert refused is not None, done.stdout
    machine = len(os.sched_getaffinity(0))
    assert f"asks for {4 * machine} vcpu" in refused and f"has {machine}" in refused, refused
    assert "'add'" in refused, refused
    assert "RESULT 42" in lines, done.stdout
    client = Client(url=service.url, token=token)
    kept = list(client.executions())
    assert [(e.task_name, e.state.value) for e in kept] == [("add", "succeeded")]
