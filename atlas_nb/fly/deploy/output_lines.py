"""Split a process's output stream into whole lines, treating ``\\r`` as a line end too.

CLIs draw progress bars by rewriting one line with ``\\r``; a deploy log wants
each of those states as its own line. ``LineSplitter.feed`` takes decoded
chunks as they arrive and returns only *complete* lines: a line split across two
reads comes out once, whole. ``\\r\\n`` is one line end, even when the ``\\r`` and
the ``\\n`` arrive in different chunks. Empty lines are dropped. A line longer
than ``max_chars`` is cut (so a process that never prints a newline cannot grow
the buffer without bound). ``flush()`` returns the unterminated rest at EOF.
"""

from __future__ import annotations

__all__ = ["LineSplitter"]


class LineSplitter:
    """Incremental ``\\n`` / ``\\r`` / ``\\r\\n`` splitter. Each line is ``(text, progress)``;
    ``progress`` is True for a line ended by a lone ``\\r`` (an in-place update)."""

    def __init__(self, max_chars: int = 65_536) -> None:
        self._pending: list[str] = []
        self._pending_len = 0
        self._after_cr = False  # the previous chunk ended with "\r": a "\n" next is its pair
        self.max_chars = max_chars

    def feed(self, text: str) -> list[tuple[str, bool]]:
        """Complete lines found in ``text`` (plus whatever was pending before it)."""
        out: list[tuple[str, bool]] = []
        if not text:
            return out
        if self._after_cr and text[0] == "\n":
            text = text[1:]
        self._after_cr = False
        start = 0
        n = len(text)
        while start < n:
            cut = _next_break(text, start)
            if cut < 0:
                self._hold(text[start:], out)
                break
            piece = text[start:cut]
            if text[cut] == "\r":
                if cut + 1 < n and text[cut + 1] == "\n":
                    self._emit(piece, False, out)
                    start = cut + 2
                    continue
                if cut + 1 == n:
                    self._after_cr = True
                self._emit(piece, True, out)
            else:
                self._emit(piece, False, out)
            start = cut + 1
        return out

    def flush(self) -> list[tuple[str, bool]]:
        """The unterminated rest (at EOF the process is done, so the line is complete)."""
        out: list[tuple[str, bool]] = []
        self._emit("", False, out)
        return out

    def _hold(self, piece: str, out: list[tuple[str, bool]]) -> None:
        self._pending.append(piece)
        self._pending_len += len(piece)
        while self._pending_len >= self.max_chars:
            joined = "".join(self._pending)
            out.append((joined[: self.max_chars], False))
            rest = joined[self.max_chars:]
            self._pending = [rest] if rest else []
            self._pending_len = len(rest)

    def _emit(self, piece: str, progress: bool, out: list[tuple[str, bool]]) -> None:
        if self._pending:
            piece = "".join(self._pending) + piece
            self._pending = []
            self._pending_len = 0
        while len(piece) > self.max_chars:
            out.append((piece[: self.max_chars], False))
            piece = piece[self.max_chars:]
        if piece:
            out.append((piece, progress))


def _next_break(text: str, start: int) -> int:
    nl = text.find("\n", start)
    cr = text.find("\r", start)
    if nl < 0:
        return cr
    if cr < 0:
        return nl
    return min(nl, cr)
