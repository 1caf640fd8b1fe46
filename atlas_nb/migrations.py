"""Versioned migrations of atlas_nb's files on disk: ``atlas-nb upgrade``.

The config file records its schema as a top-level ``schema_version: N`` (a file without
one is version 0). ``CONFIG_MIGRATIONS`` is the ordered list of ``(version, function)``;
each function takes the parsed config at ``version - 1`` and returns it at ``version``.
``upgrade()`` runs the pending ones and records the new version. Running it again finds
nothing to do.

* A migration that only records the version keeps the file byte for byte apart from the
  ``schema_version`` line, comments included.
* One that changes settings rewrites the file as YAML (comments are lost) after copying
  the original to ``config.yaml.v{N}.bak``.
* A file from a newer atlas_nb (``schema_version`` above ``CONFIG_SCHEMA_VERSION``) is
  refused, never downgraded.

The orchestrator ledger (``atlas_nb.orchestrator.ledger``) owns its own schema. When that
module defines ``migrate(path) -> int`` (upgrade the SQLite file in place, idempotently,
and return its schema version) and ``schema_version(path) -> int``, ``upgrade()`` calls
them; until then it reports that the ledger has no migrations.
"""

from __future__ import annotations

import copy
import os
import re
import stat
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import config
from .errors import ValidationError

__all__ = [
    "CONFIG_MIGRATIONS",
    "CONFIG_SCHEMA_VERSION",
    "Step",
    "config_version",
    "migrate_config",
    "migrate_ledger",
    "upgrade",
]

ConfigMigration = tuple[int, Callable[[dict[str, Any]], dict[str, Any]]]


def _v1_baseline(data: dict[str, Any]) -> dict[str, Any]:
    """Version 1 is the first versioned schema (atlas_nb 0.1): nothing to rewrite."""
    return data


CONFIG_MIGRATIONS: tuple[ConfigMigration, ...] = ((1, _v1_baseline),)
"""Every config migration, in order: ``(version it produces, function)``."""

CONFIG_SCHEMA_VERSION: int = CONFIG_MIGRATIONS[-1][0]
"""The config schema this atlas_nb writes and reads."""

_VERSION_LINE = re.compile(r"^schema_version\s*:.*$", re.MULTILINE)
_PREAMBLE = re.compile(r"^(?:\s*(?:#.*)?|%.*|---\s*)$")  # comments, blanks, YAML directives


@dataclass(frozen=True)
class Step:
    """What ``upgrade`` did (or, in a dry run, would do) to one file."""

    target: str
    """``"config"`` or ``"ledger"``."""
    path: Path
    before: int | None
    """The schema version found (``None``: no file)."""
    after: int | None
    """The schema version recorded afterwards."""
    note: str

    @property
    def changed(self) -> bool:
        """Whether the file's schema version moved."""
        return self.before != self.after

    def line(self) -> str:
        """One human-readable line."""
        return f"{self.target:<7} {self.path}: {self.note}"


def config_version(data: dict[str, Any]) -> int:
    """The ``schema_version`` of a parsed config (0 when absent)."""
    version = data.get("schema_version", 0)
    if isinstance(version, bool) or not isinstance(version, int) or version < 0:
        raise ValidationError(
            f"config schema_version={version!r} must be a non-negative integer; fix it or "
            "delete the line and run `atlas-nb upgrade`"
        )
    return version


def _load(path: Path) -> tuple[str, dict[str, Any]] | None:
    try:
        text = path.read_text(encoding="utf-8")
    except (FileNotFoundError, NotADirectoryError):
        return None
    except (OSError, UnicodeDecodeError) as exc:
        raise ValidationError(f"config file {path} cannot be read ({type(exc).__name__})"
                              ) from None
    import yaml

    try:
        data = yaml.safe_load(text) or {}
    except yaml.YAMLError as exc:
        raise ValidationError(
            f"config file {path} is not valid YAML ({type(exc).__name__}); fix it, then run "
            "`atlas-nb upgrade` again"
        ) from None
    if not isinstance(data, dict):
        raise ValidationError(f"config file {path} must hold a mapping at the top level")
    return text, data


def _stamped(text: str, version: int) -> str:
    """``text`` with its top-level ``schema_version`` line set to ``version``."""
    line = f"schema_version: {version}"
    if _VERSION_LINE.search(text):
        return _VERSION_LINE.sub(line, text, count=1)
    lines = text.splitlines(keepends=True)
    at = 0
    while at < len(lines) and _PREAMBLE.match(lines[at].rstrip("\n")):
        at += 1
    # Insert after the header comments (and a `---`), before the first setting.
    head = "".join(lines[:at])
    if head and not head.endswith("\n"):
        head += "\n"
    return head + line + "\n" + "".join(lines[at:])


