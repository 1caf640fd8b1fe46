"""Find the Fly apps of a project: every ``fly.toml`` and its top-level ``app`` name.

``discover_apps(path, max_depth=1)`` looks at ``path/fly.toml`` and at the
``fly.toml`` of each sub-folder down to ``max_depth`` levels. It parses TOML with
``tomllib`` (never regexes) and reads only the top-level ``app`` key, so an
``app = "..."`` inside a ``[processes]`` table is not mistaken for the app name.
Hidden and vendored folders (``.git``, ``node_modules``, ``.venv``...) are
skipped; symlinked folders are followed but each real folder is visited once,
so a symlink loop ends. An unreadable folder or a malformed ``fly.toml`` is
skipped with a ``FlyAppsWarning``, never an exception.
"""

from __future__ import annotations

import os
import tomllib
import warnings
from pathlib import Path

from ..errors import ValidationError

__all__ = ["SKIPPED_DIRS", "FlyAppsWarning", "discover_apps"]

SKIPPED_DIRS: frozenset[str] = frozenset(
    {
        "node_modules", "bower_components", "vendor", "deps", "_build", "__pycache__",
        "venv", "env", "site-packages", "dist", "build", "target",
    }
)
"""Vendored or generated folder names never searched (hidden ``.*`` folders are skipped too)."""


class FlyAppsWarning(UserWarning):
    """A folder or ``fly.toml`` that ``discover_apps`` had to skip."""


def _app_name(toml_path: Path) -> str | None:
    """The top-level ``app`` of one ``fly.toml``, or ``None`` (with a warning) if unusable."""
    try:
        with toml_path.open("rb") as fh:
            doc = tomllib.load(fh)
    except tomllib.TOMLDecodeError as exc:
        warnings.warn(f"skipping {toml_path}: not valid TOML ({exc})", FlyAppsWarning,
                      stacklevel=3)
        return None
    except (OSError, UnicodeDecodeError) as exc:
        warnings.warn(f"skipping {toml_path}: cannot read it ({type(exc).__name__})",
                      FlyAppsWarning, stacklevel=3)
        return None
    app = doc.get("app")
    if not isinstance(app, str) or not app.strip():
        warnings.warn(f"skipping {toml_path}: no top-level `app = \"name\"`", FlyAppsWarning,
                      stacklevel=3)
        return None
    return app.strip()


def discover_apps(path: str | os.PathLike[str], max_depth: int = 1) -> list[tuple[str, Path]]:
    """Every ``(app_name, folder)`` under ``path``, sorted by name then folder.

    Args:
        path: the project folder.
        max_depth: how many folder levels below ``path`` to search (0: ``path`` only).

    Raises:
        ValidationError: ``path`` is not a folder, or ``max_depth`` is not an int >= 0.
    """
    if not _is_depth(max_depth):
        raise ValidationError(f"max_depth must be an int >= 0, not {max_depth!r}")
    root = Path(path).expanduser()
    if not root.is_dir():
        raise ValidationError(f"discover_apps: {root} is not a folder; pass a project folder")
    found: list[tuple[str, Path]] = []
    seen: set[tuple[int, int]] = set()
    stack: list[tuple[Path, int]] = [(root, 0)]
    while stack:
        folder, depth = stack.pop()
        try:
            st = folder.stat()  # follows symlinks: the real folder's identity
        except OSError as exc:
            warnings.warn(f"skipping {folder}: cannot read it ({type(exc).__name__})",
                          FlyAppsWarning, stacklevel=2)
            continue
        ident = (st.st_dev, st.st_ino)
        if ident in seen:  # a symlink loop, or two links to one folder
            continue
        seen.add(ident)
        toml_path = folder / "fly.toml"
        if toml_path.is_file():
            name = _app_name(toml_path)
            if name is not None:
                found.append((name, folder))
        if depth >= max_depth:
            continue
        try:
            with os.scandir(folder) as entries:
                children = [
                    Path(e.path) for e in entries
                    if not e.name.startswith(".") and e.name not in SKIPPED_DIRS
                    and _is_dir(e)
                ]
        except OSError as exc:
            warnings.warn(f"skipping {folder}: cannot list it ({type(exc).__name__})",
                          FlyAppsWarning, stacklevel=2)
            continue
        stack.extend((child, depth + 1) for child in sorted(children, reverse=True))
    return sorted(found, key=lambda item: (item[0], str(item[1])))


def _is_dir(entry: os.DirEntry[str]) -> bool:
    try:
        return entry.is_dir()  # follows symlinks; loops are caught by the inode set
    except OSError:
        return False


def _is_depth(value: object) -> bool:
    return type(value) is int and value >= 0
