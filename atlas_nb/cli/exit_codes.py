"""The exit codes of every ``atlas-nb`` command."""

from __future__ import annotations

__all__ = ["FAILURE", "OK", "USAGE"]

OK = 0
"""Everything asked for was done."""
FAILURE = 1
"""An operation failed (a terminate, a migration, a file that could not be written)."""
USAGE = 2
"""Bad usage: what argparse itself exits with, or a request that cannot be acted on."""
