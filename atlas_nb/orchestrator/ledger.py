"""The durable ledger: a small SQLite file recording every tracked spawn and its end.

It lives at ``config.data_dir()/orchestrator.sqlite3`` with mode 0600, in WAL mode
(so kernels in separate processes read while one writes), with a busy timeout for
concurrent writers. A spawn is recorded *before* the provider is called (state
``live``, no id yet: the name is known upfront), gets its id after the create, and
ends as ``terminated`` or ``terminate_failed``. A process killed at any point
leaves either nothing (the intent was never committed, so nothing was created) or
an entry the reaper can act on: by id, or by name when the id never got written.

States: ``live`` (tracked, or owned by a process that may be dead), ``terminated``,
``terminate_failed`` (every retry failed; the reaper keeps trying).
"""

from __future__ import annotations

import logging
import os
import sqlite3
import threading
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from ..errors import UnknownError
from .owner import Owner

__all__ = [
    "FILENAME", "SCHEMA_VERSION", "Ledger", "LedgerEntry", "LedgerState", "SessionRow",
    "current_target", "migrate", "schema_version", "write_or_log",
]

FILENAME = "orchestrator.sqlite3"
LedgerState = Literal["live", "terminated", "terminate_failed"]
_PRUNE_AFTER_S = 30 * 86400  # closed entries older than this are deleted
_CHUNK = 500  # SQLite's default limit on host parameters is 999
_log = logging.getLogger("atlas_nb.orchestrator")

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
_COLUMNS = ("name, provider, compute_id, session_id, host, owner_pid, owner_start, user_id, "
            "state, created_at, terminated_at, reason, error, cost_per_hour, attempts, target")


@dataclass(frozen=True)
class LedgerEntry:
    """One recorded spawn. ``compute_id`` is ``None`` until the create answered."""

    name: str
    provider: str
    compute_id: str | None
    session_id: str
    host: str
    owner_pid: int
    owner_start: str | None
    user_id: str | None
    state: LedgerState
    created_at: float
    terminated_at: float | None
    reason: str | None
    error: str | None
    cost_per_hour: float | None
    attempts: int
    target: str = ""
    """Where the compute lives: ``""`` for the real clouds, else the sandbox URL."""

    @property
    def owner(self) -> Owner:
        """The process that spawned it."""
        return Owner(host=self.host, pid=self.owner_pid, start=self.owner_start)


@dataclass(frozen=True)
class SessionRow:
    """One orchestrator session as recorded."""

    session_id: str
    owner: Owner
    started_at: float
    seen_at: float
    ended_at: float | None


