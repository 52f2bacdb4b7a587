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

__all__ = ["READ_SIZE", "LargeReads"]

READ_SIZE = 1024 * 1024


class LargeReads(HttpToolsProtocol):
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        if isinstance(getattr(transport, "max_size", None), int):
            transport.max_size = READ_SIZE  # type: ignore[attr-defined]
        super().connection_made(transport)  # type: ignore[arg-type]
