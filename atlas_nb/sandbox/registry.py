"""The emulated clouds, one line each: ``name -> "module:Class"``.

Adding a cloud is one module (a class built as ``cls(ctx: CloudContext)`` with
``name``, ``apis()`` and ``close()``; see ``cloud.py``) plus one line here. The
name is the provider name, and so the first URL segment: ``S/{name}/{api}``.
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = ["CLOUDS", "load"]

CLOUDS: dict[str, str] = {
    "runpod": "atlas_nb.sandbox.runpod:RunPodCloud",
    "fly": "atlas_nb.sandbox.fly:FlyCloud",
    "vast": "atlas_nb.sandbox.vast:VastCloud",
    "lambda_labs": "atlas_nb.sandbox.lambda_labs:LambdaCloud",
}


def load(name: str) -> Any:
    """The cloud class registered as ``name``."""
    try:
        target = CLOUDS[name]
    except KeyError:
        raise ValueError(f"no sandbox cloud {name!r}; known: {', '.join(CLOUDS)}") from None
    module, _, attr = target.partition(":")
    return getattr(importlib.import_module(module), attr)
