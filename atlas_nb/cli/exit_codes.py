"""The exit codes of every ``atlas-nb`` command, and the one line a failing command prints.

* ``OK`` (0): everything asked for was done.
* ``FAILURE`` (1): an operation failed: a file that cannot be written or used (the config
  file included), a port in use, a provider that does not answer, a terminate that failed.
  Running the same command again may work once the cause is fixed.
* ``USAGE`` (2): the command line itself is wrong: an unknown command or flag, a bad flag
  value (argparse's own code), or a request naming something that does not exist.

A failure or a usage error is **one line on stderr** saying what went wrong and how to fix it
(``failure``); stdout keeps only the command's normal output, so scripts can parse it.
"""

from __future__ import annotations

import sys

__all__ = ["FAILURE", "OK", "USAGE", "failure"]

OK = 0
"""Everything asked for was done."""
FAILURE = 1
"""An operation failed (a terminate, a migration, a file that could not be written)."""
USAGE = 2
"""Bad usage: what argparse itself exits with, or a request that cannot be acted on."""


def failure(prog: str, message: object, *, fix: str | None = None, code: int = FAILURE) -> int:
    """Write ``"<prog>: <message>; <fix>"`` to stderr as one line; returns ``code``.

    The fix is left out when the message already ends with one (the error tree's messages
    often do); line breaks inside the message are folded so the line stays one line.
    """
    text = " ".join(str(message).split())
    if fix and fix not in text:
        text = f"{text}; {fix}"
    sys.stderr.write(f"{prog}: {text}\n")
    sys.stderr.flush()
    return code
