"""The Slurm backend against a real Slurm reached through a real sshd."""

from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import Any

import attrs
import pytest
from hqs_sdk_slurm import BackendConfigurationSlurm, SlurmBackend
from hqs_sdk_slurm.config import parse_ssh_extra
from hqs_sdk_slurm.script import batch_script, sbatch_command

from hqs_sdk import FileRef, run_many
from hqs_sdk.errors import BackendRejectedError, ConfigurationError, HqsSdkError
from hqs_sdk.models import ExecutionState, Provisioning
from hqs_sdk.testing import BackendContract, tasks, wait_finished
from hqs_sdk.testing.backend_contract import make_request


class TestSlurmBackendContract(BackendContract):
    finish_timeout = 90.0
    queue_capacity = 0  # every job of queueing_config is submitted on hold

    @pytest.fixture
    def backend_config(self, slurm_config: Any) -> Any:
        return slurm_config

    @pytest.fixture
    def queueing_config(self, slurm_config: Any) -> Any:
        return attrs.evolve(slurm_config, sbatch_extra=["--hold"])

    def lose(self, backend: Any, handle: Any, request: Any) -> None:
        # The test cluster's slurm_tmp_io is on this machine: delete the control folder.
        for folder in backend.output_locations(request.execution_id, handle):
            shutil.rmtree(folder)


def test_concurrent_submissions_of_one_execution_run_it_once(slurm_config: Any,
                                                             tmp_path: Path) -> None:
    """Clients that submit the same execution at once (a script started twice) used to both
    find it unsubmitted and both sbatch it."""
    import threading

    marker = tmp_path / "runs.txt"
    backends = [SlurmBackend(slurm_config) for _ in range(4)]
    try:
        for _ in range(3):
            request = make_request(tasks.sleep, seconds=0.01, marker=str(marker))
            barrier = threading.Barrier(len(backends))
            handles: list[Any] = [None] * len(backends)
            errors: list[BaseException] = []

            def submit(i: int, request: Any = request, barrier: Any = barrier,
                       handles: Any = handles, errors: Any = errors) -> None:
                try:
                    barrier.wait(30)
                    handles[i] = backends[i].submit(request)
                except BaseException as exc:
                    errors.append(exc)

            threads = [threading.Thread(target=submit, args=(i,)) for i in range(len(backends))]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join(120)
            assert not errors, errors
            assert len({h["job"] for h in handles}) == 1, handles
            assert wait_finished(backends[0], handles[0], 90).output == "slept"
        assert len(marker.read_text().splitlines()) == 3
    finally:
        for backend in backends:
            backend.close()


def test_a_request_no_node_can_hold_is_refused_not_queued_forever(slurm_config: Any) -> None:
    """sbatch accepts a job no node can run (it pends forever, reason PartitionConfig or
    Resources); the backend refuses it at submission, from the nodes' sizes."""
    backend = SlurmBackend(slurm_config)
    try:
        for provisioning, named in ((Provisioning(vcpu=4096), "4096 vcpu"),
                                    (Provisioning(memory_mb=10**8), "MiB of memory")):
            request = make_request(tasks.add, provisioning, a=1)
            with pytest.raises(BackendRejectedError, match=named):
                backend.check(request)
            with pytest.raises(BackendRejectedError, match=f"'add'.*{named}"):
                backend.submit(request)
        backend.check(make_request(tasks.add, Provisioning(vcpu=1, memory_mb=64), a=1))
    finally:
        backend.close()


def test_run_many_is_one_job_array_over_one_connection(hqs_config: Any, slurm_config: Any
                                                       ) -> None:
    from hqs_sdk_slurm.connection import shared_session

    hqs_config.backend = slurm_config
    session = shared_session(slurm_config)  # what every backend for this host uses
    session.close()
    opened_before = session.connections_opened
    calls = [tasks.add.bind(i, 1000) for i in range(12)]
    assert run_many(calls) == [i + 1000 for i in range(12)]
    from hqs_sdk.runner import backend_for

    _, backend, _ = backend_for(slurm_config, hqs_config)
    assert isinstance(backend, SlurmBackend) and backend.session is session
    assert session.connections_opened == opened_before + 1
    batches = list((Path(slurm_config.slurm_tmp_io) / "batches").iterdir())
    assert len(batches) == 1, "the 12 calls should have been one sbatch"
    assert len((batches[0] / "dirs.txt").read_text().splitlines()) == 12


def test_local_io_mode_maps_file_references(hqs_config: Any, slurm_config: Any) -> None:
    config = attrs.evolve(slurm_config, slurm_tmp_io_local=slurm_config.slurm_tmp_io)
    hqs_config.backend = config
    ref = tasks.write_text("über slurm")
    assert ref.path is not None and ref.path.startswith(slurm_config.slurm_tmp_io)
    assert ref.read_text() == "über slurm"
    assert tasks.read_text(ref) == "über slurm"  # passed to a second job as it is


def test_file_references_are_read_over_the_connection(hqs_config: Any, slurm_config: Any
                                                       ) -> None:
    from hqs_sdk_slurm.connection import shared_session

    hqs_config.backend = slurm_config  # no slurm_tmp_io_local: the client cannot see the files
    ref = tasks.write_text("über sftp " * 100_000)
    assert ref.location.startswith("sftp://root@127.0.0.1:")
    assert ref.path is None
    opened = shared_session(slurm_config).connections_opened
    assert ref.read_text() == "über sftp " * 100_000
    assert tasks.read_text(ref) == "über sftp " * 100_000  # the second job gets the path
    assert shared_session(slurm_config).connections_opened == opened

    gone = FileRef(ref.location + ".missing")
    with pytest.raises(HqsSdkError, match=r"does not exist on 127\.0\.0\.1.*run the task"):
        gone.read_bytes()


