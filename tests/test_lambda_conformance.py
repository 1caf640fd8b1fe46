"""The shipped conformance suite against the Lambda provider and the sandbox's Lambda cloud,
over real loopback sockets, with the sandbox validating every request and response against
Lambda's OpenAPI document. Any contract violation fails the module's teardown.

The SSH key comes from the config file (``providers.lambda_labs.ssh_key_name``), as a user
would set it; launches are spaced by a short interval on both sides so the suite runs fast.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import pytest

from atlas_nb import sandbox
from atlas_nb.providers.lambda_labs import LambdaLabs
from atlas_nb.sandbox.server import Sandbox
from atlas_nb.testing import ConformanceOptions, ProviderConformance

pytest.importorskip("openapi_core", reason="contract validation needs openapi-core")


class FastLambda(LambdaLabs):
    """Lambda with a short launch interval (the sandbox's is shorter still: no 429s)."""

    launch_interval_s: ClassVar[float] = 0.05


@pytest.fixture(scope="module")
def sb() -> Iterator[Sandbox]:
    with sandbox.start(clouds=["lambda_labs"], validate=True, provision_delay_s=0.05,
                       start_delay_s=0.05,
                       options={"lambda_labs": {"launch_interval_s": 0.01}}) as box:
        assert box.url.startswith("http://127.0.0.1:"), "the suite must run over a socket"
        yield box
        assert box.violations == [], "\n".join(box.violations)
        assert box.stats()["requests"] > 0
        assert box.stats()["statuses"].get(429, 0) == 0


class TestLambdaOnSandbox(ProviderConformance):
    @pytest.fixture
    def provider(self, sb: Sandbox, config_file: Path) -> Any:
        config_file.parent.mkdir(parents=True, exist_ok=True)
        config_file.write_text("providers:\n  lambda_labs:\n    ssh_key_name: sandbox-key\n")
        return FastLambda  # resolved like a user's call: the attached sandbox, its key

    @pytest.fixture
    def options(self, sb: Sandbox) -> ConformanceOptions:
        return ConformanceOptions(
            spawn={"gpu": "a10", "image": "atlas/conformance:latest",
                   "ports": [(8000, "http"), (9000, "tcp")]},
            pod_env=sb.lambda_labs.pod_env,
            ready_timeout_s=15.0,
            poll_s=0.1,
        )
