"""The vendored provider specs, and JSON-schema checks against their components.

The specs under ``sandbox/specs/`` are byte-identical copies of
``shared/specs`` (see ``specs/PROVENANCE.md``), shipped as package data so the
sandbox works from a wheel. A cloud validates request bodies the way the real
API does (RunPod answers 422 with ``errors``) with ``component_errors``; the
full request/response contract check lives in ``contract.py``.
"""

from __future__ import annotations

import functools
import importlib
import json
import threading
from pathlib import Path
from typing import Any

__all__ = ["SPEC_DIR", "component_errors", "load_spec"]

SPEC_DIR = Path(__file__).parent / "specs"
_lock = threading.Lock()


@functools.cache
def load_spec(name: str) -> dict[str, Any]:
    """A vendored spec by its path under ``specs/`` (``"runpod/rest-v2-openapi.json"``)."""
    path = SPEC_DIR / name
    text = path.read_text(encoding="utf-8")
    if path.suffix in {".yaml", ".yml"}:
        import yaml

        data = yaml.safe_load(text)
    else:
        data = json.loads(text)
    if not isinstance(data, dict):
        raise ValueError(f"spec {name} is not a mapping")
    return data


@functools.cache
def _validator(name: str, component: str) -> Any:
    # jsonschema ships no type stubs; import it as a module object.
    validator_cls = importlib.import_module("jsonschema").Draft202012Validator
    from referencing import Registry, Resource
    from referencing.jsonschema import DRAFT202012

    base = f"urn:atlas-sandbox:{name}"
    resource = Resource.from_contents(load_spec(name), default_specification=DRAFT202012)
    registry: Registry[Any] = Registry().with_resource(base, resource)
    schema = {"$ref": f"{base}#/components/schemas/{component}"}
    return validator_cls(schema, registry=registry)


def component_errors(name: str, component: str, instance: Any) -> list[str]:
    """Why ``instance`` does not match ``components.schemas[component]``, one line each.

    Lines read like the RunPod spec's own example: ``"$.gpu.count: 0 is less than
    the minimum of 1"``. An empty list means the instance is valid.
    """
    with _lock:  # building a validator is not thread-safe; using one is
        validator = _validator(name, component)
    errors = sorted(validator.iter_errors(instance), key=lambda e: (e.json_path, e.message))
    return [f"{e.json_path}: {e.message}" for e in errors]
