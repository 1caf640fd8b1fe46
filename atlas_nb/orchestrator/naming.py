"""Names that make ownership visible upstream: ``{prefix}{session}-[{label}-]{suffix}``.

The session id is 8 hex digits and the suffix 6, so the reaper can recognise the
names it made with one regular expression. A name that merely starts with the
prefix is not enough: RunPod's own default names (``atlas-<12 hex>``) and a user's
``atlas-demo`` carry the prefix too, and must never be reaped.
"""

from __future__ import annotations

import re
import secrets
from functools import lru_cache
from typing import Any

from ..errors import ValidationError

__all__ = ["compute_name", "new_session_id", "owned_pattern", "session_of", "validate_prefix"]

_PREFIX_RE = re.compile(r"^[a-z][a-z0-9-]{0,19}$")
_LABEL_MAX = 20


def new_session_id() -> str:
    """A fresh session id: 8 lowercase hex digits."""
    return secrets.token_hex(4)


def validate_prefix(prefix: Any) -> str:
    """The prefix, or a ``ValidationError`` saying what a valid one looks like."""
    if not isinstance(prefix, str) or not _PREFIX_RE.match(prefix):
        raise ValidationError(
            f"orchestrator name_prefix {prefix!r} is invalid; use 1-20 lowercase letters, "
            "digits or '-', starting with a letter (e.g. 'atlas-' or 'alice-')"
        )
    return prefix


def _label(label: str | None) -> str:
    if not label:
        return ""
    cleaned = re.sub(r"[^a-z0-9]+", "-", label.lower()).strip("-")[:_LABEL_MAX].strip("-")
    return f"{cleaned}-" if cleaned else ""


def compute_name(prefix: str, session_id: str, label: str | None = None) -> str:
    """A new owned name; ``label`` (e.g. the user's ``name=``) is kept, sanitised, inside."""
    return f"{prefix}{session_id}-{_label(label)}{secrets.token_hex(3)}"


@lru_cache(maxsize=32)
def owned_pattern(prefix: str) -> re.Pattern[str]:
    """The regular expression matching every name ``compute_name(prefix, ...)`` can make."""
    return re.compile(
        rf"^{re.escape(prefix)}(?P<session>[0-9a-f]{{8}})-(?:[a-z0-9](?:[a-z0-9-]*[a-z0-9])?-)?"
        r"[0-9a-f]{6}$"
    )


def session_of(name: str | None, prefix: str) -> str | None:
    """The session id inside an owned name; ``None`` for any other name."""
    if not name:
        return None
    m = owned_pattern(prefix).match(name)
    return m.group("session") if m else None
