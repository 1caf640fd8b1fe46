"""Shared test isolation: every test runs with a private config, data dir and no real keys.

The autouse ``_isolated`` fixture points ``ATLAS_NB_CONFIG``/``ATLAS_NB_DATA_DIR`` (and the
XDG dirs platformdirs reads) at a per-test tmp dir, clears every provider key variable and
``ATLAS_NB_SANDBOX``, forgets session keys, resets the mock provider, and undoes any
``sandbox.attach`` or telemetry handler a test left behind. Other test files rely on it.

A sandbox fixture wider than one test should point providers at the sandbox with
``atlas_nb.sandbox.attach(url)`` (kept across tests), not ``ATLAS_NB_SANDBOX`` (cleared per test).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

from atlas_nb import config, sandbox, telemetry
from atlas_nb.providers import names
from atlas_nb.providers.mock import MockProvider

# Every env var that could carry a key or change where settings come from.
_CLEARED_ENV = (
    *{var for name in names() for var in config.api_key_env(name)},
    "ATLAS_NB_SANDBOX",
    "ATLAS_NB_PROVIDER",
    "ATLAS_NB_DEBUG",
)


@pytest.fixture(autouse=True)
def _isolated(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
              ) -> Iterator[None]:
    home = tmp_path_factory.mktemp("atlas_home")
    monkeypatch.setenv("ATLAS_NB_CONFIG", str(home / "config.yaml"))
    monkeypatch.setenv("ATLAS_NB_DATA_DIR", str(home / "data"))
    for xdg in ("XDG_CONFIG_HOME", "XDG_DATA_HOME", "XDG_CACHE_HOME", "XDG_STATE_HOME"):
        monkeypatch.setenv(xdg, str(home / xdg.lower()))
    # A developer's own `fly auth login` (~/.fly/config.yml) must not feed the Fly chain.
    monkeypatch.setenv("FLY_CONFIG_DIR", str(home / "fly"))
    for var in _CLEARED_ENV:
        monkeypatch.delenv(var, raising=False)
    config.clear_session_keys()
    MockProvider.reset()
    MockProvider.provision_delay_s = 0.0  # the default; tests change it with monkeypatch
    attached = sandbox.attached()  # restored below: a test's attach() must not leak
    handler_ids = set(telemetry.handlers())
    yield
    MockProvider.reset()
    config.clear_session_keys()
    sandbox.detach_all()
    for url in attached:
        sandbox.attach(url)
    for hid in set(telemetry.handlers()) - handler_ids:
        telemetry.detach(hid)


@pytest.fixture
def config_file() -> Path:
    """The (not yet existing) config file path of this test; write YAML to it."""
    return config.config_path()


@pytest.fixture
def events() -> Iterator[list[tuple[str, dict[str, Any]]]]:
    """Every telemetry event emitted during the test, as ``(event, data)`` pairs."""
    seen: list[tuple[str, dict[str, Any]]] = []

    def record(event: str, data: Mapping[str, Any]) -> None:
        seen.append((event, dict(data)))

    telemetry.attach("tests.events", "*", record)
    yield seen
    telemetry.detach("tests.events")


class Sleeps(list[float]):
    """An injectable ``sleep`` that records each delay and never sleeps."""

    def __call__(self, seconds: float) -> None:
        self.append(seconds)


@pytest.fixture
def sleeps() -> Sleeps:
    """A recording fake for every ``sleep=`` parameter."""
    return Sleeps()
