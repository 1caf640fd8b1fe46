"""Live tests: the shipped conformance suite against the real clouds. Opt in with ``-m live``.

Selection. A run whose ``-m`` expression does not mention ``live`` (plain ``pytest``,
``make test``, CI) deselects every test marked ``live``; ``pytest -m live`` selects them,
and ``-m "not live"`` keeps working as usual.

Keys. The root conftest's autouse ``_isolated`` fixture clears every provider key
variable before each test, so ``live_env`` (imported here, at collection) reads them
once into ``CAPTURED``; the live tests hand each key to its provider instance
(``RunPod(api_key=...)``), never back to the environment. Per provider:

=============  ===========================================  ====================================
provider       key (first set wins)                         also needed
=============  ===========================================  ====================================
runpod         RUNPOD_API_KEY                               ATLAS_NB_LIVE_RUNPOD_ENDPOINT
                                                            (optional: the job tests skip
                                                            without a serverless endpoint id)
lambda_labs    LAMBDA_LABS_API_KEY, LAMBDA_API_KEY          ATLAS_NB_LIVE_LAMBDA_SSH_KEY
vast           VAST_API_KEY                                 -
fly            FLY_API_TOKEN, FLY_ACCESS_TOKEN              ATLAS_NB_LIVE_FLY_APP
=============  ===========================================  ====================================

``ATLAS_NB_LIVE_<RUNPOD|LAMBDA|VAST|FLY>_SPAWN`` (a JSON object) is merged over what the
suite spawns for that provider, e.g. ``'{"gpu": "a10"}'`` when the default is sold out.
A provider whose key or required setting is missing is skipped, saying which.

Targets. ``ATLAS_NB_LIVE_BASE_URLS`` (JSON ``{provider: URL or {api: URL}}``) is passed as each
provider's ``base_url=``; unset, the real clouds are called. CI points it at a sandbox in another
process (tests/test_live_against_sandbox.py). ``ATLAS_NB_LIVE_FLY_ORG`` names the org for the
Fly app that test_live_issue14.py creates and deletes.
"""

from __future__ import annotations

import re

import pytest
from live_env import CAPTURED, LiveSettings


@pytest.fixture(scope="session")
def live_settings() -> LiveSettings:
    """The live keys and ``ATLAS_NB_LIVE_*`` settings captured at collection."""
    return LiveSettings(CAPTURED)


def _selects_live(markexpr: str) -> bool:
    return re.search(r"\blive\b", markexpr) is not None


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Deselect ``live`` tests unless the ``-m`` expression names ``live``."""
    if _selects_live(str(config.getoption("markexpr") or "")):
        return  # pytest's own -m handling selects (or, for "not live", drops) them
    live = [item for item in items if item.get_closest_marker("live") is not None]
    if live:
        config.hook.pytest_deselected(items=live)
        items[:] = [item for item in items if item.get_closest_marker("live") is None]
