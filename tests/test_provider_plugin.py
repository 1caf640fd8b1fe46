"""A provider from outside atlas_nb plugs in through entry points, with no change to atlas_nb.

The example (``tests/fixtures/example_provider/example_cloud``) is installed the way pip
would install a wheel: its package and a ``.dist-info`` with ``entry_points.txt`` in a
directory on ``sys.path``, registering ``atlas_nb.providers`` and
``atlas_nb.sandbox_clouds``. A fresh interpreter then runs ``plugin_checks.py``: the
registry, ``doctor``, the all-provider catalog, the spawn panel, ``%atlas providers`` and
``%atlas gpus`` in a real kernel, and the shipped conformance suite over loopback.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLE = Path(__file__).parent / "fixtures" / "example_provider"
ENTRY_POINTS = """\
[atlas_nb.providers]
example = example_cloud:ExampleCloud

[atlas_nb.sandbox_clouds]
example = example_cloud.sandbox:ExampleCloudSandbox
"""


def install_example(site: Path) -> None:
    """Lay the example out as an installed distribution in ``site``."""
    shutil.copytree(EXAMPLE / "example_cloud", site / "example_cloud",
                    ignore=shutil.ignore_patterns("__pycache__"))
    info = site / "example_cloud-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: example-cloud\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(ENTRY_POINTS)
    (info / "top_level.txt").write_text("example_cloud\n")


@pytest.mark.slow
def test_an_installed_plugin_shows_up_everywhere(tmp_path: Path) -> None:
    site = tmp_path / "site"
    site.mkdir()
    install_example(site)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(site), *filter(None, [os.environ.get("PYTHONPATH")])])}
    checks = tmp_path / "plugin_checks.py"
    shutil.copy(EXAMPLE / "plugin_checks.py", checks)
    done = subprocess.run(
        [sys.executable, "-m", "pytest", str(checks), "-q", "-p", "no:cacheprovider",
         "--rootdir", str(tmp_path), "-c", os.devnull, "-W", "error",
         "-W", "ignore::DeprecationWarning", "--timeout", "240"],
        env=env, capture_output=True, text=True, timeout=280, cwd=tmp_path)
    assert done.returncode == 0, done.stdout[-6000:] + done.stderr[-3000:]
    assert " passed" in done.stdout and "failed" not in done.stdout


def test_without_the_distribution_the_example_is_unknown() -> None:
    from atlas_nb.providers import names

    assert "example" not in names()
