"""flyctl's own config file (``~/.fly/config.yml``): where ``fly auth login`` keeps its token.

A missing or malformed file is a *miss*, never a crash (the reason goes to the
``atlas_nb.fly`` log, never the token).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from pathlib import Path

__all__ = ["fly_config_path", "read_config_token"]

_log = logging.getLogger("atlas_nb.fly")


def fly_config_path(env: Mapping[str, str] | None = None) -> Path:
    """flyctl's config file: ``$FLY_CONFIG_DIR/config.yml``, else ``~/.fly/config.yml``."""
    env = os.environ if env is None else env
    configured = env.get("FLY_CONFIG_DIR")
    base = Path(configured).expanduser() if configured else Path.home() / ".fly"
    return base / "config.yml"


def read_config_token(path: Path) -> str | None:
    """``access_token`` from flyctl's YAML config, or ``None``."""
    import yaml

    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as exc:
        _log.warning("fly config %s unreadable (%s); skipping it", path, type(exc).__name__)
        return None
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError:
        _log.warning("fly config %s is not valid YAML; skipping it", path)
        return None
    token = doc.get("access_token") if isinstance(doc, dict) else None
    if not isinstance(token, str) or not token.strip():
        return None
    return token.strip()
