"""The HTTP protocol the service runs: uvicorn's httptools protocol, reading 1 MiB at a time.

asyncio's socket transport reads at most 256 KiB per ``recv()`` (its ``max_size``). Each read
is one trip through the event loop, uvicorn's flow control and Starlette's ``receive``, and for
a large upload those trips cost more than the copying: reading 1 MiB at a time made a 1 GiB
upload about a fifth faster (docs/performance.md). ``max_size`` is an attribute of asyncio's
selector transport, not a documented setting, so it is only changed where it exists; on another
event loop (uvloop) the protocol is uvicorn's own.
"""

from __future__ import annotations

import asyncio

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

__all__ = ["MAX_HEAD_BYTES", "READ_SIZE", "GuardedReads", "LargeReads", "protocol_for"]

READ_SIZE = 1024 * 1024


class LargeReads(HttpToolsProtocol):
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        if isinstance(getattr(transport, "max_size", None), int):
            transport.max_size = READ_SIZE  # type: ignore[attr-defined]
        super().connection_made(transport)  # type: ignore[arg-type]


#: Largest request head (request line and headers) the service reads; more is a 431.
MAX_HEAD_BYTES = 64 * 1024
#: A body must bring at least this much in every read-timeout period until it ends.
MIN_BODY_BYTES = 1024


class GuardedReads(LargeReads):
    """:class:`LargeReads` that a slow or hostile client cannot hold for ever.

    uvicorn's httptools protocol has a keep-alive timeout but no timeout on reading a request:
    a client sending a byte a second holds its connection (and, once the head is in, a task of
    the service) as long as it likes, and a head may be as large as memory. Here:

    - the head must arrive within ``read_timeout`` seconds of its first byte (of the
      connection, for the first request), else ``408`` and the connection is closed;
    - a head larger than :data:`MAX_HEAD_BYTES` is answered ``431`` and the connection closed;
    - a body must bring :data:`MIN_BODY_BYTES` in every ``read_timeout`` seconds while the
      service waits for it (not while the service itself holds reading back), else the
      connection is closed and the handler sees the client as gone.
    """

    read_timeout: float = 20.0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._head_timer: asyncio.TimerHandle | None = None
        self._body_timer: asyncio.TimerHandle | None = None
        self._head_bytes: int | None = 0
        self._body_bytes = 0
        self._tail = b""  # the last bytes read: a head's end may be split between reads
        super().connection_made(transport)
        self._arm_head_timer()

    # -- the head ------------------------------------------------------------------------------

    def _arm_head_timer(self) -> None:
        if self._head_timer is None:
            self._head_timer = self.loop.call_later(self.read_timeout, self._refuse,
                                                    b"408 Request Timeout")

    def _refuse(self, status: bytes) -> None:
        self._head_timer = None
        if not self.transport.is_closing():
            self.transport.write(b"HTTP/1.1 " + status + b"\r\ncontent-length: 0\r\n"
                                 b"connection: close\r\n\r\n")
            self.transport.close()

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._head_bytes = 0
        self._arm_head_timer()

    def data_received(self, data: bytes) -> None:
        if self.transport.is_closing():
            return  # refused: what is still buffered is not parsed
        if self._head_bytes is not None:  # in a head: how much of it is in this piece?
            end = (self._tail + data).find(b"\r\n\r\n")
            size = self._head_bytes + (len(data) if end < 0 else end - len(self._tail))
            if size > MAX_HEAD_BYTES:
                self._head_bytes = None
                self._refuse(b"431 Request Header Fields Too Large")
                return
        self._tail = data[-3:]
        super().data_received(data)
        self._body_bytes += len(data)
        if self._head_bytes is not None:
            self._head_bytes += len(data)

    def on_headers_complete(self) -> None:
        self._head_bytes = None
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None
        super().on_headers_complete()
        self._body_bytes = 0
        self._arm_body_timer()

    # -- the body ------------------------------------------------------------------------------

    def _arm_body_timer(self) -> None:
        if self._body_timer is not None:
            self._body_timer.cancel()
        self._body_timer = self.loop.call_later(self.read_timeout, self._check_body)

    def _check_body(self) -> None:
        self._body_timer = None
        cycle = self.cycle
        if cycle is None or not cycle.more_body or cycle.response_complete \
                or self.transport.is_closing():
            return  # the body is in (or the request is over): nothing to wait for
        if self._body_bytes < MIN_BODY_BYTES and not self.flow.read_paused:
            self.transport.close()  # the handler sees a disconnect
            return
        self._body_bytes = 0
        self._arm_body_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        for timer in (self._head_timer, self._body_timer):
            if timer is not None:
                timer.cancel()
        self._head_timer = self._body_timer = None
        super().connection_lost(exc)


def protocol_for(read_timeout: float) -> type[GuardedReads]:
    """The protocol class uvicorn runs, with the service's read timeout."""
    return type("GuardedReads", (GuardedReads,), {"read_timeout": read_timeout})
