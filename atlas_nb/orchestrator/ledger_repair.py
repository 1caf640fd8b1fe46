"""The ledger under damage: a file deleted while processes use it, or a corrupt one.

*Deleted.* SQLite keeps writing to an unlinked file through its open descriptor, so a
process whose ledger was deleted would record its spawns where nobody else can read
them, and another process's reaper would then end its live computes as unknown. The
ledger notices (the path no longer names the file it has open: ``identity`` differs),
``salvage``-s the open entries, the sessions and the sightings through the still-open
old connection, and ``merge``-s them into the file now at the path (created anew, or
already recreated by another process: ``INSERT OR IGNORE`` keeps what is there).

*Corrupt.* A file that is not a database, or that fails ``PRAGMA quick_check`` on open,
is renamed ``<name>.corrupt-<UTC time>`` (never deleted: it is the only record of what
it knew), its WAL beside it, and a fresh ledger starts. ``note_recovery`` writes where
the old one went into the fresh ledger, so every process's reaper widens its scope to
every configured provider: the fresh ledger no longer knows which providers to list.
The ledger id lives in its own file (``ledger_id``) and survives both.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = [
    "RECOVERY_NOTE_SQL", "Corrupt", "LedgerWarning", "Salvage", "identity", "is_corruption",
    "merge", "move_aside", "note_recovery", "quick_check", "recovery_note", "salvage",
    "warn_corrupt",
]

# SQLite's primary result codes for a damaged file (https://sqlite.org/rescode.html).
_SQLITE_CORRUPT, _SQLITE_NOTADB = 11, 26
_TABLES = (("computes", "state != 'terminated'"), ("sessions", "1"), ("sightings", "1"),
           ("meta", "1"))


class LedgerWarning(UserWarning):
    """The orchestrator ledger was damaged and has been repaired (shown once, on stderr)."""


class Corrupt(sqlite3.DatabaseError):
    """``PRAGMA quick_check`` found damage in a file SQLite could still open."""


def is_corruption(exc: BaseException) -> bool:
    """Whether ``exc`` says the file is damaged (not busy, locked or unwritable)."""
    if isinstance(exc, Corrupt):
        return True
    if not isinstance(exc, sqlite3.DatabaseError) or isinstance(exc, sqlite3.OperationalError):
        return False
    code = getattr(exc, "sqlite_errorcode", None)
    if code is not None:
        return code & 0xFF in (_SQLITE_CORRUPT, _SQLITE_NOTADB)
    text = str(exc)
    return "not a database" in text or "malformed" in text


def quick_check(conn: sqlite3.Connection) -> None:
    """Raise ``Corrupt`` unless SQLite's quick check of the whole file passes. The ledger
    is small (closed entries are pruned after 30 days), so this is cheap on open."""
    rows = conn.execute("PRAGMA quick_check").fetchall()
    if [tuple(r) for r in rows] != [("ok",)]:
        raise Corrupt(f"integrity check failed: {'; '.join(str(r[0]) for r in rows[:3])}")


def identity(path: Path) -> tuple[int, int] | None:
    """The (device, inode) the path names now; ``None`` if nothing is there."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None
    return st.st_dev, st.st_ino


# -- deleted while open ------------------------------------------------------------------
@dataclass
class Salvage:
    """Rows read from a deleted ledger's still-open connection, table by table."""

    rows: dict[str, tuple[list[str], list[tuple[Any, ...]]]] = field(default_factory=dict)

    @property
    def open_entries(self) -> int:
        """How many open compute entries were saved."""
        return len(self.rows.get("computes", ([], []))[1])


def salvage(conn: sqlite3.Connection) -> Salvage:
    """The open entries, sessions, sightings and notes of the file ``conn`` has open (one
    read transaction, so they are consistent)."""
    out = Salvage()
    conn.execute("BEGIN")
    try:
        for table, where in _TABLES:
            cur = conn.execute(f"SELECT * FROM {table} WHERE {where}")  # constants only
            out.rows[table] = ([d[0] for d in cur.description], cur.fetchall())
    finally:
        conn.execute("COMMIT")
    return out


def merge(conn: sqlite3.Connection, saved: Salvage) -> None:
    """Insert the salvaged rows into the ledger ``conn`` has open; rows already there
    (another process merged first, or closed the entry since) win."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        for table, (columns, rows) in saved.rows.items():
            if rows:
                marks = ", ".join("?" * len(columns))
                conn.executemany(f"INSERT OR IGNORE INTO {table} ({', '.join(columns)}) "
                                 f"VALUES ({marks})", rows)
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")


# -- corrupt -------------------------------------------------------------------------------
def move_aside(path: Path, found: tuple[int, int] | None) -> Path | None:
    """Rename the damaged ledger (the file ``found`` identifies) and its WAL aside; drop
    its shared-memory index (derived data). ``None`` if another process already did."""
    with _repair_lock(path):
        if found is None or identity(path) != found:
            return None  # moved aside (and perhaps recreated) by another process meanwhile
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
        aside = path.with_name(f"{path.name}.corrupt-{stamp}")
        n = 1
        while aside.exists():
            n += 1
            aside = path.with_name(f"{path.name}.corrupt-{stamp}-{n}")
        os.rename(path, aside)
        wal = path.with_name(path.name + "-wal")
        with contextlib.suppress(FileNotFoundError):
            os.rename(wal, wal.with_name(f"{wal.name}.{aside.name.rsplit('.', 1)[-1]}"))
        path.with_name(path.name + "-shm").unlink(missing_ok=True)
        return aside


def note_recovery(conn: sqlite3.Connection, aside: Path, now: float) -> None:
    """Record in the fresh ledger where the damaged one went, and when."""
    conn.execute("BEGIN IMMEDIATE")
    conn.executemany("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)",
                     [("recovered_from", str(aside)), ("recovered_at", repr(now))])
    conn.execute("COMMIT")


RECOVERY_NOTE_SQL = ("SELECT key, value FROM meta WHERE key IN "
                     "('recovered_from', 'recovered_at')")


def recovery_note(rows: list[Any]) -> tuple[Path, float] | None:
    """Where the damaged ledger went and when (from ``RECOVERY_NOTE_SQL``'s rows), if this
    ledger was started fresh."""
    notes = dict(rows)
    if "recovered_from" not in notes:
        return None
    return Path(notes["recovered_from"]), float(notes.get("recovered_at", "0"))


def warn_corrupt(path: Path, aside: Path, reason: BaseException) -> None:
    """Tell the user, on one line (a notebook shows it on stderr)."""
    why = str(reason).splitlines()[0] if str(reason) else type(reason).__name__
    warnings.warn(
        f"the orchestrator ledger {path} was not a usable database ({why}); moved aside to "
        f"{aside} and started a fresh one; the reaper now lists every configured provider",
        LedgerWarning, stacklevel=5)


@contextlib.contextmanager
def _repair_lock(path: Path) -> Iterator[None]:
    """One repairer at a time across processes (``flock`` on ``<name>.lock``)."""
    try:
        import fcntl
    except ImportError:  # no flock (Windows): the identity check still avoids most races
        yield
        return
    fd = os.open(path.with_name(path.name + ".lock"), os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock
