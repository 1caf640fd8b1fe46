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

The ledger's id (``Ledger.ledger_id``, see ``ledger_id``) lives in its own file beside
it. Damage is repaired as it is met (see ``ledger_repair``): a ledger deleted while in use
is recreated with the open entries, a corrupt one is moved aside and started fresh.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sqlite3
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from ..errors import UnknownError
from . import ledger_id as ids
from . import ledger_repair as repair
from .ledger_repair import LedgerWarning
from .ledger_schema import _SCHEMA as _SCHEMA  # tests build old ledgers from it
from .ledger_schema import SCHEMA_VERSION, apply_migrations, migrate, schema_version
from .owner import Owner

__all__ = [
    "FILENAME", "SCHEMA_VERSION", "Ledger", "LedgerEntry", "LedgerState", "LedgerWarning",
    "SessionRow", "configured_providers", "current_target", "migrate", "schema_version",
    "write_or_log",
]

FILENAME = "orchestrator.sqlite3"
LedgerState = Literal["live", "terminated", "terminate_failed"]
_PRUNE_AFTER_S = 30 * 86400  # closed entries older than this are deleted
_CHUNK = 500  # SQLite's default limit on host parameters is 999
_log = logging.getLogger("atlas_nb.orchestrator")

_COLUMNS = ("name, provider, compute_id, session_id, host, owner_pid, owner_start, user_id, "
            "state, created_at, terminated_at, reason, error, cost_per_hour, attempts, target, "
            "account, legacy")


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
    account: str | None = None
    """A non-secret fingerprint of the cloud account it was created in (``None``: unknown,
    e.g. recorded by a version before the schema had it)."""
    legacy: bool = False
    """Recorded before ledger ids existed (schema < 3): its name carries no ledger id, but
    the ledger created it, so the reaper treats a compute of that name as its own."""

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
        self._identity: tuple[int, int] | None = None  # the file self._conn has open
        self._id: str | None = None

    def __repr__(self) -> str:
        return f"Ledger({str(self.path)!r})"

    @property
    def ledger_id(self) -> str:
        """This ledger's id: six hex digits from ``<ledger dir>/ledger_id`` (created on
        first use). Every compute the ledger's orchestrators create carries it."""
        with self._lock:
            if self._id is None:
                self._id = ids.read_or_create(self.path.parent)
            return self._id

    @property
    def recovered_from(self) -> Path | None:
        """Where a corrupt predecessor of this ledger was moved aside, for 30 days after;
        else ``None``. While set, the reaper lists every configured provider: the fresh
        ledger no longer knows which providers hold its computes."""
        note = repair.recovery_note(self._read(repair.RECOVERY_NOTE_SQL))
        if note is None or note[1] < _now_floor():
            return None
        return note[0]

    # -- connection -------------------------------------------------------------------
    def _connect(self) -> sqlite3.Connection:
        if self._conn is not None and self._pid == os.getpid():
            # Before every read and write: does the path still name the file we have open?
            # (A deleted ledger would otherwise take our writes where nobody can see them.)
            if repair.identity(self.path) == self._identity:
                return self._conn
            return self._reopen_replaced(self._conn)
        # After a fork the parent's connection must not be used (SQLite's rule); open anew.
        return self._open()

    def _open(self) -> sqlite3.Connection:
        try:
            found = self._create_file()
            try:
                conn = self._open_file()
            except sqlite3.DatabaseError as exc:
                if not repair.is_corruption(exc):
                    raise
                conn, found = self._start_fresh(exc, found)
        except (OSError, sqlite3.Error) as exc:
            raise UnknownError(
                f"the orchestrator ledger {self.path} cannot be opened ({exc}); fix the data "
                "dir's permissions or point ATLAS_NB_DATA_DIR elsewhere"
            ) from None
        self._conn, self._pid, self._identity = conn, os.getpid(), found
        return conn

    def _create_file(self) -> tuple[int, int]:
        """Create the file 0600 if missing; the (device, inode) of the file now there."""
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            st = os.fstat(fd)
            if st.st_mode & 0o077:  # made by someone else, too open: fix it
                os.chmod(self.path, 0o600)
        finally:
            os.close(fd)
        return st.st_dev, st.st_ino

    def _open_file(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, timeout=15.0, isolation_level=None,
                               check_same_thread=False)
        try:
            conn.execute("PRAGMA busy_timeout = 15000")
            conn.execute("PRAGMA journal_mode = WAL")
            conn.execute("PRAGMA synchronous = NORMAL")  # WAL: survives process crashes
            repair.quick_check(conn)
            apply_migrations(conn)
            conn.execute("DELETE FROM computes WHERE state = 'terminated' AND terminated_at < ?",
                         (_now_floor(),))
        except BaseException:
            conn.close()
            raise
        return conn

    def _start_fresh(self, exc: sqlite3.DatabaseError, damaged: tuple[int, int]
                     ) -> tuple[sqlite3.Connection, tuple[int, int]]:
        """The file ``damaged`` names is damaged: move it aside, warn, open a fresh one."""
        aside = repair.move_aside(self.path, damaged)
        found = self._create_file()
        conn = self._open_file()  # a second failure is not corruption we can fix
        if aside is not None:  # (None: another process did it, and warned its user)
            repair.note_recovery(conn, aside, time.time())
            _log.warning("orchestrator ledger %s was damaged (%s); moved aside to %s",
                         self.path, exc, aside)
            repair.warn_corrupt(self.path, aside, exc)
        return conn, found

    def _reopen_replaced(self, old: sqlite3.Connection) -> sqlite3.Connection:
        """The path no longer names our file (deleted, or replaced): carry what we knew
        that is still open into the file at the path, so no other process reaps it."""
        try:
            saved: repair.Salvage | None = repair.salvage(old)
        except sqlite3.Error as exc:  # the old file is unreadable too: nothing to carry
            _log.warning("orchestrator ledger %s: the replaced file is unreadable (%s)",
                         self.path, exc)
            saved = None
        # Closing does not checkpoint or delete "<path>-wal" once the file has moved
        # (SQLite compares the path's inode with its descriptor), so the new file is safe.
        old.close()
        self._conn = None
        conn = self._open()
        if self._id is not None:  # the data dir was wiped: put our id back
            ids.restore(self.path.parent, self._id)
        if saved is not None:
            try:
                repair.merge(conn, saved)
            except sqlite3.Error as exc:
                raise UnknownError(f"the orchestrator ledger {self.path} was replaced and "
                                   f"its open entries cannot be carried over ({exc})") from None
        _log.warning("orchestrator ledger %s was deleted or replaced while in use; recreated "
                     "it with the %d open entries this process knew", self.path,
                     saved.open_entries if saved else 0)
        return conn

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            conn = self._connect()
            try:
                conn.execute("BEGIN IMMEDIATE")
            except sqlite3.DatabaseError as exc:
                self._forget_if_corrupt(exc)
                raise
            try:
                yield conn
            except BaseException as exc:
                with contextlib.suppress(sqlite3.Error):  # keep the original error
                    conn.execute("ROLLBACK")
                self._forget_if_corrupt(exc)
                raise
            conn.execute("COMMIT")

    def _read(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        with self._lock:
            try:
                return self._connect().execute(sql, params).fetchall()
            except sqlite3.DatabaseError as exc:
                if not self._forget_if_corrupt(exc):
                    raise
            # Damaged since we opened it: reopening checks it, moves it aside, starts fresh.
            return self._connect().execute(sql, params).fetchall()

    def _forget_if_corrupt(self, exc: BaseException) -> bool:
        """Drop a connection whose file turned out damaged, so the next use repairs it."""
        if not repair.is_corruption(exc) or self._conn is None:
            return False
        with contextlib.suppress(sqlite3.Error):
            self._conn.close()
        self._conn = None
        return True

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
                      cost_per_hour: float | None = None, account: str | None = None) -> None:
        """Before the create: the name, the provider, who owns it, where it lives and in
        which account (``account``: a non-secret fingerprint, never a key)."""
        with self._write() as db:
            db.execute(
                f"INSERT INTO computes ({_COLUMNS}) VALUES "
                "(?, ?, NULL, ?, ?, ?, ?, ?, 'live', ?, NULL, NULL, NULL, ?, 0, ?, ?, 0)",
                (name, provider, session_id, owner.host, owner.pid, owner.start, user_id, now,
                 cost_per_hour, current_target(), account),
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
                      reason: str, error: str | None = None, account: str | None = None
                      ) -> None:
        """A resource no entry knew, terminated by the reaper (``error``: the terminate
        failed, so it is kept as ``terminate_failed`` and retried)."""
        state = "terminated" if error is None else "terminate_failed"
        with self._write() as db:
            db.execute(
                f"INSERT OR IGNORE INTO computes ({_COLUMNS}) VALUES "
                "(?, ?, ?, '', '', 0, NULL, NULL, ?, ?, ?, ?, ?, NULL, 0, ?, ?, 0)",
                (name, provider, compute_id, state, now, now if error is None else None, reason,
                 error, current_target(), account),
            )

    def entry(self, name: str) -> LedgerEntry | None:
        """One entry by name."""
        rows = self._read(f"SELECT {_COLUMNS} FROM computes WHERE name = ?", (name,))
        return _entry(rows[0]) if rows else None

    def open_entries(self, providers: Iterable[str] | None = None, *,
                     target: str | None = None) -> list[LedgerEntry]:
        """Entries still ``live`` or ``terminate_failed``, optionally of some providers and
        of one target (``""``: the real clouds; a sandbox URL)."""
        rows = self._read(f"SELECT {_COLUMNS} FROM computes WHERE state != 'terminated' "
                          "AND (? IS NULL OR target = ?) ORDER BY created_at", (target, target))
        wanted = set(providers) if providers is not None else None
        return [e for e in map(_entry, rows) if wanted is None or e.provider in wanted]

    def pending_entries(self, session_id: str | None = None) -> list[LedgerEntry]:
        """Open entries with no compute id yet: recorded before the create, which then
        failed, was lost, or never returned. Shutdown and the reaper resolve them by name.
        ``session_id`` keeps one session's."""
        rows = self._read(f"SELECT {_COLUMNS} FROM computes WHERE state != 'terminated' AND "
                          "compute_id IS NULL AND (? IS NULL OR session_id = ?) "
                          "ORDER BY created_at", (session_id, session_id))
        return [_entry(r) for r in rows]

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
    values = list(row)
    values[-1] = bool(values[-1])  # legacy: stored as 0 or 1
    return LedgerEntry(*values)


def _now_floor() -> float:
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


def current_target() -> str:
    """``""`` for the real clouds, or the URL of the sandbox this process talks to."""
    from .. import sandbox

    return sandbox.active_url() or ""


def configured_providers() -> set[str]:
    """Every real provider that has a key here: the reaper's scope after the ledger was
    started fresh from corruption, since the fresh ledger no longer names its providers."""
    from .. import config, providers

    return {n for n in providers.names(keyed=True, offline=False)
            if config.key_source(n) is not None}
