"""What the Slurm backend leaves in ``slurm_tmp_io`` is its user's alone (issue 12).

``slurm_tmp_io`` is on a file system the whole cluster sees. The control folders, the batch
folders, the requests, the responses and the files tasks write are created private (umask
077), and the client writes through temporary files of unique names. Checked on the real
test cluster, once as the files' modes and once as another user (uid 65534) trying to read.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import stat
from pathlib import Path
from typing import Any

import attrs
import pytest

from hqs_sdk.testing import tasks


def _open_to_others(root: Path) -> list[str]:
    return [f"{p} {stat.filemode(p.stat().st_mode)}" for p in [root, *root.rglob("*")]
            if p != root and not p.is_symlink() and p.stat().st_mode & 0o077]


@pytest.mark.parametrize("local_io", [False, True], ids=["over-ssh", "slurm_tmp_io_local"])
def test_slurm_tmp_io_holds_nothing_other_users_can_read(hqs_config: Any, slurm_config: Any,
                                                         local_io: bool) -> None:
    io = Path(slurm_config.slurm_tmp_io)
    io.chmod(0o755)  # as a shared scratch folder is: only what the backend makes protects
    if local_io:
        slurm_config = attrs.evolve(slurm_config, slurm_tmp_io_local=str(io))
    hqs_config.backend = slurm_config
    ref = tasks.write_text("private result")
    assert tasks.read_text(ref) == "private result"
    made = [p for p in io.rglob("*") if p.name != ".submit.lock"]
    assert any(p.name == "request.json" for p in made) and \
        any(p.name == "response.json" for p in made) and \
        any(p.name == "out.txt" for p in made), [str(p) for p in made]
    assert not [p for p in made if p.name.endswith(".tmp")], "temporary files were left"
    assert _open_to_others(io) == []
    if os.geteuid() == 0 and importlib.util.find_spec("hqs_sdk_server") is not None:
        from hqs_sdk_server.testing import readable_by_another_user

        assert readable_by_another_user(made) == []


def test_the_client_writes_through_unique_temporary_names(slurm_config: Any,
                                                          tmp_path: Path) -> None:
    """A stale ``<path>.<pid>.tmp`` (another machine's client with the same pid) is neither
    reused nor clobbered: the client's temporary names are unique."""
    from hqs_sdk_slurm.backend import SlurmBackend

    io = Path(slurm_config.slurm_tmp_io)
    backend = SlurmBackend(attrs.evolve(slurm_config, slurm_tmp_io_local=str(io)))
    try:
        target = io / "batches" / "b1" / "requests" / "0.json"
        target.parent.mkdir(parents=True)
        other = target.parent / f"0.json.{os.getpid()}.tmp"
        other.symlink_to(tmp_path / "elsewhere")  # what another user could have planted
        backend._write({str(target): b"{}"}, "writing a request")
        assert target.read_bytes() == b"{}"
        assert stat.S_IMODE(target.stat().st_mode) == 0o600
        assert not (tmp_path / "elsewhere").exists()
        assert [p.name for p in target.parent.iterdir() if p.name.endswith(".tmp")] == \
            [other.name]
    finally:
        backend.close()


def test_a_worker_on_the_cluster_applies_the_services_fetch_rule(
        hqs_config: Any, slurm_config: Any, tmp_path: Path) -> None:
    """The service passes its fetch rule to the Slurm jobs too: an allowed URL that redirects
    to a server the operator did not allow is refused by the worker on the compute node."""
    pytest.importorskip("hqs_sdk_server", reason="needs hqs-sdk-server (the slurm tox env has it)")
    from hqs_sdk_rest import BackendConfigurationREST
    from hqs_sdk_server.testing import running_service, serving_pages

    from hqs_sdk import FileRef
    from hqs_sdk.errors import TaskFailedError

    with contextlib.ExitStack() as stack:
        secret_url = stack.enter_context(serving_pages(
            {"/secret": (200, {}, b"secret of another server")})) + "/secret"
        base = stack.enter_context(serving_pages({
            "/data/ok": (200, {}, b"allowed data"),
            "/data/jump": (302, {"Location": secret_url}, b"")}))
        backend_file = tmp_path / "backend.json"
        backend_file.write_text(json.dumps({"backend": "slurm", **attrs.asdict(slurm_config)}))
        service = stack.enter_context(running_service(tmp_path / "service", extra=(
            "--backend-file", str(backend_file), f"--allow-fetch={base}/data/",
            "--allow-fetch-address=127.0.0.1")))
        hqs_config.backend = BackendConfigurationREST(url=service.url, token=service.token("sam"))
        assert tasks.read_text(FileRef(f"{base}/data/ok")) == "allowed data"
        with pytest.raises(TaskFailedError) as failed:
            tasks.read_text(FileRef(f"{base}/data/jump"))
        assert "secret of another server" not in str(failed.value)
        assert "private_address" in str(failed.value) or "allow-fetch" in str(failed.value)


def test_the_service_takes_sftp_inputs_only_from_its_own_slurm_folder(
        slurm_config: Any, tmp_path: Path) -> None:
    """``sftp://`` inputs go only to the backend's login host, and only into its
    ``slurm_tmp_io``: ``sftp://<login host>/etc/passwd`` would have the task read a file of the
    cluster with the service's keys."""
    pytest.importorskip("hqs_sdk_server", reason="needs hqs-sdk-server (the slurm tox env has it)")
    import requests
    from hqs_sdk_server.testing import running_service

    from hqs_sdk import FileRef
    from hqs_sdk.serialization import converter
    from hqs_sdk.testing.backend_contract import make_request

    backend_file = tmp_path / "backend.json"
    backend_file.write_text(json.dumps({"backend": "slurm", **attrs.asdict(slurm_config)}))
    host, port = slurm_config.login_host, slurm_config.port
    with running_service(tmp_path / "service",
                         extra=("--backend-file", str(backend_file))) as service:
        token = service.token("sam")
        cases = {f"sftp://{host}:{port}/etc/passwd": "sftp_path",
                 f"sftp://{host}:{port}{slurm_config.slurm_tmp_io}/../../etc/passwd": "sftp_path",
                 f"sftp://localhost:{port}{slurm_config.slurm_tmp_io}/x": "sftp_host"}
        for url, rule in cases.items():
            request = make_request(tasks.read_text, ref=FileRef(url))
            reply = requests.post(f"{service.url}/v1/executions", timeout=30, headers={
                "Authorization": f"Bearer {token}", "Content-Type": "application/json"},
                data=json.dumps({"requests": [converter.unstructure(request)]}))
            assert reply.status_code == 422, (url, reply.text)
            assert f"rule {rule}" in reply.json()["message"], reply.text
