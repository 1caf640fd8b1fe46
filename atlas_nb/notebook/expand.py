"""``$name`` expansion for ``%atlas``: one rule, objects passed by reference.

The magic is ``@no_var_expand``, so IPython never turns ``{expr}`` into evaluated
Python or ``$x`` into ``str(x)``. Instead, after shell-style splitting:

* a token that is exactly ``$name`` (or ``$name.attr``, ``$mapping.key``) becomes the
  object itself, so dicts, ``Compute``s and DataFrames arrive unchanged;
* ``$name`` inside a longer token (``--name run-$i``) is replaced by ``str(value)``;
* ``$$`` is a literal ``$``, and nothing inside single quotes is expanded;
* an undefined name is a ``UsageError`` (never passed on as the text ``$name``).

The cell body follows the same rule: a body that is just ``$name`` is that object.
"""

from __future__ import annotations

import json
import re
import shlex
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from IPython.core.error import UsageError

__all__ = ["Expanded", "expand", "is_reference", "lookup", "parse_body"]

_REF = re.compile(r"\$([A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*)")
_WHOLE = re.compile(r"^\$([A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*)$")
_LITERAL_DOLLAR = "\x01"  # stands for a $ that must not be expanded until the very end
_PLACEHOLDER = "\x00atlas-obj-{}\x00"
_SCALARS = (str, int, float)


@dataclass
class Expanded:
    """Tokens ready for argparse, plus the objects that stand behind placeholders."""

    tokens: list[str]
    objects: dict[str, Any] = field(default_factory=dict)

    def restore(self, value: Any) -> Any:
        """Swap placeholders (in a value argparse returned) back to their objects."""
        if isinstance(value, str) and value in self.objects:
            return self.objects[value]
        if isinstance(value, list):
            return [self.restore(v) for v in value]
        return value


def lookup(ref: str, namespaces: tuple[Mapping[str, Any], ...]) -> Any:
    """Resolve ``name`` or ``name.attr.key`` in the first namespace that has ``name``."""
    name, *path = ref.split(".")
    for ns in namespaces:
        if name in ns:
            obj = ns[name]
            break
    else:
        raise UsageError(f"${name} is not defined in the notebook; assign it first "
                         "(write $$ for a literal $)")
    for part in path:
        if isinstance(obj, Mapping) and part in obj:
            obj = obj[part]
        elif hasattr(obj, part):
            obj = getattr(obj, part)
        else:
            raise UsageError(f"${ref}: {type(obj).__name__} has no attribute or key {part!r}")
    return obj


def _protect(line: str) -> str:
    """Mark ``$`` that must stay literal: inside single quotes, escaped ``\\$``, and ``$$``."""
    out: list[str] = []
    quote: str | None = None
    i = 0
    while i < len(line):
        ch = line[i]
        nxt = line[i + 1] if i + 1 < len(line) else ""
        if quote == "'":
            out.append(_LITERAL_DOLLAR if ch == "$" else ch)
            quote = None if ch == "'" else quote
        elif nxt == "$" and ch in "\\$":  # \$ and $$ are a literal $
            out.append(_LITERAL_DOLLAR)
            i += 1
        else:
            if ch in "'\"" and quote is None:
                quote = ch
            elif ch == quote:
                quote = None
            out.append(ch)
        i += 1
    return "".join(out)


def without_comment(line: str) -> str:
    """``line`` without a trailing ``# comment``, as a shell reads it: ``#`` starts a comment
    only outside quotes and at the start of a word, so ``"a # b"``, ``\\#`` and ``repo#tag``
    keep theirs. IPython users end magic lines with comments, as README cells do."""
    quote: str | None = None
    i = 0
    while i < len(line):
        ch = line[i]
        if ch == "\\" and quote != "'":
            i += 2  # an escaped character, whatever it is
            continue
        if quote is None and ch in "'\"":
            quote = ch
        elif ch == quote:
            quote = None
        elif quote is None and ch == "#" and (i == 0 or line[i - 1].isspace()):
            return line[:i].rstrip()
        i += 1
    return line


def expand(line: str, namespaces: tuple[Mapping[str, Any], ...]) -> Expanded:
    """Split ``line`` like a shell and expand ``$name`` references (see the module doc)."""
    try:
        raw_tokens = shlex.split(_protect(line), posix=True)
    except ValueError as exc:  # "No closing quotation"
        raise UsageError(f"%atlas: cannot split the line: {exc}") from None
    result = Expanded([])
    for token in raw_tokens:
        whole = _WHOLE.match(token)
        if whole:
            value = lookup(whole.group(1), namespaces)
            if isinstance(value, _SCALARS) and not isinstance(value, bool):
                result.tokens.append(str(value).replace("$", _LITERAL_DOLLAR))
            else:
                key = _PLACEHOLDER.format(len(result.objects))
                result.objects[key] = value
                result.tokens.append(key)
            continue
        expanded = _REF.sub(lambda m: str(lookup(m.group(1), namespaces)), token)
        result.tokens.append(expanded)
    result.tokens = [t.replace(_LITERAL_DOLLAR, "$") for t in result.tokens]
    result.objects = {k.replace(_LITERAL_DOLLAR, "$"): v for k, v in result.objects.items()}
    return result


def is_reference(cell: str | None) -> bool:
    """Whether a cell body is just ``$name`` (an object, not text typed into history)."""
    text = (cell or "").strip().rstrip(";").rstrip()
    return bool(_WHOLE.match(text))


def parse_body(cell: str | None, namespaces: tuple[Mapping[str, Any], ...]) -> Any:
    """A cell body as data: ``$var`` (the object), JSON, or YAML; ``None`` when empty."""
    if cell is None:
        return None
    text = cell.strip()
    if text.endswith(";"):  # IPython's "silence the output" marker, never part of the data
        text = text[:-1].rstrip()
    if not text:
        return None
    whole = _WHOLE.match(text)
    if whole:
        return lookup(whole.group(1), namespaces)
    try:
        return json_or_yaml(text)
    except ValueError as exc:
        raise UsageError(f"%%atlas: the cell body is neither JSON nor YAML ({exc})") from None


def json_or_yaml(text: str) -> Any:
    """Text as data: JSON, else YAML. ``ValueError`` says why neither parses."""
    try:
        return json.loads(text)
    except ValueError:
        pass
    import yaml

    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or type(exc).__name__
        raise ValueError(f"{problem}{where}") from None