def _write(path: Path, text: str) -> None:
    """Replace ``path`` atomically, keeping its permission bits."""
    mode = stat.S_IMODE(path.stat().st_mode)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def migrate_config(
    path: Path | None = None,
    *,
    migrations: Sequence[ConfigMigration] = CONFIG_MIGRATIONS,
    dry_run: bool = False,
) -> Step:
    """Bring the config file at ``path`` (default ``config.config_path()``) to the newest
    schema of ``migrations``; see the module docstring."""
    path = path or config.config_path()
    latest = migrations[-1][0] if migrations else 0
    loaded = _load(path)
    if loaded is None:
        return Step("config", path, None, None,
                    "no config file, nothing to migrate (`atlas-nb init` writes one)")
    text, data = loaded
    before = config_version(data)
    if before > latest:
        raise ValidationError(
            f"config file {path} has schema_version {before}, newer than this atlas_nb "
            f"understands ({latest}); upgrade atlas_nb instead of the file"
        )
    pending = [(v, fn) for v, fn in migrations if v > before]
    if not pending:
        return Step("config", path, before, before, f"schema {before}, up to date")
    migrated = copy.deepcopy(data)
    for version, fn in pending:
        migrated = fn(migrated)
        if not isinstance(migrated, dict):
            raise TypeError(f"config migration to {version} returned {type(migrated).__name__}")
    plan = f"schema {before} -> {latest}"
    if dry_run:
        return Step("config", path, before, before, f"{plan} (dry run: nothing written)")
    migrated["schema_version"] = latest
    unchanged = {**data, "schema_version": latest} == migrated
    new_text = _stamped(text, latest) if unchanged else ""
    if unchanged and _load_text(new_text) == migrated:
        _write(path, new_text)
        return Step("config", path, before, latest, f"{plan} (version recorded)")
    # Settings changed (or the file's layout defeats a one-line edit): rewrite it whole.
    backup = path.with_name(f"{path.name}.v{before}.bak")
    backup.write_text(text, encoding="utf-8")
    os.chmod(backup, stat.S_IMODE(path.stat().st_mode))
    import yaml

    body = {"schema_version": latest, **{k: v for k, v in migrated.items()
                                         if k != "schema_version"}}
    header = (f"# Migrated by `atlas-nb upgrade` from schema {before} to {latest}; "
              f"the previous file is {backup.name}.\n")
    _write(path, header + yaml.safe_dump(body, sort_keys=False, default_flow_style=False))
    return Step("config", path, before, latest, f"{plan} (rewritten; backup {backup.name})")


def _load_text(text: str) -> Any:
    import yaml

    try:
        return yaml.safe_load(text) or {}
    except yaml.YAMLError:
        return None


def migrate_ledger(
    data_dir: Path | None = None, *, dry_run: bool = False, ledger: Any = None
) -> Step:
    """Run the orchestrator ledger's own migration, when it defines one.

    ``ledger`` is the module holding ``FILENAME`` (and, once it has them, ``migrate`` and
    ``schema_version``); default ``atlas_nb.orchestrator.ledger``.
    """
    if ledger is None:
        from .orchestrator import ledger

    path = (data_dir or config.data_dir()) / ledger.FILENAME
    migrate: Callable[[Path], int] | None = getattr(ledger, "migrate", None)
    current: Callable[[Path], int] | None = getattr(ledger, "schema_version", None)
    if not path.exists():
        return Step("ledger", path, None, None,
                    "no ledger yet (created at the current schema on first use)")
    if migrate is None or current is None:
        return Step("ledger", path, None, None,
                    "the ledger defines no migrations (its tables are created if missing)")
    before = current(path)
    if dry_run:
        return Step("ledger", path, before, before, f"schema {before} (dry run: not migrated)")
    after = migrate(path)
    note = f"schema {before} -> {after}" if after != before else f"schema {after}, up to date"
    return Step("ledger", path, before, after, note)


def upgrade(*, dry_run: bool = False) -> list[Step]:
    """Migrate the config file, then the ledger; one ``Step`` each."""
    return [migrate_config(dry_run=dry_run), migrate_ledger(dry_run=dry_run)]