class Ledger:
    """The SQLite ledger at ``path`` (created 0600 on first use). Thread and process safe."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self._lock = threading.RLock()
        self._conn: sqlite3.Connection | None = None
        self._pid = 0

    def __repr__(self) -> str:
        return f"Ledger({str(self.path)!r})"

    # -- connection -------------------------------------------------------------------
    def _connect(self) -> sqlite3.Connection:
        if self._conn is not None and self._pid == os.getpid():
            return self._conn
        # After a fork the parent's connection must not be used (SQLite's rule); open anew.
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            os.close(os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600))
            if os.stat(self.path).st_mode & 0o077:  # made by someone else, too open: fix it
                os.chmod(self.path, 0o600)
            conn = sqlite3.connect(self.path, timeout=15.0, isolation_level=None,
                                   check_same_thread=False)
            conn.execute("PRAGMA busy_timeout = 15000")
            conn.execute("PRAGMA journal_mode = WAL")
            conn.execute("PRAGMA synchronous = NORMAL")  # WAL: survives process crashes
            _apply_migrations(conn)
            conn.execute("DELETE FROM computes WHERE state = 'terminated' AND terminated_at < ?",
                         (_now_floor(),))
        except (OSError, sqlite3.Error) as exc:
            raise UnknownError(
                f"the orchestrator ledger {self.path} cannot be opened ({exc}); fix the data "
                "dir's permissions or point ATLAS_NB_DATA_DIR elsewhere"
            ) from None
        self._conn, self._pid = conn, os.getpid()
        return conn

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            conn = self._connect()
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")

    def _read(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        with self._lock:
            return self._connect().execute(sql, params).fetchall()

    def close(self) -> None:
        """Close this process's connection (it reopens on next use)."""
        with self._lock:
            if self._conn is not None and self._pid == os.getpid():
                self._conn.close()
            self._conn = None

    # -- sessions ---------------------------------------------------------------------
    def open_session(self, session_id: str, owner: Owner, now: float) -> None:
        """Record (or refresh) a session owned by ``owner``."""
        with self._write() as db:
            db.execute(
                "INSERT INTO sessions (session_id, host, pid, pid_start, started_at, seen_at) "
                "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (session_id) DO UPDATE SET host = "
                "excluded.host, pid = excluded.pid, pid_start = excluded.pid_start, "
                "seen_at = excluded.seen_at, ended_at = NULL",
                (session_id, owner.host, owner.pid, owner.start, now, now),
            )

    def touch_session(self, session_id: str, now: float) -> None:
        """Note that the session is alive at ``now``."""
        with self._write() as db:
            db.execute("UPDATE sessions SET seen_at = ? WHERE session_id = ?", (now, session_id))

    def end_session(self, session_id: str, now: float) -> None:
        """Note a clean end (its open entries, if any, stay open for the reaper)."""
        with self._write() as db:
            db.execute("UPDATE sessions SET ended_at = ? WHERE session_id = ?", (now, session_id))

    def sessions(self) -> dict[str, SessionRow]:
        """Every recorded session, by id."""
        rows = self._read("SELECT session_id, host, pid, pid_start, started_at, seen_at, ended_at "
                          "FROM sessions")
        return {r[0]: SessionRow(r[0], Owner(r[1], r[2], r[3]), r[4], r[5], r[6]) for r in rows}

    # -- computes ---------------------------------------------------------------------
    def record_intent(self, *, name: str, provider: str, session_id: str, owner: Owner,
                      now: float, user_id: str | None = None,
                      cost_per_hour: float | None = None) -> None:
        """Before the create: the name, the provider, who owns it and where it lives."""
        with self._write() as db:
            db.execute(
                f"INSERT INTO computes ({_COLUMNS}) VALUES "
                "(?, ?, NULL, ?, ?, ?, ?, ?, 'live', ?, NULL, NULL, NULL, ?, 0, ?)",
                (name, provider, session_id, owner.host, owner.pid, owner.start, user_id, now,
                 cost_per_hour, current_target()),
            )

    def record_created(self, name: str, compute_id: str, cost_per_hour: float | None) -> None:
        """After the create answered: the id (and the provider's price)."""
        with self._write() as db:
            db.execute("UPDATE computes SET compute_id = ?, cost_per_hour = COALESCE(?, "
                       "cost_per_hour) WHERE name = ?", (compute_id, cost_per_hour, name))

    def record_terminated(self, name: str, now: float, reason: str | None) -> None:
        """The compute is gone upstream (or was never created)."""
        with self._write() as db:
            db.execute("UPDATE computes SET state = 'terminated', terminated_at = ?, reason = "
                       "COALESCE(?, reason), error = NULL WHERE name = ?", (now, reason, name))

    def record_terminate_failed(self, name: str, now: float, reason: str | None,
                                error: str) -> None:
        """Every retry failed; the entry stays open so a later reap retries it."""
        with self._write() as db:
            db.execute("UPDATE computes SET state = 'terminate_failed', error = ?, reason = "
                       "COALESCE(?, reason), attempts = attempts + 1 WHERE name = ? AND state "
                       "!= 'terminated'", (error[:500], reason, name))

    def record_reaped(self, *, name: str, provider: str, compute_id: str, now: float,
                      reason: str, error: str | None = None) -> None:
        """A resource no entry knew, terminated by the reaper (``error``: the terminate
        failed, so it is kept as ``terminate_failed`` and retried)."""
        state = "terminated" if error is None else "terminate_failed"
        with self._write() as db:
            db.execute(
                f"INSERT OR IGNORE INTO computes ({_COLUMNS}) VALUES "
                "(?, ?, ?, '', '', 0, NULL, NULL, ?, ?, ?, ?, ?, NULL, 0, ?)",
                (name, provider, compute_id, state, now, now if error is None else None, reason,
                 error, current_target()),
            )

    def entry(self, name: str) -> LedgerEntry | None:
        """One entry by name."""
        rows = self._read(f"SELECT {_COLUMNS} FROM computes WHERE name = ?", (name,))
        return LedgerEntry(*rows[0]) if rows else None

    def open_entries(self, providers: Iterable[str] | None = None, *,
                     target: str | None = None) -> list[LedgerEntry]:
        """Entries still ``live`` or ``terminate_failed``, optionally of some providers and
        of one target (``""``: the real clouds; a sandbox URL)."""
        rows = self._read(f"SELECT {_COLUMNS} FROM computes WHERE state != 'terminated' "
                          "AND (? IS NULL OR target = ?) ORDER BY created_at", (target, target))
        wanted = set(providers) if providers is not None else None
        return [e for e in map(_entry, rows) if wanted is None or e.provider in wanted]

    def entries(self) -> list[LedgerEntry]:
        """Every entry, oldest first (for inspection and tests)."""
        return [_entry(r) for r in self._read(f"SELECT {_COLUMNS} FROM computes "
                                              "ORDER BY created_at")]

    def states_by_name(self, names: Iterable[str]) -> dict[str, LedgerEntry]:
        """The entries (any state) of the given names."""
        out: dict[str, LedgerEntry] = {}
        batch = list(names)
        for i in range(0, len(batch), _CHUNK):
            chunk = batch[i:i + _CHUNK]
            marks = ",".join("?" * len(chunk))
            for row in self._read(f"SELECT {_COLUMNS} FROM computes WHERE name IN ({marks})",
                                  chunk):
                out[row[0]] = _entry(row)
        return out

    def providers(self) -> set[str]:
        """Every provider the ledger mentions (what the reaper lists by default)."""
        return {r[0] for r in self._read("SELECT DISTINCT provider FROM computes")}

    # -- first sightings (grace period for resources with no created_at) ---------------
    def first_seen(self, provider: str, compute_ids: Iterable[str], now: float, *,
                   record: bool = True) -> dict[str, float]:
        """When each resource was first seen by a reaper here; ``record`` notes the new
        ones as seen ``now`` (a dry run only reads)."""
        ids = list(compute_ids)
        if not ids:
            return {}
        with self._write() as db:
            if record:
                db.executemany("INSERT OR IGNORE INTO sightings VALUES (?, ?, ?)",
                               [(provider, cid, now) for cid in ids])
            out: dict[str, float] = {}
            for i in range(0, len(ids), _CHUNK):
                chunk = ids[i:i + _CHUNK]
                marks = ",".join("?" * len(chunk))
                out.update(db.execute(
                    f"SELECT compute_id, first_seen FROM sightings WHERE provider = ? AND "
                    f"compute_id IN ({marks})", [provider, *chunk]).fetchall())
        return out


