"""The REST service (hqs-sdk-server) and its client, against floors of the same run.

On SQLite; the submissions and the states round also on PostgreSQL where the machine has it
(``scripts/test-postgres.sh install``; started as root, as the service's tests start it), unless
``BENCH_REST_SQLITE_ONLY=1`` is set (a shorter run while working on the client).

- submissions, one client, one execution per request, sequential: the rate against a bare
  Starlette JSON endpoint on the service's uvicorn settings, hit by the same session, in
  alternating blocks; and the p99 latency;
- 1,000 pending executions watched through ``hqs_sdk.submit`` and the REST backend: HTTP
  requests per polling round, and the duration of one states round against the bare endpoint
  answering 1,000 ids, asked next to each round from the same thread; and, asked then
  too, the service's reply to the same request read as plain JSON (the round without the
  client's own work on it). The three take turns going first after the poller's pause, as
  the first request after it is slower;
- a file uploaded (``Client.upload``) and downloaded (``FileRef(url).download``): throughput
  against a raw socket copy of the same file over 127.0.0.1 (file to socket to file, 1 MiB
  buffers, two processes), the target's floor; and against the bare Starlette endpoints of
  the floor server (the body streamed to a file, a ``FileResponse``), which is what the
  framework alone costs; and the peak RSS of the client and of the service. Every timed copy
  starts after ``os.sync()``, so none pays for the write-back of the one before, and the
  service and the bare endpoints take turns going first. The service's download is timed once
  the service has hashed the upload (it answers an upload before hashing it; a download that
  came first would wait for the hash), and the time until then is reported too. Each repeat
  uploads new content, and starts with the same page cache (see ``_drop_cached``).

Executions are ``tasks.sleep`` behind ``--max-running 1``, so they queue; every one is
cancelled before the service stops, so no worker outlives the benchmark.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from _timing import result

SLEEP_S = 600.0
MiB = 1024 * 1024

FLOOR_APP = textwrap.dedent("""
    import json, sys
    import uvicorn
    from starlette.applications import Starlette
    from starlette.responses import FileResponse, Response
    from starlette.routing import Route
    from hqs_sdk_server.malloc import keep_transfer_buffers
    from hqs_sdk_server.protocol import LargeReads

    class BigFileResponse(FileResponse):
        chunk_size = 1024 * 1024

    def reply(value):
        return Response(json.dumps(value, separators=(",", ":")), media_type="application/json")

    async def submit(request):
        data = json.loads(await request.body())
        return reply({"executions": [{"id": r["execution_id"], "state": "queued"}
                                     for r in data["requests"]]})

    async def states(request):
        data = json.loads(await request.body())
        return reply({"executions": [
            {"id": i, "task_name": "sleep", "task_version": "0.1.0", "state": "queued",
             "created_at": "2026-01-01T00:00:00+00:00", "started_at": None,
             "finished_at": None, "progress": None, "message": ""} for i in data["ids"]],
            "missing": []})

    async def upload(request):
        size = 0
        with open(request.query_params["path"], "wb") as out:
            async for chunk in request.stream():
                out.write(chunk)
                size += len(chunk)
        return reply({"size": size})

    async def download(request):
        return BigFileResponse(request.query_params["path"])

    # The service's own settings (hqs-sdk-server serve).
    keep_transfer_buffers()
    app = Starlette(routes=[Route("/submit", submit, methods=["POST"]),
                            Route("/states", states, methods=["POST"]),
                            Route("/upload", upload, methods=["PUT"]),
                            Route("/download", download, methods=["GET"])])
    uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), log_level="warning",
                access_log=False, timeout_graceful_shutdown=10, http=LargeReads)
