"""The durable Fly token cache: one Fernet-encrypted file, its key next to it, both 0600.

Files (in ``atlas_nb.config.data_dir()``, itself created 0700):

* ``fly_tokens.key``: a Fernet key (``cryptography``), created on first write;
* ``fly_tokens.enc``: the encrypted JSON ``{"version": 1, "entries": {name: entry}}``
  where an entry is ``{"token", "source", "expires_at"}`` (epoch seconds or null).

Threat model (also in docs/fly.md): the key lives beside the data, so encryption
protects against the file being *copied on its own* (a backup, a synced folder, a
support bundle, ``grep -r`` for tokens, a file accidentally committed) and keeps
tokens out of plain-text scans. It does **not** protect against anyone or anything
that can read your user's files: such a reader has the key too. File modes keep
other local users out. Only tokens atlas_nb mints (``fly tokens create readonly``,
short-lived) and manual tokens you ask to persist are written; the personal token
in ``~/.fly/config.yml`` is never copied here.

A store that cannot be decrypted or parsed (corrupt file, lost key) is replaced by
an empty one with a ``TokenStoreWarning``; it is a cache, never a reason to fail.
"""

from __future__ import annotations

import contextlib
import json
import os
import stat
import threading
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

__all__ = ["TokenStore", "TokenStoreWarning"]

_VERSION = 1


class TokenStoreWarning(UserWarning):
    """The token store was unreadable and has been recreated empty."""


def _write_private(path: Path, data: bytes) -> None:
    """Atomically replace ``path`` with ``data``, mode 0600 from the first byte."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o600)  # O_CREAT's mode is filtered by the umask; be exact
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise


class TokenStore:
    """Encrypted name -> token entries on disk. Thread-safe; every call reads the file.

    Args:
        directory: where the two files live (default ``config.data_dir()``).
        clock: epoch seconds, for expiry (injectable in tests).
    """

    KEY_FILE = "fly_tokens.key"
    DATA_FILE = "fly_tokens.enc"

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

    # -- public API --------------------------------------------------------------------
    def get(self, name: str) -> dict[str, Any] | None:
        """The live entry ``{"token", "source", "expires_at"}`` for ``name``, or ``None``.

        An expired entry is deleted and reported as missing.
        """
        with self._lock:
            entries = self._load()
            entry = entries.get(name)
            if entry is None:
                return None
            expires = entry.get("expires_at")
            if isinstance(expires, (int, float)) and expires <= self._clock():
                del entries[name]
                self._save(entries)
                return None
            return dict(entry)

    def put(self, name: str, token: str, *, source: str, expires_at: float | None) -> None:
        """Store (replace) one entry."""
        with self._lock:
            entries = self._load()
            entries[name] = {"token": token, "source": source, "expires_at": expires_at}
            self._save(entries)

    def delete(self, name: str) -> bool:
        """Remove one entry; ``True`` if it existed."""
        with self._lock:
            entries = self._load()
            if entries.pop(name, None) is None:
                return False
            self._save(entries)
            return True

    def delete_where(self, predicate: Callable[[str], bool]) -> int:
        """Remove every entry whose name matches; how many went."""
        with self._lock:
            entries = self._load()
            doomed = [name for name in entries if predicate(name)]
            for name in doomed:
                del entries[name]
            if doomed:
                self._save(entries)
            return len(doomed)

    def names(self) -> list[str]:
        """The stored entry names (never the tokens)."""
        with self._lock:
            return sorted(self._load())

    def clear(self) -> None:
        """Delete both files."""
        with self._lock:
            for path in (self.data_path, self.key_path):
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()

    # -- internals (called with the lock held) ------------------------------------------
    def _fernet(self, *, create: bool) -> Any:
        from cryptography.fernet import Fernet

        path = self.key_path
        try:
            key = path.read_bytes().strip()
        except FileNotFoundError:
            if not create:
                return None
            key = Fernet.generate_key()
            _write_private(path, key)
            return Fernet(key)
        _tighten(path)
        return Fernet(key)  # a malformed key raises ValueError: treated as corrupt

    def _load(self) -> dict[str, dict[str, Any]]:
        path = self.data_path
        if not path.exists():
            return {}
        from cryptography.fernet import InvalidToken

        try:
            _tighten(path)
            fernet = self._fernet(create=False)
            if fernet is None:
                raise ValueError("the key file is missing")
            doc = json.loads(fernet.decrypt(path.read_bytes()))
            entries = doc["entries"]
            if doc.get("version") != _VERSION or not isinstance(entries, dict):
                raise ValueError("unexpected layout")
            return {str(k): v for k, v in entries.items()
                    if isinstance(v, dict) and isinstance(v.get("token"), str)}
        except (InvalidToken, ValueError, KeyError, TypeError, OSError) as exc:
            warnings.warn(
                f"the Fly token store {path} could not be read ({type(exc).__name__}); "
                "recreating it empty (cached tokens will be fetched again)",
                TokenStoreWarning, stacklevel=4,
            )
            for stale in (path, self.key_path):
                with contextlib.suppress(OSError):
                    stale.unlink()
            return {}

    def _save(self, entries: dict[str, dict[str, Any]]) -> None:
        fernet = self._fernet(create=True)
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
