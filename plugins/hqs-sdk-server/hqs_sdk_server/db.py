"""The service's database: tables (SQLAlchemy Core), the engine, and migrations to the newest.

SQLite (the default, one file in the data folder) and PostgreSQL (``--database-url``) use the
same tables. The schema is changed only by migrations (Alembic scripts in
``hqs_sdk_server/migrations/versions``), applied when the service starts.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import sqlalchemy as sa

__all__ = ["executions", "files", "make_engine", "masked", "metadata", "migrate", "tokens",
           "users"]

metadata = sa.MetaData()

users = sa.Table(
    "users", metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("name", sa.String(200), nullable=False, unique=True),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
)

tokens = sa.Table(
    "tokens", metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("user_id", sa.Integer, sa.ForeignKey("users.id"), nullable=False),
    # SHA-256 of the token: the token itself is shown once and never stored.
    sa.Column("token_hash", sa.String(64), nullable=False, unique=True),
    sa.Column("label", sa.String(200), nullable=False, server_default=""),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
)

executions = sa.Table(
    "executions", metadata,
    sa.Column("seq", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("user_id", sa.Integer, sa.ForeignKey("users.id"), nullable=False),
    # The client's execution_id (its idempotency key), unique per user.
    sa.Column("id", sa.String(200), nullable=False),
    # The id the execution has in the service's own backend (unique across users).
    sa.Column("run_id", sa.String(64), nullable=False, unique=True),
    sa.Column("task_name", sa.String(200), nullable=False),
    sa.Column("task_version", sa.String(100), nullable=False),
    sa.Column("state", sa.String(20), nullable=False),
    sa.Column("request", sa.Text, nullable=False),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("started_at", sa.DateTime(timezone=True), nullable=True),
    sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
    sa.Column("message", sa.Text, nullable=False, server_default=""),
    sa.Column("progress", sa.Text, nullable=True),
    # The backend's handle once submitted there; NULL while waiting for a free slot.
    sa.Column("handle", sa.Text, nullable=True),
    sa.Column("cancel_requested", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.Column("response", sa.Text, nullable=True),
    sa.UniqueConstraint("user_id", "id", name="uq_executions_user_id"),
    sa.Index("ix_executions_state", "state"),
    sa.Index("ix_executions_user_task", "user_id", "task_name", "seq"),
)

files = sa.Table(
    "files", metadata,
    # A random id: the URL names the file by it, and a signature covers it and the owner.
    sa.Column("id", sa.String(32), primary_key=True),
    sa.Column("user_id", sa.Integer, sa.ForeignKey("users.id"), nullable=False),
    # The content is stored once per SHA-256 (in the blobs folder), whoever owns it. NULL for
    # an upload the service has not hashed yet: its content is in files/staged/<id> meanwhile.
    sa.Column("sha256", sa.String(64), nullable=True),
    sa.Column("size", sa.BigInteger, nullable=False),
    sa.Column("name", sa.String(255), nullable=False),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Index("ix_files_user_content_name", "user_id", "sha256", "name"),
    sa.Index("ix_files_unhashed", "sha256", sqlite_where=sa.text("sha256 IS NULL"),
             postgresql_where=sa.text("sha256 IS NULL")),
)


def _sqlite_pragmas(dbapi_connection: Any, _: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


def masked(url: str) -> str:
    """``url`` with its password replaced by ``***``: what logs and messages may show."""
    try:
        return sa.engine.make_url(url).render_as_string(hide_password=True)
    except (sa.exc.ArgumentError, ValueError):
        scheme, sep, _rest = url.partition("://")
        return f"{scheme}{sep}***" if sep else "***"


def make_engine(url: str) -> sa.Engine:
    """An engine for ``url``; SQLite gets WAL, a busy timeout and foreign keys. A URL that
    cannot be read is a ValueError whose message hides the password."""
    try:
        sa.engine.make_url(url)
    except (sa.exc.ArgumentError, ValueError):
        raise ValueError(f"cannot read the database URL {masked(url)!r}: give a SQLAlchemy URL "
                         "such as postgresql+psycopg://user@host/db") from None
    if url.startswith("sqlite"):
        engine = sa.create_engine(url, connect_args={"check_same_thread": False},
                                  pool_size=8, max_overflow=8)
        sa.event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    return sa.create_engine(url, pool_size=8, max_overflow=8, pool_pre_ping=True)


def migrate(engine: sa.Engine, revision: str = "head") -> None:
    """Bring the schema to the newest migration, or to ``revision`` (creating it in an empty
    database)."""
    from alembic import command
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(Path(__file__).parent / "migrations"))
    # Every serve and token command migrates at start: several at once on a new database
    # would each create the tables. One at a time, under a lock; the next finds it done.
    with _migration_file_lock(engine), engine.begin() as connection:
        if engine.dialect.name == "postgresql":  # held until this transaction ends
            connection.execute(sa.text("SELECT pg_advisory_xact_lock(:key)"),
                               {"key": _MIGRATION_LOCK_KEY})
        config.attributes["connection"] = connection
        command.upgrade(config, revision)


#: The PostgreSQL advisory lock migrations run under (the scheduler's is another key).
_MIGRATION_LOCK_KEY = 0x6871_7364_6B01


@contextlib.contextmanager
def _migration_file_lock(engine: sa.Engine) -> Iterator[None]:
    """An exclusive flock on ``<database file>.migrate.lock`` for a SQLite file (nothing for
    other databases, or SQLite in memory)."""
    database = engine.url.database if engine.dialect.name == "sqlite" else None
    if not database or database == ":memory:" or database.startswith("file:"):
        yield
        return
    fd = os.open(f"{database}.migrate.lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock
