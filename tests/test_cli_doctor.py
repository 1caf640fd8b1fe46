"""``atlas-nb doctor``: versions and key sources, never key values."""

from __future__ import annotations

import pytest

from atlas_nb import cli

CANARY = "sk-CANARY-doctor-0123456789"


def test_doctor_reports_key_sources_and_never_the_key(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("RUNPOD_API_KEY", CANARY)
    assert cli.main(["doctor"]) == 0
    out = capsys.readouterr().out
    assert "atlas_nb doctor" in out and "httpx" in out
    assert "runpod key" in out and "RUNPOD_API_KEY" in out  # where it comes from
    assert "vast key: not set" in out
    assert CANARY not in out


def test_doctor_strict_fails_on_a_warning(monkeypatch: pytest.MonkeyPatch,
                                          config_file: object,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    from pathlib import Path

    Path(str(config_file)).write_text("default_provider: [not, a, name\n")  # broken YAML
    code = cli.main(["doctor", "--strict"])
    out = capsys.readouterr().out
    assert "[error] config" in out and "not valid YAML" in out  # reported, not a crash
    assert "unknown: the config file cannot be read" in out
    assert code == 1
