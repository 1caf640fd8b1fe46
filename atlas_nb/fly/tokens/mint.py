"""Minting a read-only Fly token with the CLI: ``fly tokens create readonly``.

A read-only token reads logs; it cannot create machines or deploy, so the chain
uses it for logs only. Every failure (a missing ``fly`` binary, a non-zero exit,
unexpected output, a timeout) is a *miss*, never a crash; the reason goes to the
``atlas_nb.fly`` log, never the token.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Mapping

from ...errors import ValidationError
from .. import flyctl

__all__ = ["mint_readonly", "parse_duration", "store_name"]

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


def store_name(org: str | None) -> str:
    """The token store entry holding the minted token of ``org``."""
    return f"cli:{org or 'default'}"


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