""")

POLL = textwrap.dedent("""
    import json, os, statistics, sys, threading, time
    from concurrent.futures import ThreadPoolExecutor
    from urllib.parse import urlsplit
    from hqs_sdk import CacheMode, global_config, submit
    from hqs_sdk.config import current_config
    from hqs_sdk.runner import backend_for
    from hqs_sdk.testing import tasks
    from hqs_sdk_rest import BackendConfigurationREST

    url, token, floor_url = sys.argv[1], sys.argv[2], sys.argv[3]
    count, rounds, sleep_s = int(sys.argv[4]), int(sys.argv[5]), float(sys.argv[6])
    config = BackendConfigurationREST(url=url, token=token)
    global_config.backend = config
    global_config.cache.mode = CacheMode.DISABLED
    _, backend, hub = backend_for(config, current_config())
    session = backend.client.session
    seen = []
    session.hooks["response"].append(
        lambda reply, *a, **k: seen.append(f"{reply.request.method} "
                                           f"{urlsplit(reply.request.url).path}"))

    # The floor: the bare endpoint answering as many ids, same session. It is asked next to
    # each round, in the poller's thread, so that both see the same process (its heap
    # of 1,000 executions included) and the same load on the machine.
    body = json.dumps({"ids": [f"{i:032x}" for i in range(count)]})
    floor = []

    def ask_floor():
        started = time.perf_counter()
        session.post(floor_url + "/states", data=body, timeout=30,
                     headers={"Content-Type": "application/json"}).json()
        return time.perf_counter() - started

    def ask_service(handles):  # the service's reply alone: the round's request, plain JSON
        data = json.dumps({"ids": [h["id"] for h in handles]})
        started = time.perf_counter()
        session.post(url + "/v1/executions/states", data=data, timeout=30,
                     headers={"Content-Type": "application/json"}).json()
        return time.perf_counter() - started

    for _ in range(2):  # its connection and first requests
        ask_floor()
    del seen[:]

    started = time.perf_counter()
    with ThreadPoolExecutor(32) as pool:
        executions = list(pool.map(submit, [tasks.sleep.bind(sleep_s + i / 1000)
                                             for i in range(count)]))
    submit_s = time.perf_counter() - started
    submit_requests = sum(1 for s in seen if s == "POST /v1/executions")
    assert hub.pending() == count, hub.pending()

    marks, durations, sizes, replies = [], [], [], []
    done = threading.Event()
    original = backend.states
    # The first request after the poller's pause is the slow one (the plain reply asked first
    # took 10.5 ms, right after 7.2 ms): the round, the floor and the plain reply take turns.
    ORDERS = (("round", "floor", "reply"), ("floor", "reply", "round"),
              ("reply", "round", "floor"))

    def ask(names, handles):
        for name in names:
            if name == "floor":
                floor.append(ask_floor())
            else:
                replies.append(ask_service(handles))

    def counting(handles):
        measured = len(marks) < rounds
        order = ORDERS[len(marks) % 3]
        at = order.index("round")
        if measured:
            ask(order[:at], handles)
        first, started = len(seen), time.perf_counter()
        try:
            return original(handles)
        finally:
            durations.append(time.perf_counter() - started)
            sizes.append(len(handles))
            marks.append((first, len(seen)))
            if measured:
                ask(order[at + 1:], handles)
            if len(marks) >= rounds:
                done.set()

    backend.states = counting
    if not done.wait(300):
        raise SystemExit(f"only {len(marks)} polling rounds in 300 s")
    # Only what each round sent: the floor and the plain reply are asked between the rounds.
    counted = [path for first, last in marks[:rounds] for path in seen[first:last]]
    status = open("/proc/self/status").read()
    peak = int(status.split("VmHWM:")[1].split()[0]) / 1024
    print(json.dumps({
        "rounds": rounds, "requests": len(counted), "paths": sorted(set(counted)),
        "sizes": sorted(set(sizes[:rounds])), "round_s": statistics.median(durations[:rounds]),
        "floor_s": statistics.median(floor), "reply_s": statistics.median(replies),
        "submit_s": submit_s,
        "submit_requests": submit_requests, "peak_mb": peak}))
    sys.stdout.flush()
    os._exit(0)  # the poller thread would go on watching
