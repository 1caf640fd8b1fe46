"""The ledger's schema and its versioned migrations (SQLite's ``user_version``).

Version 1 is the baseline schema; a ledger from before versioning reads as 0 and is
brought up by the same steps. Append ``(N, "SQL")`` to ``_MIGRATIONS`` to change the
schema; never edit a shipped step: files in the field were migrated by it.
"""

from __future__ import annotations

import os
import sqlite3

__all__ = ["SCHEMA_VERSION", "apply_migrations", "migrate", "schema_version"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS sessions (
    session_id TEXT PRIMARY KEY,
    host TEXT NOT NULL,
    pid INTEGER NOT NULL,
    pid_start TEXT,
    started_at REAL NOT NULL,
    seen_at REAL NOT NULL,
    ended_at REAL
);
CREATE TABLE IF NOT EXISTS computes (
    name TEXT PRIMARY KEY,
    provider TEXT NOT NULL,
    compute_id TEXT,
    session_id TEXT NOT NULL,
    host TEXT NOT NULL,
    owner_pid INTEGER NOT NULL,
    owner_start TEXT,
    user_id TEXT,
    state TEXT NOT NULL CHECK (state IN ('live', 'terminated', 'terminate_failed')),
    created_at REAL NOT NULL,
    terminated_at REAL,
    reason TEXT,
    error TEXT,
    cost_per_hour REAL,
    attempts INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS computes_open ON computes (state) WHERE state != 'terminated';
CREATE INDEX IF NOT EXISTS computes_by_id ON computes (provider, compute_id);
CREATE TABLE IF NOT EXISTS sightings (
    provider TEXT NOT NULL,
    compute_id TEXT NOT NULL,
    first_seen REAL NOT NULL,
    PRIMARY KEY (provider, compute_id)
);
"""


SCHEMA_VERSION = 3
_MIGRATIONS: tuple[tuple[int, str], ...] = (
    (1, _SCHEMA),
    # 2: where each compute lives, so a sandbox session never judges real-cloud entries
    # (a real pod would 404 in the sandbox and be forgotten while it still bills).
    (2, "ALTER TABLE computes ADD COLUMN target TEXT NOT NULL DEFAULT ''"),
    # 3: the account each compute was created in (the reaper acts only with matching
    # credentials); ``legacy`` adopts what older versions created: those names carry no
    # ledger id, but they are in this ledger, so they are ours. ``meta`` holds notes such
    # as where a corrupt predecessor was moved aside.
    (3, "ALTER TABLE computes ADD COLUMN account TEXT; "
        "ALTER TABLE computes ADD COLUMN legacy INTEGER NOT NULL DEFAULT 0; "
        "UPDATE computes SET legacy = 1; "
        "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)"),
)


def apply_migrations(conn: sqlite3.Connection) -> int:
    """Run the steps ``conn``'s file has not had yet; returns the version reached."""
    (current,) = conn.execute("PRAGMA user_version").fetchone()
    if current >= SCHEMA_VERSION:
        return int(current)
    # Kernels start together: one migrator at a time, and each re-reads the version inside
    # the lock, so a step (an ALTER TABLE) never runs twice. executescript() would commit
    # early, so statements run one by one inside the transaction.
    conn.execute("BEGIN IMMEDIATE")
    try:
        (current,) = conn.execute("PRAGMA user_version").fetchone()
        for version, script in _MIGRATIONS:
            if version > current:
                for statement in script.split(";"):
                    if statement.strip():
                        conn.execute(statement)
                conn.execute(f"PRAGMA user_version = {int(version)}")
                current = version
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    return int(current)


def schema_version(path: str | os.PathLike[str]) -> int:
    """The schema version of the ledger file at ``path`` (0: from before versioning)."""
    conn = sqlite3.connect(path, timeout=15.0)
    try:
        (version,) = conn.execute("PRAGMA user_version").fetchone()
        return int(version)
    finally:
        conn.close()


def migrate(path: str | os.PathLike[str]) -> int:
    """Bring the ledger at ``path`` to ``SCHEMA_VERSION``; returns the version reached."""
    conn = sqlite3.connect(path, timeout=15.0, isolation_level=None)
    try:
        conn.execute("PRAGMA busy_timeout = 15000")
        return apply_migrations(conn)
    finally:
        conn.close()