def test_file_references_are_read_in_a_new_process(hqs_config: Any, slurm_config: Any,
                                                   tmp_path: Path) -> None:
    """A later script reads a reference from the cache with the configured keys."""
    import subprocess
    import sys

    hqs_config.backend = slurm_config
    ref = tasks.write_text("from a cached result")
    script = tmp_path / "read.py"
    script.write_text(
        "import sys\n"
        "from hqs_sdk import FileRef, global_config\n"
        "from hqs_sdk_slurm import BackendConfigurationSlurm\n"
        f"global_config.backend = BackendConfigurationSlurm(**{attrs.asdict(slurm_config)!r})\n"
        "print(FileRef(sys.argv[1]).read_text())\n")
    out = subprocess.run([sys.executable, str(script), ref.location], capture_output=True,
                         text=True, timeout=60)
    assert out.stdout.strip() == "from a cached result", out.stderr


def test_missing_worker_explains_preparation_script(slurm_config: Any) -> None:
    config = attrs.evolve(slurm_config, preparation_script_before=["export PATH=/usr/bin:/bin"])
    backend = SlurmBackend(config)
    try:
        response = wait_finished(backend, backend.submit(make_request(tasks.add, a=1)), 90)
    finally:
        backend.close()
    assert response.state is ExecutionState.FAILED
    assert response.error.kind == "worker_missing"
    assert "preparation_script_before" in response.error.message


def test_slurm_time_limit_is_reported(slurm_config: Any) -> None:
    config = attrs.evolve(slurm_config, sbatch_extra=["--time=1"])  # one minute
    backend = SlurmBackend(config)
    try:
        handle = backend.submit(make_request(tasks.sleep, seconds=1))
        response = wait_finished(backend, handle, 90)
    finally:
        backend.close()
    assert response.state is ExecutionState.SUCCEEDED  # well within the limit


def test_unknown_host_key_is_refused_with_a_hint(slurm_config: Any, tmp_path: Path) -> None:
    empty = tmp_path / "known_hosts"
    empty.write_text("")
    backend = SlurmBackend(attrs.evolve(slurm_config, known_hosts=str(empty)))
    try:
        with pytest.raises(BackendRejectedError, match=r"host key .* is unknown"):
            backend.submit(make_request(tasks.add, a=1))
    finally:
        backend.close()


def test_values_never_reach_a_shell_unquoted(slurm_config: Any, tmp_path: Path) -> None:
    import shlex

    target = tmp_path / "pwned"
    evil = f"x'; touch {target}; echo '"
    config = attrs.evolve(slurm_config, sbatch_extra=[f"--comment={evil}"])
    command = sbatch_command(config, f"name{evil}", f"/io/{evil}", 3, Provisioning(vcpu=1.5))
    argv = shlex.split(command)
    assert f"--comment={evil}" in argv and argv[-1] == f"/io/{evil}/job.sh"
    assert "--cpus-per-task=2" in argv and "--array=0-2" in argv
    assert shlex.quote(f"/io/{evil}/dirs.txt") in batch_script(config, f"/io/{evil}")
    backend = SlurmBackend(config)  # and for real, through ssh and sbatch
    try:
        response = wait_finished(backend, backend.submit(make_request(tasks.add, a=5)), 90)
    finally:
        backend.close()
    assert response.output == 5
    assert not target.exists()


@pytest.mark.parametrize(("extra", "words"), [
    (["-X"], "not supported"),
    (["-o", "ForwardAgent=yes"], "not supported"),
    (["-p"], "needs a value"),
    (["-p", "ssh"], "port number"),
])
def test_unsupported_ssh_options_are_refused(extra: list[str], words: str) -> None:
    with pytest.raises(ConfigurationError, match=words):
        BackendConfigurationSlurm(login_host="h", slurm_tmp_io="/io", ssh_extra=extra)


def test_ssh_options_are_understood() -> None:
    options = parse_ssh_extra(("-i", "/k", "-p2222", "-J", "bastion", "-o",
                               "UserKnownHostsFile=/kh"))
    assert options.identity_files == ("/k",) and options.port == 2222
    assert options.jump == "bastion" and options.options == (("userknownhostsfile", "/kh"),)


def test_configuration_is_validated() -> None:
    with pytest.raises(ConfigurationError, match="absolute"):
        BackendConfigurationSlurm(login_host="h", slurm_tmp_io="relative/io")
    with pytest.raises(ConfigurationError, match="login_host"):
        BackendConfigurationSlurm(login_host="", slurm_tmp_io="/io")
    with pytest.raises(ConfigurationError, match="list of strings"):
        BackendConfigurationSlurm(login_host="h", slurm_tmp_io="/io", sbatch_extra="--x")


def test_polling_is_one_remote_command_per_round(slurm_config: Any) -> None:
    backend = SlurmBackend(slurm_config)
    try:
        handles = backend.submit_many([make_request(tasks.sleep, seconds=2) for _ in range(6)])
        calls = []
        original = backend.session.run

        def counting(command: str, doing: str, timeout: float = 120) -> Any:
            calls.append(doing)
            return original(command, doing, timeout)

        backend.session.run = counting  # type: ignore[method-assign]
        backend.states(handles)
        assert calls == ["polling 6 executions"]
        deadline = time.monotonic() + 90
        while not all(s.state.finished for s in backend.states(handles)):
            assert time.monotonic() < deadline
            time.sleep(0.5)
    finally:
        backend.close()
