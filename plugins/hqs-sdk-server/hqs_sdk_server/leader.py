"""Which of several service processes on one database runs the scheduler.

Any number of ``hqs-sdk-server serve`` processes may share a database and data folder (behind a
load balancer, or a second one started by mistake): all of them answer the API, and exactly
one, the holder of a lock, starts and polls executions. The others stand by and take over
within a second or two when the holder stops or dies, as the lock goes with its process.

- SQLite: an exclusive ``flock`` on ``<data folder>/scheduler.lock``.
- PostgreSQL: a session-level advisory lock, held by a connection of its own; if that
  connection breaks, the lock is gone too, so the holder checks it before every round.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
from pathlib import Path
from typing import Any

import sqlalchemy as sa

__all__ = ["Leadership"]

log = logging.getLogger("hqs_sdk_server.scheduler")

#: The advisory lock's key on PostgreSQL (any constant shared by all service processes).
_PG_KEY = 0x6871_7364_6B00  # "hqsdk"


class Leadership:
    """The scheduler lock of one service process; see the module docs."""

    def __init__(self, engine: sa.Engine, data_dir: Path) -> None:
        self.engine = engine
        self.path = data_dir / "scheduler.lock"
        self._fd: int | None = None
        self._connection: Any = None

    def acquire(self) -> bool:
        """Hold the lock (True), or find that another process holds it (False)."""
        if self.engine.dialect.name == "postgresql":
            return self._acquire_advisory()
        if self._fd is not None:
            return True
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._fd = fd
        log.info("this process runs the scheduler (lock %s)", self.path)
        return True

    def _acquire_advisory(self) -> bool:
        if self._connection is not None:
            try:
                self._connection.execute(sa.text("SELECT 1"))
                return True
            except sa.exc.DBAPIError:
                log.warning("lost the database connection that held the scheduler lock")
                self._drop_connection()
        connection = self.engine.connect()
        try:
            got = connection.execute(sa.text("SELECT pg_try_advisory_lock(:key)"),
                                     {"key": _PG_KEY}).scalar()
            connection.commit()
        except sa.exc.DBAPIError:
            connection.close()
            raise
        if not got:
            connection.close()
            return False
        self._connection = connection
        log.info("this process runs the scheduler (PostgreSQL advisory lock)")
        return True

    def _drop_connection(self) -> None:
        with contextlib.suppress(sa.exc.DBAPIError):
            self._connection.invalidate()
        self._connection = None

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the descriptor releases the flock
            self._fd = None
        if self._connection is not None:
            with contextlib.suppress(sa.exc.DBAPIError):
                self._connection.execute(sa.text("SELECT pg_advisory_unlock(:key)"),
                                         {"key": _PG_KEY})
                self._connection.commit()
                self._connection.close()
            self._connection = None
