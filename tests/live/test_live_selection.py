"""The live tests' opt-in: deselected by default, selected by ``-m live``, skipped with a
reason naming the missing variable, and keys captured before the per-test isolation.

Runs pytest in a subprocess on ``test_live_conformance.py`` only, with fake keys that
no test here sends anywhere (only the offline capability check runs).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from test_live_conformance import SPAWN

from atlas_nb import config
from atlas_nb.models import ComputeRequest
from atlas_nb.providers import names
from atlas_nb.testing import ProviderConformance

REPO = Path(__file__).resolve().parents[2]
LIVE_MODULE = "tests/live/test_live_conformance.py"
SUITE_TESTS = len([n for n in dir(ProviderConformance) if n.startswith("test_")])
"""The shipped suite's tests, run once per provider class."""


def _pytest(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items()
             if not k.startswith("ATLAS_NB_LIVE_")
             and k not in {var for name in names() for var in config.api_key_env(name)}}
    return subprocess.run(
        [sys.executable, "-m", "pytest", LIVE_MODULE, "-p", "no:cacheprovider", "-q", *args],
        cwd=REPO, env={**clean, **(env or {})}, capture_output=True, text=True, timeout=120,
    )


def _count(word: str, output: str) -> int:
    m = re.search(rf"(\d+) {word}", output)
    return int(m.group(1)) if m else 0


def test_plain_run_deselects_every_live_test() -> None:
    run = _pytest(env={"VAST_API_KEY": "fake-vast-key"})
    out = run.stdout + run.stderr
    assert _count("deselected", out) == 4 * SUITE_TESTS, out
    assert _count("passed", out) == _count("skipped", out) == _count("failed", out) == 0, out
    assert run.returncode == pytest.ExitCode.NO_TESTS_COLLECTED, out


def test_not_live_expression_still_deselects() -> None:
    run = _pytest("-m", "not live")
    out = run.stdout + run.stderr
    assert _count("deselected", out) == 4 * SUITE_TESTS, out


def test_marker_selects_and_skips_with_reasons_and_captured_keys() -> None:
    run = _pytest("-m", "live", "-rs", "-k", "capabilities",
                  env={"VAST_API_KEY": "fake-vast-key", "LAMBDA_LABS_API_KEY": "fake-lambda"})
    out = run.stdout + run.stderr
    assert run.returncode == 0, out
    # Vast has its key (read before the isolation fixture cleared it): the offline check ran.
    assert _count("passed", out) == 1, out
    assert _count("skipped", out) == 3, out
    assert "live runpod: set RUNPOD_API_KEY to run" in out
    assert "live lambda_labs: set ATLAS_NB_LIVE_LAMBDA_SSH_KEY to run" in out
    assert "live fly: set FLY_API_TOKEN (or FLY_ACCESS_TOKEN) and ATLAS_NB_LIVE_FLY_APP to" in out
    assert "fake-vast-key" not in out and "fake-lambda" not in out


def test_default_spawns_are_cheap_valid_requests() -> None:
    for provider, args in SPAWN.items():
        request = ComputeRequest(**args, name="atlas-conf-check")
        assert any(p.protocol == "http" for p in request.ports), provider
        assert request.gpu in (None, "rtx_3090"), f"{provider}: {request.gpu}"
        if request.gpu is not None:
            assert request.max_price_per_hour is not None, f"{provider}: uncapped GPU spawn"
