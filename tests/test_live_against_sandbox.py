"""CI proves the live code paths: ``atlas-nb doctor --live`` and ``pytest -m live tests/live``
run as subprocesses against a sandbox in another process, reached only through the
providers' base URLs and keys (no ``ATLAS_NB_SANDBOX``), as a real cloud would be.

No real cloud can be reached here, so this shows the code paths work end to end; what
the clouds themselves do rests on the sources cited in docs/wire-notes.md.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from sandbox_process import SandboxProcess
from test_cli_doctor_live import APIS, doctor, pointed_env

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def sb() -> Iterator[SandboxProcess]:
    with SandboxProcess() as running:
        yield running


def _count(word: str, output: str) -> int:
    found = re.search(rf"(\d+) {word}", output)
    return int(found.group(1)) if found else 0


def test_doctor_live_passes_through_base_urls(sb: SandboxProcess, tmp_path: Path) -> None:
    run = doctor(pointed_env(sb.url, tmp_path))
    assert run.returncode == 0, run.stdout + run.stderr
    assert run.stdout.count("\nok ") + run.stdout.startswith("ok ") == 3 * len(APIS)


def test_the_live_suite_runs_against_the_sandbox(sb: SandboxProcess, tmp_path: Path) -> None:
    urls = {p: {api: f"{sb.url}/{p}/{api}" for api in apis} for p, apis in APIS.items()}
    env = pointed_env(sb.url, tmp_path)
    env |= {
        "ATLAS_NB_LIVE_BASE_URLS": json.dumps(urls),
        "ATLAS_NB_LIVE_LAMBDA_SSH_KEY": "atlas-live",
        "ATLAS_NB_LIVE_FLY_APP": "atlas-live-conformance",
        # the conformance suite's Fly app does not exist in a fresh sandbox: create it
        "ATLAS_NB_LIVE_FLY_SPAWN": json.dumps({"provider_opts": {"create_app": True}}),
        # the sandbox's market is not the live one (no RTX 3090 rows): a GPU it offers
        "ATLAS_NB_LIVE_VAST_SPAWN": json.dumps({"gpu": "rtx_4090", "max_price_per_hour": 10.0}),
    }
    run = subprocess.run(
        [sys.executable, "-m", "pytest", "tests/live", "-m", "live", "-p", "no:cacheprovider",
         "-q", "-rs", "-x"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=840)
    out = run.stdout + run.stderr
    assert run.returncode == 0, out[-6000:]
    assert _count("passed", out) >= 20, out[-3000:]
    # Only what a real cloud cannot show may skip: jobs without an endpoint id, a pod's env.
    skips = [line for line in out.splitlines() if line.startswith("SKIPPED")]
    assert all("ConformanceOptions.endpoint" in line or "ConformanceOptions.pod_env" in line
               for line in skips), "\n".join(skips)
    assert "sandbox-" not in out  # keys never printed
