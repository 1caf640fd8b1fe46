"""Where a Fly token can come from outside atlas_nb: flyctl's config file and the CLI.

Both are *misses*, never crashes, when they have nothing: a missing or malformed
``config.yml``, a missing ``fly`` binary, a non-zero exit, unexpected output or a
timeout all return ``None`` (the reason goes to the ``atlas_nb.fly`` log, never
the token).
"""

from __future__ import annotations

import json
import logging
import os
import re
from collections.abc import Mapping
from pathlib import Path

from ..errors import ValidationError
from . import flyctl

__all__ = ["fly_config_path", "mint_readonly", "parse_duration", "read_config_token"]

_log = logging.getLogger("atlas_nb.fly")
_DURATION = re.compile(r"(\d+(?:\.\d+)?)(h|m|s)")


def parse_duration(text: object) -> float:
    """Seconds in a Go-style duration (``"24h"``, ``"1h30m"``, ``"90s"``), for ``--expiry``."""
    compact = text.strip().lower() if isinstance(text, str) else ""
    parts = _DURATION.findall(compact)
    if not parts or "".join(n + u for n, u in parts) != compact:
        raise ValidationError(
            f"cannot read the duration {text!r}; write it like '24h', '30m' or '1h30m'"
        )
    scale = {"h": 3600.0, "m": 60.0, "s": 1.0}
    seconds = sum(float(n) * scale[u] for n, u in parts)
    if seconds <= 0:
        raise ValidationError(f"the duration {text!r} must be longer than zero")
    return seconds


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


def mint_readonly(
    *,
    expiry: str,
    org: str | None = None,
    path: str | None = None,
    env: Mapping[str, str] | None = None,
    timeout_s: float = 15.0,
) -> str | None:
    """``fly tokens create readonly [org] --expiry <expiry> --json``: the token, or ``None``.

    Reads stdout only and expects ``{"token": "..."}``. A missing binary, a failure
    to start it, a non-zero exit, a timeout or other output are all misses.
    """
    binary = flyctl.find(path, env)
    if binary is None:
        _log.debug("fly CLI not found on PATH; skipping the CLI token step")
        return None
    argv = [binary, "tokens", "create", "readonly"]
    if org:
        argv.append(org)
    argv += ["--expiry", expiry, "--json"]
    try:
        result = flyctl.run_capture(argv, timeout_s=timeout_s, env=env)
    except OSError as exc:
        _log.warning("could not run %s (%s); skipping the CLI token step",
                     binary, type(exc).__name__)
        return None
    if result.timed_out:
        _log.warning("`fly tokens create readonly` timed out after %.0f s", timeout_s)
        return None
    if result.returncode != 0:
        _log.warning("`fly tokens create readonly` exited %s", result.returncode)
        return None
    try:
        doc = json.loads(result.stdout)
    except ValueError:
        _log.warning("`fly tokens create readonly --json` printed something that is not JSON")
        return None
    token = doc.get("token") if isinstance(doc, dict) else None
    if not isinstance(token, str) or not token.strip():
        _log.warning("`fly tokens create readonly --json` printed no token")
        return None
    return token.strip()