""")

TRANSFER = textwrap.dedent("""
    import json, os, sys, time
    from hqs_sdk import FileRef
    from hqs_sdk_rest import Client

    def peak_mb():
        status = open("/proc/self/status").read()
        return int(status.split("VmHWM:")[1].split()[0]) / 1024

    def clear_peak():  # starts VmHWM again from VmRSS
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")

    started = [0.0]

    def timed(action):
        os.sync()  # no copy pays for the write-back of the one before
        started[0] = time.perf_counter()
        action()
        return time.perf_counter() - started[0]

    url, token, path, dest, floor_url, floor_dest, order = sys.argv[1:8]
    size = os.path.getsize(path)
    client = Client(url=url, token=token)
    client.whoami()
    session = client.session  # the same session and adapter for the bare endpoints
    out = {}

    def floor():
        def upload():
            with open(path, "rb") as src:
                reply = session.put(floor_url + "/upload", params={"path": floor_dest},
                                    data=src, headers={"Content-Type": "application/octet-stream"})
            assert reply.json()["size"] == size

        def download():
            with session.get(floor_url + "/download", params={"path": floor_dest},
                             stream=True) as reply, open(dest, "wb") as sink:
                for chunk in reply.iter_content(1024 * 1024):
                    sink.write(chunk)

        out["floor_upload_s"] = timed(upload)
        out["floor_download_s"] = timed(download)
        assert os.path.getsize(dest) == size
        os.unlink(dest)
        os.unlink(floor_dest)

    def service():
        infos = []
        clear_peak()
        out["upload_s"] = timed(lambda: infos.append(client.upload(path)))
        out["upload_mb"] = peak_mb()
        # The service answers once the file is stored, and hashes it right after; a download
        # would wait for that, so the download is timed once it is done.
        deadline = time.monotonic() + 300
        while client.file(infos[0].id).sha256 is None:
            assert time.monotonic() < deadline, "not hashed in 300 s"
            time.sleep(0.01)
        out["hashed_s"] = time.perf_counter() - started[0]
        clear_peak()
        out["download_s"] = timed(lambda: FileRef(infos[0].url).download(dest))
        out["download_mb"] = peak_mb()
        assert os.path.getsize(dest) == infos[0].size == size, (dest, infos[0].size)
        os.unlink(dest)

    for part in (floor, service) if order == "floor-first" else (service, floor):
        part()
    print(json.dumps(out))
""")

RAW_COPY = textwrap.dedent("""
    import os, socket, sys, time
    BUFFER = 1024 * 1024
    if sys.argv[1] == "receive":
        listener = socket.create_server(("127.0.0.1", 0))
        print(listener.getsockname()[1], flush=True)
        conn, _ = listener.accept()
        buffer = bytearray(BUFFER)
        view = memoryview(buffer)
        with open(sys.argv[2], "wb") as out:
            while n := conn.recv_into(buffer):
                out.write(view[:n])
        conn.sendall(b"k")
        conn.close()
    else:
        os.sync()
        started = time.perf_counter()
        with socket.create_connection(("127.0.0.1", int(sys.argv[2]))) as conn, \\
                open(sys.argv[3], "rb") as src:
            while chunk := src.read(BUFFER):
                conn.sendall(chunk)
            conn.shutdown(socket.SHUT_WR)
            assert conn.recv(1) == b"k"
        print(time.perf_counter() - started)
