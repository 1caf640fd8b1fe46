"""Fixtures for the notebook layer: a shell that re-raises, and a shared loopback sandbox.

``ip`` is a fresh ``InteractiveShell`` (history off) whose ``run_cell`` re-raises the
cell's error, like jupysql's ``TestingShell``, with ``%load_ext atlas_nb`` done.
``box`` is one sandbox over real loopback sockets for the whole module.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from IPython.core.interactiveshell import InteractiveShell
from traitlets.config import Config

from atlas_nb import sandbox
from atlas_nb.notebook.widgets import _background


class TestingShell(InteractiveShell):
    """An ``InteractiveShell`` whose ``run_cell`` raises the cell's exception."""

    def run_cell(self, *args: Any, **kwargs: Any) -> Any:  # type: ignore[override]
        result = super().run_cell(*args, **kwargs)
        result.raise_error()
        return result


def _shell() -> TestingShell:
    cfg = Config()
    cfg.HistoryManager.enabled = False  # no sqlite file per test ("too many open files")
    cfg.HistoryAccessor.enabled = False
    shell = TestingShell(config=cfg)
    shell.displayhook.flush = lambda: None  # type: ignore[method-assign]  # jupysql: gc hang
    return shell


@pytest.fixture
def bare_ip() -> Iterator[TestingShell]:
    """A shell without the extension."""
    shell = _shell()
    yield shell
    _background.stop_all()
    shell.clear_instance()


@pytest.fixture
def ip(bare_ip: TestingShell) -> TestingShell:
    """A shell with ``%load_ext atlas_nb`` done."""
    bare_ip.run_line_magic("load_ext", "atlas_nb")
    return bare_ip


@pytest.fixture(scope="module")
def box() -> Iterator[Any]:
    """One sandbox (every registered cloud) over loopback for the module, attached."""
    with sandbox.start(provision_delay_s=0.0, start_delay_s=0.0) as sb:
        yield sb


@pytest.fixture(autouse=True)
def orch(tmp_path: Any) -> Iterator[Any]:
    """Every test's magics and panels use a private orchestrator: its own ledger, no
    daemon thread, no kernel hooks (so pytest's process is never hooked)."""
    from atlas_nb.notebook import tracking
    from atlas_nb.orchestrator import Orchestrator

    instance = Orchestrator(ledger_path=tmp_path / "ledger.sqlite3", background=False,
                            kernel_hooks=False)
    tracking.use(instance)
    yield instance
    tracking.use(None)
    instance.shutdown()
