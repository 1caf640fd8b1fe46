"""The shipped conformance suite against the real clouds: ``pytest -m live``.

One class per provider; each runs only when its key (and required setting) is set, see
``conftest.py``. What is spawned is the cheapest machine that still has an HTTP port:
a CPU pod/machine where the provider rents one, else a small GPU under a price cap.
Every test terminates what it spawned in teardown, also when it fails; a compute that
cannot be terminated fails the teardown loudly, naming it (it may still be billing).

A run with a sandbox attached (``ATLAS_NB_SANDBOX``) fails instead of testing it; CI points
``ATLAS_NB_LIVE_BASE_URLS`` at a sandbox instead (tests/test_live_against_sandbox.py), which
exercises these code paths exactly as a real cloud would be called.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

import pytest
from live_env import LiveSettings

from atlas_nb import sandbox
from atlas_nb.providers.fly import Fly
from atlas_nb.providers.lambda_labs import LambdaLabs
from atlas_nb.providers.runpod import RunPod
from atlas_nb.providers.vast import Vast
from atlas_nb.testing import ConformanceOptions, ProviderConformance

pytestmark = pytest.mark.live

IMAGE = "nginx:1.27-alpine"
"""Small, public, and serves HTTP on port 80 until stopped: enough for every check."""
PORTS = [(80, "http")]

SPAWN: dict[str, Mapping[str, Any]] = {
    # A 2-vCPU CPU pod (RunPod's cpu5c flavour): cents per hour.
    "runpod": {"gpu": None, "image": IMAGE, "ports": PORTS},
    # The cheapest cpu_* type in Lambda's live catalog (cpu_4x_general: $0.20/h), capped.
    "lambda_labs": {"gpu": None, "image": IMAGE, "ports": PORTS, "max_price_per_hour": 1.0},
    # Vast rents GPU machines only: the cheapest reliable 1x RTX 3090 offer, capped.
    "vast": {"gpu": "rtx_3090", "image": IMAGE, "ports": PORTS, "max_price_per_hour": 0.6},
    # shared-cpu-1x with 256 MB: Fly's smallest machine.
    "fly": {"gpu": None, "image": IMAGE, "ports": PORTS},
}
READY_TIMEOUT_S = {"runpod": 600.0, "lambda_labs": 1200.0, "vast": 900.0, "fly": 300.0}
POLL_S = {"runpod": 5.0, "lambda_labs": 10.0, "vast": 5.0, "fly": 2.0}


def _test_timeout(provider: str) -> int:
    # The longest test (stop/start) waits ready, stopped, then ready again.
    return int(3 * READY_TIMEOUT_S[provider] + 300)


class _Live(ProviderConformance):
    """The suite with a real provider: skipped, saying why, unless it can run."""

    name: ClassVar[str]

    @pytest.fixture(autouse=True)
    def _live_ready(self, live_settings: LiveSettings) -> None:
        live_settings.require(self.name)
        if sandbox.active_url() is not None:
            pytest.fail(f"a sandbox is attached ({sandbox.active_url()}): live tests must "
                        "talk to the real cloud; unset ATLAS_NB_SANDBOX")

    def make_provider(self, settings: LiveSettings) -> Any:
        raise NotImplementedError

    def spawn_args(self, settings: LiveSettings) -> dict[str, Any]:
        return settings.spawn(self.name, SPAWN[self.name])

    @pytest.fixture
    def provider(self, live_settings: LiveSettings) -> Any:
        return self.make_provider(live_settings)

    @pytest.fixture
    def options(self, live_settings: LiveSettings) -> ConformanceOptions:
        return ConformanceOptions(
            spawn=self.spawn_args(live_settings),
            endpoint=live_settings.get("ATLAS_NB_LIVE_RUNPOD_ENDPOINT")
            if self.name == "runpod" else None,
            pod_env=None,  # a real cloud does not show a pod's env: that check skips
            ready_timeout_s=READY_TIMEOUT_S[self.name],
            poll_s=POLL_S[self.name],
        )


@pytest.mark.timeout(_test_timeout("runpod"))
class TestRunPodLive(_Live):
    name = "runpod"

    def make_provider(self, settings: LiveSettings) -> Any:
        return RunPod(api_key=settings.key("runpod"), base_url=settings.base_url("runpod"))


@pytest.mark.timeout(_test_timeout("lambda_labs"))
class TestLambdaLive(_Live):
    name = "lambda_labs"

    def make_provider(self, settings: LiveSettings) -> Any:
        return LambdaLabs(api_key=settings.key("lambda_labs"),
                          base_url=settings.base_url("lambda_labs"))

    def spawn_args(self, settings: LiveSettings) -> dict[str, Any]:
        args = super().spawn_args(settings)
        ssh = {"ssh_key_names": [settings.get("ATLAS_NB_LIVE_LAMBDA_SSH_KEY")]}
        args["provider_opts"] = {**ssh, **dict(args.get("provider_opts") or {})}
        return args


@pytest.mark.timeout(_test_timeout("vast"))
class TestVastLive(_Live):
    name = "vast"

    def make_provider(self, settings: LiveSettings) -> Any:
        return Vast(api_key=settings.key("vast"), base_url=settings.base_url("vast"))


@pytest.mark.timeout(_test_timeout("fly"))
class TestFlyLive(_Live):
    name = "fly"

    def make_provider(self, settings: LiveSettings) -> Any:
        return Fly(app=settings.get("ATLAS_NB_LIVE_FLY_APP"), api_key=settings.key("fly"),
                   base_url=settings.base_url("fly"))

