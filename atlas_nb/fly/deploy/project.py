"""The folder a deploy runs in: inside the project, symlinks resolved; and its app's name."""

from __future__ import annotations

import os
import tomllib
from pathlib import Path

from ...errors import ValidationError

__all__ = ["app_name", "resolve_app_dir"]


def resolve_app_dir(project_path: str | os.PathLike[str],
                    app_dir: str | os.PathLike[str]) -> Path:
    """The real folder to deploy from, or a ``ValidationError`` if it leaves the project."""
    try:
        project = Path(project_path).expanduser().resolve(strict=True)
    except (OSError, RuntimeError):
        raise ValidationError(f"project_path {project_path!s} does not exist") from None
    if not project.is_dir():
        raise ValidationError(f"project_path {project} is not a folder")
    candidate = Path(app_dir).expanduser()
    if not candidate.is_absolute():
        candidate = project / candidate
    try:
        target = candidate.resolve(strict=True)  # follows every symlink on the way
    except (OSError, RuntimeError):
        raise ValidationError(f"app_dir {app_dir!s} does not exist under {project}") from None
    if not target.is_relative_to(project):
        raise ValidationError(
            f"app_dir {app_dir!s} resolves to {target}, outside project_path {project}; "
            "pass a folder inside the project"
        )
    if not target.is_dir():
        raise ValidationError(f"app_dir {target} is not a folder")
    return target


def app_name(app_dir: Path) -> str | None:
    """The top-level ``app`` of ``app_dir/fly.toml``, or ``None`` (flyctl reports problems).

    Used to find a per-app token; a missing or malformed file is left for ``fly deploy``
    itself to complain about.
    """
    try:
        with (app_dir / "fly.toml").open("rb") as fh:
            app = tomllib.load(fh).get("app")
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError):
        return None
    return app.strip() if isinstance(app, str) and app.strip() else None
