"""The ledger id: six random hex digits naming one ledger, kept in its own small file.

Every compute a ledger's orchestrators create carries the id (in its name, and in the
cloud's metadata where there is some), and the reaper acts only on computes carrying its
own id. So the id must outlive the database: it lives in ``ledger_id`` beside the ledger
file, and recreating a deleted ledger or moving a corrupt one aside leaves it alone.
Otherwise every live compute would turn foreign at once and never be reaped.

The file is written whole under a unique temporary name, then hard-linked into place:
``link`` fails with ``EEXIST`` exactly like ``O_EXCL`` does, and a reader never sees a
half-written id. Two kernels starting together both try; the loser reads the winner's id.
"""

from __future__ import annotations

import os
import re
import secrets
from pathlib import Path

from ..errors import UnknownError

__all__ = ["ID_FILENAME", "is_ledger_id", "read_or_create", "restore"]

ID_FILENAME = "ledger_id"
_ID = re.compile(r"[0-9a-f]{6}")


def is_ledger_id(text: str) -> bool:
    """Whether ``text`` has the form of a ledger id (six lowercase hex digits)."""
    return _ID.fullmatch(text) is not None


def read_or_create(directory: Path) -> str:
    """The id in ``directory/ledger_id``, created (mode 0600) if there is none yet."""
    path = directory / ID_FILENAME
    try:
        found = _read(path)
        if found is None:
            directory.mkdir(parents=True, exist_ok=True, mode=0o700)
            _publish(path, secrets.token_hex(3))
            found = _read(path)  # ours, or the one another process linked first
    except OSError as exc:
        raise _unusable(path, exc) from None
    if found is None:
        raise UnknownError(f"the orchestrator ledger id file {path} could not be created")
    return found


def restore(directory: Path, ledger_id: str) -> str:
    """Put ``ledger_id`` back if the id file has vanished (the data dir was wiped while a
    process that knows the id runs); returns the id now on disk."""
    path = directory / ID_FILENAME
    found = _read(path)
    if found is not None:
        return found
    try:
        directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        _publish(path, ledger_id)
    except OSError as exc:
        raise _unusable(path, exc) from None
    return _read(path) or ledger_id


def _read(path: Path) -> str | None:
    try:
        text = path.read_text(encoding="ascii").strip()
    except FileNotFoundError:
        return None
    except UnicodeDecodeError:
        text = ""
    if not is_ledger_id(text):
        # Never replace it silently: a new id would make every live compute foreign.
        raise UnknownError(
            f"the orchestrator ledger id file {path} is damaged (it should hold six hex "
            "digits); restore it from the names of your computes (atlas-<id>-...), or delete "
            "it to start a new id (computes named with the old one are then reported as "
            "foreign, never reaped)")
    return text


def _unusable(path: Path, exc: OSError) -> UnknownError:
    return UnknownError(
        f"the orchestrator ledger id file {path} cannot be opened ({exc.strerror or exc}); fix "
        "the data dir's permissions or point ATLAS_NB_DATA_DIR elsewhere")


def _publish(path: Path, ledger_id: str) -> bool:
    """Link a complete file holding ``ledger_id`` to ``path``; False if one exists."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w", encoding="ascii") as f:
            f.write(ledger_id + "\n")
            f.flush()
            os.fsync(f.fileno())
        try:
            os.link(tmp, path)
        except FileExistsError:
            return False
        except OSError:  # a filesystem without hard links: O_EXCL on the file itself
            return _create_in_place(path, ledger_id)
        return True
    finally:
        tmp.unlink(missing_ok=True)


def _create_in_place(path: Path, ledger_id: str) -> bool:
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return False
    with os.fdopen(fd, "w", encoding="ascii") as f:
        f.write(ledger_id + "\n")
    return True
