"""The live settings (keys and ``ATLAS_NB_LIVE_*`` variables), captured at import.

Imported by ``conftest.py`` at collection, before the root conftest's ``_isolated``
fixture clears the key variables for each test. See ``conftest.py`` for the table.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import pytest

from atlas_nb import config


@dataclass(frozen=True)
class LiveProvider:
    """What one provider's live run needs from the environment."""

    name: str
    env_prefix: str  # ATLAS_NB_LIVE_{env_prefix}_...
    key_vars: tuple[str, ...]
    required: tuple[str, ...] = ()
    optional: tuple[str, ...] = ()

    @property
    def spawn_var(self) -> str:
        return f"ATLAS_NB_LIVE_{self.env_prefix}_SPAWN"


PROVIDERS: dict[str, LiveProvider] = {
    "runpod": LiveProvider("runpod", "RUNPOD", config.api_key_env("runpod"),
                           optional=("ATLAS_NB_LIVE_RUNPOD_ENDPOINT",)),
    "lambda_labs": LiveProvider("lambda_labs", "LAMBDA", config.api_key_env("lambda_labs"),
                                required=("ATLAS_NB_LIVE_LAMBDA_SSH_KEY",)),
    "vast": LiveProvider("vast", "VAST", config.api_key_env("vast")),
    "fly": LiveProvider("fly", "FLY", config.api_key_env("fly"),
                        required=("ATLAS_NB_LIVE_FLY_APP",)),
}

BASE_URLS_VAR = "ATLAS_NB_LIVE_BASE_URLS"
"""JSON ``{provider: URL or {api: URL}}``: where the live tests send each provider's calls
(default: the real clouds). CI points it at a sandbox to prove the code paths."""
FLY_ORG_VAR = "ATLAS_NB_LIVE_FLY_ORG"
"""The Fly org the issue-14 test creates its throwaway app in (default: personal)."""

_WANTED = {var for p in PROVIDERS.values()
           for var in (*p.key_vars, *p.required, *p.optional, p.spawn_var)}
_WANTED |= {BASE_URLS_VAR, FLY_ORG_VAR}
CAPTURED: Mapping[str, str] = {v: os.environ[v] for v in sorted(_WANTED) if os.environ.get(v)}
"""The live settings as they were at collection, before any test cleared them."""


class LiveSettings:
    """The captured live settings, for the live tests. Never shows a key."""

    def __init__(self, captured: Mapping[str, str]) -> None:
        self._captured = dict(captured)

    def __repr__(self) -> str:
        return f"LiveSettings(set={sorted(v for v in self._captured if v.startswith('ATLAS'))})"

    def require(self, provider: str) -> None:
        """Skip the calling test, naming what is missing, unless ``provider`` can run live."""
        p = PROVIDERS[provider]
        first, *others = p.key_vars
        missing = [] if self.key(provider) else [
            f"{first} (or {', '.join(others)})" if others else first]
        missing += [var for var in p.required if not self._captured.get(var)]
        if missing:
            pytest.skip(f"live {provider}: set {' and '.join(missing)} to run the conformance "
                        "suite against the real cloud (it spawns billable resources)")

    def key(self, provider: str) -> str | None:
        """The provider's key as captured at collection (first variable set wins)."""
        return next((self._captured[v] for v in PROVIDERS[provider].key_vars
                     if self._captured.get(v)), None)

    def base_url(self, provider: str) -> str | dict[str, str] | None:
        """The provider's ``base_url=`` from ``ATLAS_NB_LIVE_BASE_URLS`` (None: the real cloud)."""
        raw = self._captured.get(BASE_URLS_VAR)
        if not raw:
            return None
        try:
            urls = json.loads(raw)
        except json.JSONDecodeError as exc:
            pytest.fail(f"{BASE_URLS_VAR} is not valid JSON ({exc})")
        if not isinstance(urls, dict):
            pytest.fail(f"{BASE_URLS_VAR} must be a JSON object: {{provider: {{api: URL}}}}")
        found = urls.get(provider)
        return found if isinstance(found, (str, dict)) else None

    def get(self, var: str) -> str | None:
        """A captured ``ATLAS_NB_LIVE_*`` setting."""
        return self._captured.get(var)

    def spawn(self, provider: str, defaults: Mapping[str, Any]) -> dict[str, Any]:
        """``defaults`` with the provider's ``ATLAS_NB_LIVE_*_SPAWN`` JSON merged over it."""
        var = PROVIDERS[provider].spawn_var
        raw = self._captured.get(var)
        if not raw:
            return dict(defaults)
        try:
            extra = json.loads(raw)
        except json.JSONDecodeError as exc:
            pytest.fail(f"{var} is not valid JSON ({exc})")
        if not isinstance(extra, dict):
            pytest.fail(f"{var} must be a JSON object, e.g. '{{\"gpu\": \"a10\"}}'")
        return {**defaults, **extra}
