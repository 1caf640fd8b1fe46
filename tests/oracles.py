"""The official clients as oracles: where `make oracles` (part of `make test`) built them.

Each lives in its own virtualenv under ``.oracles/`` (their pins conflict with ours and with
each other), pinned by ``oracles/<name>.txt``. A test drives one as a subprocess pointed at
the sandbox; it never installs anything itself.
"""

from __future__ import annotations

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def oracle_bin(client: str, program: str = "python") -> Path:
    """``.oracles/<client>/bin/<program>``; fails the test (not skips it) when missing."""
    path = ROOT / ".oracles" / client / "bin" / program
    if not path.exists():
        pytest.fail(f"the {client} oracle is not built: run `make oracles` (make test does)")
    return path
