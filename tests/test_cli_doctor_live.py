"""``atlas-nb doctor --live`` against a sandbox in another process, through the providers'
base URLs (a config file) and keys (env vars), as a user's real setup would point it."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from sandbox_process import SandboxProcess

from atlas_nb import config
from atlas_nb.providers import names
from atlas_nb.sandbox import sandbox_key

pytestmark = pytest.mark.slow

APIS = {"runpod": ("rest", "graphql", "serverless"), "fly": ("machines", "api"),
        "lambda_labs": ("rest",), "vast": ("rest", "logs")}


def pointed_env(url: str, home: Path, **keys: str) -> dict[str, str]:
    """An environment whose config file points every provider's base URLs at the sandbox
    at ``url`` and whose key variables hold the sandbox keys (``keys`` overrides them).
    No ``ATLAS_NB_SANDBOX``: this is how a real cloud is configured."""
    cfg = {"providers": {p: {"base_url": {api: f"{url}/{p}/{api}" for api in apis}}
                         for p, apis in APIS.items()}}
    path = home / "config.yaml"
    path.write_text(yaml.safe_dump(cfg))
    cleared = {v for n in names() for v in config.api_key_env(n)} | {"ATLAS_NB_SANDBOX"}
    env = {k: v for k, v in os.environ.items() if k not in cleared}
    env |= {"ATLAS_NB_CONFIG": str(path), "ATLAS_NB_DATA_DIR": str(home / "data"),
            "FLY_CONFIG_DIR": str(home / "fly")}
    env |= {config.api_key_env(p)[0]: sandbox_key(p) for p in APIS}
    env |= keys
    return env


def doctor(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "atlas_nb.cli", "doctor", "--live", *args],
                          env=env, capture_output=True, text=True, timeout=240)


@pytest.fixture(scope="module")
def sb() -> Iterator[SandboxProcess]:
    with SandboxProcess() as running:
        yield running


def test_every_check_passes_against_the_sandbox(sb: SandboxProcess, tmp_path: Path) -> None:
    run = doctor(pointed_env(sb.url, tmp_path))
    assert run.returncode == 0, run.stdout + run.stderr
    lines = run.stdout.splitlines()
    for provider in APIS:
        for check in ("auth", "catalog", "listing"):
            assert any(line.split()[:3] == ["ok", provider, check] for line in lines), lines
    assert not any(line.startswith("FAIL") for line in lines)
    assert run.stderr == ""
    assert "sandbox-" not in run.stdout  # keys are never printed


def test_a_refused_key_is_one_fail_line_with_its_fix(sb: SandboxProcess, tmp_path: Path
                                                      ) -> None:
    run = doctor(pointed_env(sb.url, tmp_path, VAST_API_KEY="not-the-key"))
    assert run.returncode == 1, run.stdout + run.stderr
    fails = [line for line in run.stdout.splitlines() if line.startswith("FAIL")]
    assert len(fails) == 1, run.stdout  # auth failed: catalog/listing are not tried
    assert fails[0].split()[1:3] == ["vast", "auth"]
    assert "fix: the key was refused: set a valid key in VAST_API_KEY" in fails[0]
    assert "not-the-key" not in run.stdout + run.stderr
    assert run.stderr.count("\n") == 1 and "1 check(s) failed: vast auth" in run.stderr
    assert any(line.startswith("ok    runpod") for line in run.stdout.splitlines())


def test_a_failing_listing_fails_only_that_check(sb: SandboxProcess, tmp_path: Path) -> None:
    rule = sb.control.faults("runpod/rest:GET /v2/pods", error_rate={403: 1.0})
    try:
        run = doctor(pointed_env(sb.url, tmp_path), "--provider", "runpod")
    finally:
        rule.clear()
    assert run.returncode == 1, run.stdout + run.stderr
    lines = run.stdout.splitlines()
    assert [line.split()[0] for line in lines] == ["ok", "ok", "FAIL"], lines
    assert lines[2].split()[1:3] == ["runpod", "listing"]
    assert "fix: the key lacks this permission" in lines[2]


def test_usage_errors_exit_2(tmp_path: Path) -> None:
    env = {**os.environ, "ATLAS_NB_CONFIG": str(tmp_path / "c.yaml")}
    run = subprocess.run([sys.executable, "-m", "atlas_nb.cli", "doctor", "--live",
                          "--provider", "nope"], env=env, capture_output=True, text=True,
                         timeout=60)
    assert run.returncode == 2 and "unknown provider 'nope'" in run.stderr
    run = subprocess.run([sys.executable, "-m", "atlas_nb.cli", "doctor", "--provider", "vast"],
                         env=env, capture_output=True, text=True, timeout=60)
    assert run.returncode == 2 and "--provider only applies to --live" in run.stderr
