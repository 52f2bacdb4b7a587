"""A small web server on 127.0.0.1 for tests of what is fetched (file references, task inputs)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

__all__ = ["Pages", "serving_pages"]

#: Path to (status, headers, body); any other path is a 404.
Pages = dict[str, tuple[int, dict[str, str], bytes]]


@contextmanager
def serving_pages(pages: Pages) -> Iterator[str]:
    """Serve ``pages`` on 127.0.0.1 (a free port) while the block runs; yields the base URL."""
    import http.server
    import threading

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            status, headers, body = pages.get(self.path, (404, {}, b"no such page"))
            self.send_response(status)
            for name, value in {**headers, "Content-Length": str(len(body))}.items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
