"""A canary key in the config file never shows up in any output, repr, error or widget state.

The providers point at an unattached sandbox (so the canary really is the key sent) that
answers 401 to it: every error path runs with the canary in hand.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import yaml
from IPython.utils.capture import capture_output
from widget_states import state_text

from atlas_nb import config
from atlas_nb.errors import AtlasError
from atlas_nb.notebook import state
from atlas_nb.notebook.catalog_cache import CACHE
from atlas_nb.notebook.widgets.catalog_panel import CatalogPanel
from atlas_nb.notebook.widgets.dashboard import Dashboard
from atlas_nb.notebook.widgets.job_panel import JobPanel
from atlas_nb.notebook.widgets.spawn_panel import SpawnPanel
from atlas_nb.sandbox.server import Sandbox

CANARIES = {p: f"CANARY-{p.upper()}-7f3a9c2e1b" for p in ("runpod", "lambda_labs", "vast", "fly")}
APIS = {"runpod": ("rest", "graphql", "serverless"), "lambda_labs": ("rest",),
        "vast": ("rest",), "fly": ("machines", "api")}


@pytest.fixture
def canary_config() -> Iterator[Sandbox]:
    with Sandbox(attach=False, provision_delay_s=0, start_delay_s=0) as sb:
        providers = {
            name: {"api_key": key,
                   "base_url": {api: f"{sb.url}/{name}/{api}" for api in APIS[name]}}
            for name, key in CANARIES.items()
        }
        path = config.config_path()
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(yaml.safe_dump({"default_provider": "runpod", "providers": providers}),
                        encoding="utf-8")
        CACHE.clear()
        yield sb
    CACHE.clear()


def _clean(text: str) -> None:
    for key in CANARIES.values():
        assert key not in text
        assert key[:12] not in text  # not even a prefix


LINES = [
    "providers", "doctor", "gpus", "gpus --provider all --refresh", "ls",
    "spawn --gpu rtx_4090 --image img:1", "run -e echo --sync", "stop abc", "terminate abc",
    "jobs", "reap --dry-run --provider runpod", "login runpod",
]


def test_canary_never_appears_in_magic_output_or_errors(ip, canary_config: Sandbox) -> None:
    state(ip).magics.getpass = lambda prompt: ""
    seen: list[str] = []
    for line in LINES:
        with capture_output() as cap:
            try:
                result = ip.run_line_magic("atlas", line)
            except AtlasError as exc:
                seen += [str(exc), repr(exc), "\n".join(exc._render_traceback_()), repr(exc.raw)]
                result = None
        seen += [cap.stdout, cap.stderr, repr(result)]
        if hasattr(result, "_repr_html_"):
            seen.append(str(result._repr_html_()))
        if hasattr(result, "to_string"):
            seen.append(result.to_string())
    text = "\n".join(seen)
    assert "Unauthorized" in text  # the canary was really used, and refused
    assert "config" in text
    _clean(text)


def test_canary_never_appears_in_widget_state(canary_config: Sandbox, orch: Any) -> None:
    panels = [
        SpawnPanel(provider="runpod", image="img:1", background=False),
        CatalogPanel(providers=["runpod", "vast", "lambda_labs", "fly"], background=False),
        JobPanel(provider="runpod", endpoint="echo", input={"a": 1}, background=False),
        Dashboard(source=orch, background=False),
    ]
    panels[0].spawn()
    panels[2].submit()
    assert "Unauthorized" in panels[0].status.value or "401" in panels[0].status.value
    texts = []
    for panel in panels:
        bundle = panel._repr_mimebundle_()
        texts += [state_text(panel.widget), bundle["text/plain"], bundle["text/html"],
                  repr(panel), str(panel.error)]
        panel.close()
    _clean("\n".join(texts))