""")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _stop(process: subprocess.Popen[Any]) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(20)


@contextlib.contextmanager
def _floor_server() -> Iterator[str]:
    """The bare Starlette JSON endpoint in its own uvicorn process; yields its URL."""
    port = _free_port()
    process = subprocess.Popen([sys.executable, "-c", FLOOR_APP, str(port)])
    try:
        deadline = time.monotonic() + 60
        while True:
            if process.poll() is not None:
                raise RuntimeError("the floor server exited at start")
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                    break
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError("the floor server did not listen within 60 s") from None
                time.sleep(0.05)
        yield f"http://127.0.0.1:{port}"
    finally:
        _stop(process)


@contextlib.contextmanager
def _postgres(folder: Path) -> Iterator[str | None]:
    """A throw-away PostgreSQL on 127.0.0.1 (``scripts/test-postgres.sh``), its URL; None,
    with the reason on stderr, where the machine cannot start one."""
    from hqs_sdk_server.testing import postgres_missing, running_postgres

    reason = ("BENCH_REST_SQLITE_ONLY is set" if os.environ.get("BENCH_REST_SQLITE_ONLY")
              else postgres_missing())
    if reason:
        print(f"rest: no PostgreSQL figures: {reason}", file=sys.stderr)
        yield None
        return
    script = Path(__file__).resolve().parents[1] / "scripts" / "test-postgres.sh"
    with running_postgres(folder, script) as url:
        yield url


@contextlib.contextmanager
def _service(folder: Path, database_url: str | None = None) -> Iterator[tuple[Any, str]]:
    """The real service, executions queued behind --max-running 1; yields it and a token.
    ``database_url``: a PostgreSQL server, on which it gets a new database (else SQLite).

    Every execution is cancelled before it stops, so no worker outlives it.
    """
    from hqs_sdk_server.testing import new_database, running_service

    database = new_database(database_url) if database_url else None
    with running_service(folder, max_running=1, database_url=database) as service:
        token = service.token("bench")
        try:
            yield service, token
        finally:
            _cancel_all(service.url, token)


def _cancel_all(url: str, token: str, timeout: float = 300.0) -> None:
    """Cancel the queued executions, then the running ones (so none starts in between)."""
    from hqs_sdk_rest import Client

    client = Client(url=url, token=token)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        left = 0
        for state in ("queued", "running"):
            ids = [info.id for info in client.executions(state=state, page_size=1000)]
            left += len(ids)
            for execution_id in ids:
                client.cancel(execution_id)
        if not left:
            return
        time.sleep(0.2)
    raise RuntimeError(f"executions of {url} still active after {timeout:.0f} s")


def _percentile(values: list[float], p: int) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[p - 1]


# -- 1. submissions ----------------------------------------------------------------------------


def _submissions(folder: Path, floor_url: str, blocks: int, per_block: int,
                 database_url: str | None = None) -> dict[str, Any]:
    from hqs_sdk_rest import Client

    from hqs_sdk import wire
    from hqs_sdk.serialization import converter
    from hqs_sdk.testing import tasks
    from hqs_sdk.testing.backend_contract import make_request

    with _service(folder, database_url) as (service, token):
        client = Client(url=service.url, token=token)
        session = client.session
        count = blocks * per_block + 5
        requests_ = [make_request(tasks.sleep, seconds=SLEEP_S + i / 1000) for i in range(count)]
        bodies = [converter.unstructure(wire.SubmitBody([r])) for r in requests_]
        headers = {"Content-Type": "application/json"}

        def floor_one(body: Any) -> None:
            data = json.dumps(body, separators=(",", ":"))
            reply = session.post(floor_url + "/submit", data=data, headers=headers, timeout=30)
            reply.raise_for_status()
            reply.json()

        for i in range(5):  # connections, imports, the first execution starting
            floor_one(bodies[i])
            client.submit([requests_[i]])
        times: dict[str, list[float]] = {"service": [], "floor": []}
        for block in range(blocks):
            chunk = range(5 + block * per_block, 5 + (block + 1) * per_block)
            for i in chunk:
                started = time.perf_counter()
                client.submit([requests_[i]])
                times["service"].append(time.perf_counter() - started)
            for i in chunk:
                started = time.perf_counter()
                floor_one(bodies[i])
                times["floor"].append(time.perf_counter() - started)
    return {name: {"rate": len(values) / sum(values), "p50": _percentile(values, 50),
                   "p99": _percentile(values, 99), "count": len(values)}
            for name, values in times.items()}


# -- 2. polling ----------------------------------------------------------------------------------


def _polling(folder: Path, floor_url: str, pending: int, rounds: int,
             database_url: str | None = None) -> dict[str, Any]:
    with _service(folder, database_url) as (service, token):
        out = subprocess.run([sys.executable, "-c", POLL, service.url, token, floor_url,
                              str(pending), str(rounds), str(SLEEP_S)],
                             check=True, capture_output=True, text=True, timeout=900).stdout
    return json.loads(out.strip().splitlines()[-1])


# -- 3. files ------------------------------------------------------------------------------------


def _write_file(path: Path, size: int) -> None:
    block = os.urandom(MiB)
    with open(path, "wb") as f:
        for i in range(size // MiB):
            f.write(i.to_bytes(8, "little") + block[8:])  # no two blocks alike


def _raw_copy(source: Path, dest: Path) -> float:
    receiver = subprocess.Popen([sys.executable, "-c", RAW_COPY, "receive", str(dest)],
                                stdout=subprocess.PIPE, text=True)
    try:
        assert receiver.stdout is not None
        port = receiver.stdout.readline().strip()
        out = subprocess.run([sys.executable, "-c", RAW_COPY, "send", port, str(source)],
                             check=True, capture_output=True, text=True, timeout=600).stdout
        receiver.wait(60)
    finally:
        _stop(receiver)
        dest.unlink(missing_ok=True)
    return float(out)


def _drop_cached(folder: Path) -> None:
    """Take the service's stored files out of the page cache, as the floor's files are
    deleted, so that every repeat starts with the same page cache. On this VM, writing a new
    1 GiB file took 0.4 s with nothing else cached and 2.6 s once 2 GiB of other files were
    (a plain write loop, no service involved); with each repeat's upload kept cached, the
    download of the next one, which writes such a file, got slower and slower."""
    os.sync()
    for blob in folder.rglob("*"):
        if blob.is_file():
            fd = os.open(blob, os.O_RDONLY)
            try:
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            finally:
                os.close(fd)


def _vm(pid: int, field: str) -> float:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(status.split(f"{field}:")[1].split()[0]) / 1024


def _files(folder: Path, floor_url: str, size: int, repeats: int) -> dict[str, Any]:
    folder.mkdir(parents=True)
    source = folder / "data.bin"
    _write_file(source, size)
    raw: list[float] = []
    transfers: list[dict[str, Any]] = []
    try:
        with _service(folder / "service") as (service, token):
            assert service.process is not None
            pid = service.process.pid
            service_start_mb = _vm(pid, "VmHWM")
            for i in range(repeats):
                # New content each time, as most uploads are (the service would otherwise find
                # it has the content already, and drop the new copy once it has hashed it)...
                with open(source, "r+b") as f:
                    f.write(f"repeat {i:08d}".encode())
                raw.append(_raw_copy(source, folder / "raw.bin"))
                # ... and a new name, or the client would remember it sent this file.
                named = folder / f"data-{i}.bin"
                os.link(source, named)
                try:
                    out = subprocess.run(
                        [sys.executable, "-c", TRANSFER, service.url, token, str(named),
                         str(folder / "down.bin"), floor_url, str(folder / "floor.bin"),
                         "floor-first" if i % 2 else "service-first"],
                        check=True, capture_output=True, text=True, timeout=1200).stdout
                finally:
                    named.unlink()
                    for left in ("down.bin", "floor.bin"):
                        (folder / left).unlink(missing_ok=True)
                    _drop_cached(service.data_dir / "files" / "blobs")
                transfers.append(json.loads(out.strip().splitlines()[-1]))
            service_mb = _vm(pid, "VmHWM")
            raw.append(_raw_copy(source, folder / "raw.bin"))
    finally:
        source.unlink(missing_ok=True)
    best = {key: min(t[key] for t in transfers)
            for key in ("upload_s", "hashed_s", "download_s", "floor_upload_s",
                        "floor_download_s")}
    return {"raw_s": min(raw), **best,
            "client_mb": max(max(t["upload_mb"], t["download_mb"]) for t in transfers),
            "service_mb": service_mb, "service_start_mb": service_start_mb}


# -- the figures ---------------------------------------------------------------------------------


def _request_rows(database: str, submitted: dict[str, Any], polled: dict[str, Any],
                  pending: int) -> list[dict[str, Any]]:
    """The figures of the submissions and the polling rounds on one database."""
    service, bare = submitted["service"], submitted["floor"]
    return [
        result(f"rest{database}: submissions/s ({service['count']}, one per request)",
               service["rate"], "/s", bare["rate"], 0.7,
               f"floor = bare Starlette JSON endpoint, same uvicorn: p50 "
               f"{bare['p50'] * 1000:.2f} ms, p99 {bare['p99'] * 1000:.2f} ms",
               at_least=True),
        result(f"rest{database}: submission latency p99", service["p99"] * 1000, "ms", None,
               5.0, f"p50 {service['p50'] * 1000:.2f} ms"),
        result(f"rest{database}: requests per poll round ({pending:,} pending)",
               polled["requests"] / polled["rounds"], "", None, 1.0,
               f"{polled['rounds']} rounds of {polled['sizes']} ids: {polled['paths']}"),
        result(f"rest{database}: states round for {pending:,} ids", polled["round_s"] * 1000,
               "ms", polled["floor_s"] * 1000, 2.0,
               f"floor = bare endpoint answering {pending:,} ids; the service's reply alone "
               f"(read as plain JSON) {polled['reply_s'] * 1000:.1f} ms, "
               f"{polled['reply_s'] / polled['floor_s']:.2f}x; {pending:,} submitted via "
               f"hqs_sdk.submit in {polled['submit_s']:.1f} s, "
               f"{polled['submit_requests']} requests; client peak {polled['peak_mb']:.0f} MB"),
    ]


def run(samples: int) -> list[dict[str, Any]]:
    quick = samples < 21
    blocks, per_block = samples, 20
    pending, rounds = 1000, (10 if quick else 30)
    size = (256 if quick else 1024) * MiB
    repeats = 1 if quick else 7
    records = []
    with tempfile.TemporaryDirectory(prefix="bench-rest-") as tmp, _floor_server() as floor:
        folder = Path(tmp)
        submitted = _submissions(folder / "submit", floor, blocks, per_block)
        polled = _polling(folder / "poll", floor, pending, rounds)
        records += _request_rows("", submitted, polled, pending)
        with _postgres(folder / "postgres") as postgres:
            if postgres is not None:
                submitted = _submissions(folder / "pg-submit", floor, blocks, per_block,
                                         postgres)
                polled = _polling(folder / "pg-poll", floor, pending, rounds, postgres)
                records += _request_rows(" (PostgreSQL)", submitted, polled, pending)
        moved = _files(folder / "files", floor, size, repeats)

    mib = size / MiB
    raw_rate = mib / moved["raw_s"]
    size_name = f"{size // MiB} MiB" if size < 1024 * MiB else f"{size // (1024 * MiB)} GiB"
    return [
        *records,
        result(f"rest: upload {size_name} (Client.upload)", mib / moved["upload_s"], "MiB/s",
               raw_rate, 0.5, f"floor = raw socket copy file->file over 127.0.0.1, "
               f"{moved['raw_s']:.2f} s", at_least=True),
        result(f"rest: upload {size_name}, against Starlette", mib / moved["upload_s"], "MiB/s",
               mib / moved["floor_upload_s"], None, "floor = bare Starlette endpoint writing "
               f"the body to a file, {moved['floor_upload_s']:.2f} s"),
        result(f"rest: upload {size_name} until the service has hashed it",
               mib / moved["hashed_s"], "MiB/s", raw_rate, None,
               "floor = raw socket copy; the upload is answered before the hash"),
        result(f"rest: download {size_name} (FileRef.download)", mib / moved["download_s"],
               "MiB/s", raw_rate, 0.5, at_least=True),
        result(f"rest: download {size_name}, against Starlette", mib / moved["download_s"],
               "MiB/s", mib / moved["floor_download_s"], None, "floor = bare Starlette "
               f"FileResponse (1 MiB pieces), {moved['floor_download_s']:.2f} s"),
        result(f"rest: client peak RSS, {size_name} up and down", moved["client_mb"], "MB",
               None, 100.0, "VmHWM of the client process"),
        result(f"rest: service peak RSS, {size_name} up and down", moved["service_mb"], "MB",
               None, 100.0, f"VmHWM; {moved['service_start_mb']:.0f} MB after start-up"),
    ]
