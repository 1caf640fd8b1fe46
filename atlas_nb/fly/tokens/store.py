"""The durable Fly token cache: one Fernet-encrypted file, its key next to it, both 0600.

Files (in ``atlas_nb.config.data_dir()``, itself created 0700):

* ``fly_tokens.key``: a Fernet key (``cryptography``), created on first write;
* ``fly_tokens.enc``: the encrypted JSON ``{"version": 1, "entries": {name: entry}}``
  where an entry is ``{"token", "source", "expires_at"}`` (epoch seconds or null);
* ``fly_tokens.lock``: empty, the cross-process lock (never deleted while in use).

Threat model (also in docs/fly.md): the key lives beside the data, so encryption
protects against the file being *copied on its own* (a backup, a synced folder, a
support bundle, ``grep -r`` for tokens, a file accidentally committed) and keeps
tokens out of plain-text scans. It does **not** protect against anyone or anything
that can read your user's files: such a reader has the key too. File modes keep
other local users out. Only tokens atlas_nb mints (``fly tokens create readonly``,
short-lived) and manual tokens you ask to persist are written; the personal token
in ``~/.fly/config.yml`` is never copied here.

Concurrency: every call holds an exclusive lock on ``fly_tokens.lock`` (``flock``, beside
the store) around its load-modify-save, so writers in other processes queue instead of
overwriting each other's entries. The key is created exclusively (a complete file linked
into place, failing if one appeared) and re-read on conflict, so racing first writers agree
on one key.

Damage: only data that cannot be decrypted (or a key that is missing or malformed, so
nothing can be) means corruption. Such a file is moved aside as
``<name>.corrupt-<time>`` with a ``TokenStoreWarning`` and the store starts empty; a key
that works is kept. An ``OSError`` (permissions, too many open files, I/O) says nothing
about the contents: the call warns and acts as a miss, and no file is deleted, moved or
written over. The store is a cache, never a reason to fail.
"""

from __future__ import annotations

import contextlib
import json
import os
import stat
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

from .interprocess_lock import exclusive_lock

__all__ = ["TokenStore", "TokenStoreWarning"]

_VERSION = 1
_T = TypeVar("_T")


class TokenStoreWarning(UserWarning):
    """The token store could not be used: moved aside as corrupt, or unreadable for a call."""


class _Corrupt(Exception):
    """The store's contents cannot be decrypted or parsed (never raised for an OSError)."""


def _write_private(path: Path, data: bytes) -> None:
    """Atomically replace ``path`` with ``data``, mode 0600 from the first byte."""
    tmp = _write_tmp(path, data)
    try:
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise


def _create_private(path: Path, data: bytes) -> bool:
    """Create ``path`` holding ``data`` (0600) unless it exists; ``False`` if it did.

    The file is written in full under a temporary name and hard-linked into place: the
    link is an ``O_EXCL`` create that never shows a reader a half-written file.
    """
    tmp = _write_tmp(path, data)
    try:
        try:
            os.link(tmp, path)
            return True
        except FileExistsError:
            return False
        except OSError:  # no hard links on this file system: a plain O_EXCL create
            try:
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            except FileExistsError:
                return False
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
            return True
    finally:
        with contextlib.suppress(OSError):
            tmp.unlink()


def _write_tmp(path: Path, data: bytes) -> Path:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o600)  # O_CREAT's mode is filtered by the umask; be exact
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    return tmp


