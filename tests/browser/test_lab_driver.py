"""The negative control: the checks every scenario relies on (``errors()`` and
``unrun_cells()``) do see a failed cell, a traceback on stderr and the cells Run All
never reached, so an empty list in a scenario means something."""

from __future__ import annotations

from typing import Any

import pytest

pytestmark = pytest.mark.browser


def test_errors_and_unrun_cells_are_detected(open_notebook: Any) -> None:
    nb = open_notebook("scenarios/errors.ipynb")
    nb.run_all()
    errors = nb.errors()
    assert len(errors) == 2, errors
    thread, spawn = errors
    assert "Traceback" in thread and "ZeroDivisionError" in thread
    assert "not_a_gpu" in spawn  # an AtlasError: one or two lines, still an error output
    assert nb.unrun_cells() == ['print("never runs: Run All stops at the first error")']
