"""The shipped conformance suite against the Vast provider and the sandbox's Vast cloud, over
real loopback sockets, with the sandbox validating every request and response against Vast's
OpenAPI document (plus its documented errata). Any contract violation fails module teardown."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from atlas_nb import sandbox
from atlas_nb.sandbox.server import Sandbox
from atlas_nb.testing import ConformanceOptions, ProviderConformance

pytest.importorskip("openapi_core", reason="contract validation needs openapi-core")


@pytest.fixture(scope="module")
def sb() -> Iterator[Sandbox]:
    with sandbox.start(clouds=["vast"], validate=True, provision_delay_s=0.05,
                       start_delay_s=0.05) as box:
        assert box.url.startswith("http://127.0.0.1:"), "the suite must run over a socket"
        yield box
        assert box.violations == [], "\n".join(box.violations)
        assert box.stats()["requests"] > 0
        assert box.vast.instances == {}, "the suite left instances behind"


class TestVastOnSandbox(ProviderConformance):
    @pytest.fixture
    def provider(self, sb: Sandbox) -> Any:
        return "vast"  # resolved like a user's call: the attached sandbox, its key

    @pytest.fixture
    def options(self, sb: Sandbox) -> ConformanceOptions:
        return ConformanceOptions(
            spawn={"gpu": "rtx_4090", "image": "atlas/conformance:latest",
                   "ports": [(8000, "http"), (22, "tcp")]},
            pod_env=sb.vast.instance_env,
            ready_timeout_s=15.0,
            poll_s=0.1,
        )
