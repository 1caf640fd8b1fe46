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


@pytest.fixture
def orch(tmp_path: Any) -> Iterator[Any]:
    """A fresh default orchestrator per test (no daemon thread, no kernel hooks)."""
    from atlas_nb import orchestrator

    orchestrator.shutdown()
    instance = orchestrator.Orchestrator(session_id=orchestrator.session_id(),
                                         background=False, kernel_hooks=False)
    with orchestrator._lock:
        orchestrator._default = instance
        import os

        orchestrator._default_pid = os.getpid()
    yield instance
    instance.shutdown()
    with orchestrator._lock:
        orchestrator._default = None