def _entry(row: Sequence[Any]) -> LedgerEntry:
    return LedgerEntry(*row)


def _now_floor() -> float:
    import time

    return time.time() - _PRUNE_AFTER_S


def write_or_log(fn: Any, *args: Any, **kwargs: Any) -> bool:
    """Run a ledger write; log (never raise) a failure. For writes after the fact, where
    the cloud call already happened and a ledger error must not hide its result."""
    try:
        fn(*args, **kwargs)
    except (sqlite3.Error, UnknownError) as exc:
        _log.warning("orchestrator ledger write failed: %s", exc)
        return False
    return True


# Versioned migrations, recorded in SQLite's ``user_version``. Version 1 is the baseline
# schema; a ledger from before versioning reads as 0 and is brought up by the same steps
# (each is idempotent). Append ``(N, "SQL")`` to change the schema; never edit a shipped step.
SCHEMA_VERSION = 2
_MIGRATIONS: tuple[tuple[int, str], ...] = (
    (1, _SCHEMA),
    # 2: where each compute lives, so a sandbox session never judges real-cloud entries
    # (a real pod would 404 in the sandbox and be forgotten while it still bills).
    (2, "ALTER TABLE computes ADD COLUMN target TEXT NOT NULL DEFAULT ''"),
)


def current_target() -> str:
    """``""`` for the real clouds, or the URL of the sandbox this process talks to."""
    from .. import sandbox

    return sandbox.active_url() or ""


def _apply_migrations(conn: sqlite3.Connection) -> int:
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
        return _apply_migrations(conn)
    finally:
        conn.close()
