"""Names that make ownership visible upstream: ``{prefix}{ledger}-{session}-[{label}-]{suffix}``.

The ledger id is 6 hex digits (``Ledger.ledger_id``: one per data dir), the session
id 8 and the suffix 6, so the reaper can tell with one regular expression which
ledger made a name, and leave every other ledger's computes alone (another machine,
a CI job or a colleague on the same account uses the same default prefix).

A name that merely starts with the prefix is not enough: RunPod's own default names
(``atlas-<12 hex>``) and a user's ``atlas-demo`` carry the prefix too, and must never
be reaped. Names made before ledger ids existed (``{prefix}{session}-[{label}-]{suffix}``,
"legacy") still match, with no ledger id: the reaper adopts them only when its own
ledger recorded the name.
"""

from __future__ import annotations

import re
import secrets
from functools import lru_cache
from typing import Any

from ..errors import ValidationError

__all__ = [
    "DEFAULT_PREFIX", "LEDGER_LABEL", "NAME_MAX", "compute_name", "ledger_of", "new_ledger_id",
    "new_session_id", "owned_pattern", "session_of", "validate_prefix",
]

DEFAULT_PREFIX = "atlas-"
LEDGER_LABEL = "atlas-ledger"
"""The ``ComputeRequest.labels`` key holding the ledger id (Fly metadata, Lambda tags)."""
NAME_MAX = 63
"""The longest name made. Lambda allows 64 characters (``InstanceLaunchRequest.name``,
``maxLength: 64``, atlas_nb/sandbox/specs/lambda/lambda-cloud-api-openapi-1.8.3.json);
Vast's ``label`` allows 1024 (``PUT /api/v0/instances/{id}/``, specs/vast/vast-openapi.yaml);
RunPod's ``CreatePodRequest.name`` (specs/runpod/rest-v2-openapi.json) and Fly's
``CreateMachineRequest.name`` (specs/fly/machines-openapi3.json) state no maximum. 63 also
keeps a name usable as a DNS label, should a cloud derive a hostname from it."""

_PREFIX_RE = re.compile(r"^[a-z][a-z0-9-]{0,19}$")
_LABEL_MAX = 20
_LEDGER_RE = re.compile(r"^[0-9a-f]{6}$")
_SESSION_RE = re.compile(r"^[0-9a-f]{8}$")


def new_session_id() -> str:
    """A fresh session id: 8 lowercase hex digits."""
    return secrets.token_hex(4)


def new_ledger_id() -> str:
    """A fresh ledger id: 6 lowercase hex digits."""
    return secrets.token_hex(3)


_HEX = frozenset("0123456789abcdef")
_ALNUM = frozenset("abcdefghijklmnopqrstuvwxyz0123456789")
_DASH = frozenset("-")
_Nfa = tuple[list[list[tuple[frozenset[str], int]]], list[list[int]], int]


def _pattern_nfa(prefix: str) -> _Nfa:
    """``owned_pattern(prefix)`` as a small NFA: ``(edges, epsilon moves, accept)``, start 0.

    Built by hand from the same grammar (prefix, optional ledger id, session, any labels,
    suffix) because ``re`` cannot intersect two patterns."""
    edges: list[list[tuple[frozenset[str], int]]] = [[]]
    eps: list[list[int]] = [[]]

    def step(at: int, chars: frozenset[str], to: int | None = None) -> int:
        if to is None:
            edges.append([])
            eps.append([])
            to = len(edges) - 1
        edges[at].append((chars, to))
        return to

    def run(at: int, classes: list[frozenset[str]]) -> int:
        for chars in classes:
            at = step(at, chars)
        return at

    at = run(0, [frozenset(ch) for ch in prefix])
    ledger_done = run(at, [_HEX] * 6 + [_DASH])
    eps[at].append(ledger_done)  # the ledger id is optional (legacy names)
    label = run(ledger_done, [_HEX] * 8 + [_DASH])
    # ``(?:[a-z0-9](?:[a-z0-9-]*[a-z0-9])?-)?``: one char, then any middle, ending on a
    # letter or digit, then a dash back to where the suffix starts.
    first = step(label, _ALNUM)
    middle = step(first, _ALNUM | _DASH)
    step(middle, _ALNUM | _DASH, middle)
    last = step(first, _ALNUM)
    step(middle, _ALNUM, last)
    step(first, _DASH, label)
    step(last, _DASH, label)
    return edges, eps, run(label, [_HEX] * 6)


def _closure(nfa: _Nfa, states: set[int]) -> frozenset[int]:
    todo, seen = list(states), set(states)
    while todo:
        for nxt in nfa[1][todo.pop()]:
            if nxt not in seen:
                seen.add(nxt)
                todo.append(nxt)
    return frozenset(seen)