class TokenStore:
    """Encrypted name -> token entries on disk. Safe across threads and processes; every
    call reads the file under the store's lock.

    Args:
        directory: where the files live (default ``config.data_dir()``).
        clock: epoch seconds, for expiry (injectable in tests).
    """

    KEY_FILE = "fly_tokens.key"
    DATA_FILE = "fly_tokens.enc"
    LOCK_FILE = "fly_tokens.lock"

    def __init__(self, directory: str | os.PathLike[str] | None = None, *,
                 clock: Callable[[], float] = time.time) -> None:
        self._directory = Path(directory) if directory is not None else None
        self._clock = clock
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"TokenStore({str(self.directory)!r})"

    @property
    def directory(self) -> Path:
        """The folder holding the key and the data file (created 0700 on first use)."""
        if self._directory is None:
            from ...config import data_dir

            return data_dir()
        self._directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        return self._directory

    @property
    def key_path(self) -> Path:
        """The Fernet key file."""
        return self.directory / self.KEY_FILE

    @property
    def data_path(self) -> Path:
        """The encrypted data file."""
        return self.directory / self.DATA_FILE

    @property
    def lock_path(self) -> Path:
        """The file every process locks around a load-modify-save."""
        return self.directory / self.LOCK_FILE

    # -- public API --------------------------------------------------------------------
    def get(self, name: str) -> dict[str, Any] | None:
        """The live entry ``{"token", "source", "expires_at"}`` for ``name``, or ``None``.

        An expired entry is deleted and reported as missing.
        """

        def read(entries: dict[str, dict[str, Any]]) -> dict[str, Any] | None:
            entry = entries.get(name)
            if entry is None:
                return None
            expires = entry.get("expires_at")
            if isinstance(expires, (int, float)) and expires <= self._clock():
                del entries[name]
                self._save(entries)
                return None
            return dict(entry)

        return self._transaction(read, None, "treated as a miss")

    def put(self, name: str, token: str, *, source: str, expires_at: float | None) -> None:
        """Store (replace) one entry. When the store cannot be read or written right now,
        warn and leave it as it was (the token is not saved)."""

        def write(entries: dict[str, dict[str, Any]]) -> None:
            entries[name] = {"token": token, "source": source, "expires_at": expires_at}
            self._save(entries)

        self._transaction(write, None, "this token was not saved")

    def delete(self, name: str) -> bool:
        """Remove one entry; ``True`` if it existed."""

        def drop(entries: dict[str, dict[str, Any]]) -> bool:
            if entries.pop(name, None) is None:
                return False
            self._save(entries)
            return True

        return self._transaction(drop, False, "nothing was deleted")

    def delete_where(self, predicate: Callable[[str], bool]) -> int:
        """Remove every entry whose name matches; how many went."""

        def drop(entries: dict[str, dict[str, Any]]) -> int:
            doomed = [name for name in entries if predicate(name)]
            for name in doomed:
                del entries[name]
            if doomed:
                self._save(entries)
            return len(doomed)

        return self._transaction(drop, 0, "nothing was deleted")

    def names(self) -> list[str]:
        """The stored entry names (never the tokens)."""
        return self._transaction(lambda entries: sorted(entries), [], "treated as empty")

    def clear(self) -> None:
        """Delete the key, the data and any copies moved aside as corrupt."""
        with self._locked():
            doomed = [self.data_path, self.key_path]
            for prefix in (self.DATA_FILE, self.KEY_FILE):
                doomed += self.directory.glob(f"{prefix}.corrupt-*")
            for path in doomed:
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()

    # -- internals ---------------------------------------------------------------------
    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        # The thread lock first: cheaper than a second flock on the same process's fds.
        with self._lock, exclusive_lock(self.lock_path):
            yield

    def _transaction(self, body: Callable[[dict[str, dict[str, Any]]], _T], fallback: _T,
                     consequence: str) -> _T:
        """Run ``body`` on the entries with the lock held; ``fallback`` on an OSError.

        An OSError (permissions, too many open files, a full disk, I/O) says nothing about
        the contents: the files stay exactly as they are, and the caller gets a miss.
        """
        try:
            with self._locked():
                return body(self._load())
        except OSError as exc:
            reason = f"{type(exc).__name__}: {exc.strerror or exc}"
            warnings.warn(
                f"the Fly token store in {self._directory or 'the data dir'} cannot be used "
                f"right now ({reason}); {consequence}, its files left in place",
                TokenStoreWarning, stacklevel=3,
            )
            return fallback

    def _read_key(self) -> bytes | None:
        try:
            key = self.key_path.read_bytes().strip()
        except FileNotFoundError:
            return None
        _tighten(self.key_path)
        return key

    def _fernet(self, key: bytes) -> Any:
        from cryptography.fernet import Fernet

        try:
            return Fernet(key)
        except ValueError as exc:  # not 32 url-safe base64 bytes
            raise _Corrupt("the key file is malformed") from exc

    def _writing_fernet(self) -> Any:
        """The store's key, created (exclusively) if there is none; a malformed one is
        moved aside first."""
        from cryptography.fernet import Fernet

        for _ in range(5):  # at most: malformed, moved aside, created, read back
            key = self._read_key()
            if key is not None:
                try:
                    return self._fernet(key)
                except _Corrupt as exc:
                    self._move_aside(self.key_path, str(exc))
                    continue
            # Created, or another process created it between our read and our create:
            # either way use what is on disk, so racing creators agree on one key.
            _create_private(self.key_path, Fernet.generate_key())
        raise OSError(f"the key file {self.key_path} keeps changing")

    def _load(self) -> dict[str, dict[str, Any]]:
        """The entries (called with the lock held). Corrupt files are moved aside and the
        store starts empty; an OSError propagates with nothing changed."""
        path = self.data_path
        try:
            _tighten(path)
            blob = path.read_bytes()
        except FileNotFoundError:
            return {}
        try:
            return self._decode(blob)
        except _Corrupt as exc:
            self._move_aside(path, str(exc))
            return {}

    def _decode(self, blob: bytes) -> dict[str, dict[str, Any]]:
        from cryptography.fernet import InvalidToken

        key = self._read_key()
        if key is None:
            raise _Corrupt("its key file is missing")
        try:
            fernet = self._fernet(key)
        except _Corrupt:
            self._move_aside(self.key_path, "the key file is malformed")
            raise
        try:
            doc = json.loads(fernet.decrypt(blob))
        except InvalidToken as exc:
            raise _Corrupt("it does not decrypt with its key") from exc
        except ValueError as exc:  # decrypted, but not JSON
            raise _Corrupt("it decrypts to something that is not JSON") from exc
        entries = doc.get("entries") if isinstance(doc, dict) else None
        if not isinstance(doc, dict) or doc.get("version") != _VERSION \
                or not isinstance(entries, dict):
            raise _Corrupt(f"it has an unexpected layout (version "
                           f"{doc.get('version') if isinstance(doc, dict) else None!r})")
        return {str(k): v for k, v in entries.items()
                if isinstance(v, dict) and isinstance(v.get("token"), str)}

    def _move_aside(self, path: Path, why: str) -> None:
        """Rename a corrupt file out of the way (kept, 0600) and say where it went."""
        stamp = time.strftime("%Y%m%dT%H%M%S")
        aside = path.with_name(f"{path.name}.corrupt-{stamp}")
        n = 1
        while aside.exists():
            aside = path.with_name(f"{path.name}.corrupt-{stamp}-{n}")
            n += 1
        os.rename(path, aside)
        warnings.warn(
            f"the Fly token store file {path} could not be used ({why}); moved aside to "
            f"{aside}, starting empty (cached tokens will be fetched again)",
            TokenStoreWarning, stacklevel=5,
        )

    def _save(self, entries: dict[str, dict[str, Any]]) -> None:
        fernet = self._writing_fernet()
        blob = json.dumps({"version": _VERSION, "entries": entries}).encode()
        _write_private(self.data_path, fernet.encrypt(blob))


def _tighten(path: Path) -> None:
    """Make sure a store file is 0600 (someone may have copied it with a looser mode)."""
    try:
        mode = stat.S_IMODE(path.stat().st_mode)
        if mode & 0o077:
            os.chmod(path, 0o600)
    except FileNotFoundError:
        pass
