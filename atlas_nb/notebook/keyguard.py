"""Refuse API keys on the magic line: IPython's history database keeps every line typed.

``check_line`` raises a ``UsageError`` that points to ``%atlas login`` and never
repeats the suspicious text. ``scrub_history`` then best-effort removes the line
from this session's in-memory history and the history database.
"""

from __future__ import annotations

import contextlib
import re
from typing import Any

from IPython.core.error import UsageError

__all__ = ["check_body", "check_line", "looks_like_key", "scrub_history"]

# Flags and key=value forms that can only mean "here is a secret".
_NAMES = (r"(api[-_]?key|apikey|key|token|access[-_]?token|api[-_]?token|secret|password"
          r"|passwd|auth[-_]?token|bearer)")
_SECRET_NAMES = re.compile(rf"^(--?{_NAMES}(=|$)|{_NAMES}=)", re.IGNORECASE)
_SECRET_ASSIGN = re.compile(
    r"(api[-_]?key|apikey|token|secret|password|passwd)\s*[:=]", re.IGNORECASE
)
# Known key shapes: RunPod rpa_, Fly macaroons, Lambda secret_, OpenAI-style sk-, HF hf_.
_KNOWN_PREFIX = re.compile(
    r"(?:^|[=:\s\"'])(rpa_|rps_|fm1r_|fm1a_|fm2_|FlyV1\s|secret_|sk-|hf_)[\w\-+/=]{8,}")
_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", re.I)
_OPAQUE = re.compile(r"^[A-Za-z0-9_\-+=]{32,}$")
_SANDBOX_KEY = re.compile(r"^sandbox-[a-z_]+-key$")
_REFUSAL = ("%atlas: that line looks like it contains an API key or token, and IPython "
            "history keeps every magic line; it was not run. Use %atlas login PROVIDER "
            "(a hidden prompt), an env var, or the config file")


def looks_like_key(token: str) -> bool:
    """A token shaped like a provider key: a known prefix, or a long opaque string."""
    if _SANDBOX_KEY.match(token):
        return False  # the sandbox's keys are public by design
    if _KNOWN_PREFIX.search(token):
        return True
    bare = _UUID.sub("", token)
    if bare != token:  # job and request ids carry UUIDs: those are not secrets
        return False
    if not _OPAQUE.match(token):
        return False
    # An opaque run of 32+ characters mixing letters and digits is a key, not a name.
    return any(c.isdigit() for c in token) and any(c.isalpha() for c in token)


def check_line(tokens: list[str]) -> None:
    """Raise ``UsageError`` if any raw (unexpanded) token names or carries a secret."""
    for token in tokens:
        if _SECRET_NAMES.match(token) or _SECRET_ASSIGN.search(token) or looks_like_key(token):
            raise UsageError(_REFUSAL)


def check_body(data: Any) -> None:
    """Raise ``UsageError`` if a parsed cell body carries a provider key field."""
    if isinstance(data, dict):
        for key, value in data.items():
            if isinstance(key, str) and re.fullmatch(r"api[-_]?key|apikey", key, re.I):
                raise UsageError(_REFUSAL.replace("that line", "that cell"))
            check_body(value)
    elif isinstance(data, list):
        for value in data:
            check_body(value)
    elif isinstance(data, str) and _KNOWN_PREFIX.search(data):
        raise UsageError(_REFUSAL.replace("that line", "that cell"))


def scrub_history(shell: Any, raw_line: str) -> None:
    """Best effort: replace ``raw_line`` in this session's history (memory and database)."""
    hm = getattr(shell, "history_manager", None)
    if hm is None or not raw_line.strip():
        return
    marker = "# (an %atlas line with a secret was removed from history)"
    for name in ("input_hist_raw", "input_hist_parsed"):
        hist = getattr(hm, name, None)
        if isinstance(hist, list):
            for i, entry in enumerate(hist):
                if isinstance(entry, str) and raw_line.strip() in entry:
                    hist[i] = marker
    cache = getattr(hm, "db_input_cache", None)
    if isinstance(cache, list):
        for i, entry in enumerate(cache):
            if isinstance(entry, tuple) and len(entry) == 3 and raw_line.strip() in entry[1]:
                cache[i] = (entry[0], marker, marker)
    for key in ("_i", "_ii", "_iii"):
        value = shell.user_ns.get(key)
        if isinstance(value, str) and raw_line.strip() in value:
            shell.user_ns[key] = marker
    with contextlib.suppress(Exception):  # a disabled or locked history database
        if getattr(hm, "enabled", False) and getattr(hm, "db", None) is not None:
            hm.writeout_cache()
            with hm.db:
                hm.db.execute(
                    "UPDATE history SET source=?, source_raw=? WHERE session=? AND "
                    "(instr(source_raw, ?) > 0 OR instr(source, ?) > 0)",
                    (marker, marker, hm.session_number, raw_line.strip(), raw_line.strip()),
                )