def _overlaps(a: str, b: str) -> bool:
    """Whether one name can match both prefixes' patterns (so either reaper could take the
    other's compute for its own). Exact: a breadth-first search over pairs of NFA state
    sets, with one character standing for each class of characters the two patterns
    cannot tell apart (each prefix character, another hex digit, another letter, ``-``)."""
    if a == b:
        return False
    na, nb = _pattern_nfa(a), _pattern_nfa(b)
    literal = set(a + b)
    alphabet = literal | {"-"}
    alphabet |= {next((c for c in sorted(_HEX) if c not in literal), "0")}
    alphabet |= {next((c for c in sorted(_ALNUM - _HEX) if c not in literal), "z")}
    start = (_closure(na, {0}), _closure(nb, {0}))
    todo, seen = [start], {start}
    while todo:
        sa, sb = todo.pop()
        if na[2] in sa and nb[2] in sb:
            return True
        for ch in alphabet:
            ta = _closure(na, {to for q in sa for cs, to in na[0][q] if ch in cs})
            tb = _closure(nb, {to for q in sb for cs, to in nb[0][q] if ch in cs})
            if ta and tb and (ta, tb) not in seen:
                seen.add((ta, tb))
                todo.append((ta, tb))
    return False


def validate_prefix(prefix: Any, others: tuple[str, ...] = (DEFAULT_PREFIX,)) -> str:
    """The prefix, or a one-line ``ValidationError`` saying what a valid one looks like.

    A prefix whose names another prefix's reaper would take for its own (``atlas-20240101-``
    against the default ``atlas-``: ``atlas-`` + 8 digits reads as a session id) is refused
    too, as is the reverse; ``others`` are the prefixes to keep clear of.
    """
    if not isinstance(prefix, str) or not _PREFIX_RE.match(prefix):
        raise ValidationError(
            f"orchestrator name_prefix {prefix!r} is invalid; use 1-20 lowercase letters, "
            "digits or '-', starting with a letter (e.g. 'atlas-' or 'alice-')"
        )
    clash = next((o for o in others if _overlaps(prefix, o)), None)
    if clash is not None:
        raise ValidationError(
            f"orchestrator name_prefix {prefix!r} is refused: names it makes and names made "
            f"with {clash!r} could match each other's pattern, so either reaper could take "
            f"the other's computes for its own; use a prefix that does not start with "
            f"{clash!r} (e.g. 'ci-' or 'alice-'), or {clash!r} itself"
        )
    return prefix


def _label(label: str | None, room: int) -> str:
    if not label or room < 2:
        return ""
    cleaned = re.sub(r"[^a-z0-9]+", "-", label.lower()).strip("-")
    cleaned = cleaned[:min(_LABEL_MAX, room - 1)].strip("-")
    return f"{cleaned}-" if cleaned else ""


def compute_name(prefix: str, ledger_id: str, session_id: str, label: str | None = None) -> str:
    """A new owned name; ``label`` (e.g. the user's ``name=``) is kept, sanitised and
    shortened so the whole name fits ``NAME_MAX``, inside."""
    if not _LEDGER_RE.match(ledger_id) or not _SESSION_RE.match(session_id):
        raise ValidationError(f"compute_name: ledger id {ledger_id!r} must be 6 and session "
                              f"id {session_id!r} 8 lowercase hex digits")
    head = f"{prefix}{ledger_id}-{session_id}-"
    suffix = secrets.token_hex(3)
    return f"{head}{_label(label, NAME_MAX - len(head) - len(suffix))}{suffix}"


@lru_cache(maxsize=32)
def owned_pattern(prefix: str) -> re.Pattern[str]:
    """The regular expression matching every name ``compute_name(prefix, ...)`` can make,
    and the legacy names made before ledger ids. Groups: ``ledger`` (``None`` for a legacy
    name) and ``session``.

    A current name has a dash 7 characters after the prefix, a legacy one a hex digit:
    no name matches both ways.
    """
    return re.compile(
        rf"^{re.escape(prefix)}(?:(?P<ledger>[0-9a-f]{{6}})-)?(?P<session>[0-9a-f]{{8}})-"
        r"(?:[a-z0-9](?:[a-z0-9-]*[a-z0-9])?-)?[0-9a-f]{6}$"
    )


def session_of(name: str | None, prefix: str) -> str | None:
    """The session id inside an owned name; ``None`` for any other name."""
    if not name:
        return None
    m = owned_pattern(prefix).match(name)
    return m.group("session") if m else None


def ledger_of(name: str | None, prefix: str) -> str | None:
    """The ledger id inside an owned name; ``None`` for a legacy name or any other name."""
    if not name:
        return None
    m = owned_pattern(prefix).match(name)
    return m.group("ledger") if m else None
