"""What importing atlas_nb loads, and what it leaves for first use (no timing here:
bench/import_time.py measures the cost; this pins down the structure that keeps it low)."""

from __future__ import annotations

import json
import subprocess
import sys

# Modules used only on some paths, so imported where they are used.
DEFERRED = (
    "yaml",  # config files
    "platformdirs",  # the config file's location
    "difflib",  # "did you mean" hints for unknown GPU names
    "importlib.metadata",  # third-party provider entry points
    "concurrent.futures",  # provider="all" catalogs and spawn_many
)

PROBE = f"""
import json, sys
import atlas_nb
lazy = sorted(m for m in ("pydantic", "httpx", "atlas_nb.models", "atlas_nb.facade")
              if m in sys.modules)
import atlas_nb.facade
from pydantic import BaseModel
def subclasses(cls):
    for sub in cls.__subclasses__():
        yield sub
        yield from subclasses(sub)
ours = [m for m in subclasses(BaseModel) if m.__module__.startswith("atlas_nb.")]
built_at_import = sorted(m.__name__ for m in ours if m.__pydantic_complete__)
deferred_loaded = sorted(m for m in {DEFERRED!r} if m in sys.modules)
from atlas_nb.models import ComputeRequest
schema = ComputeRequest.model_json_schema()  # builds on first use
req = ComputeRequest.model_validate({{"image": "img:1", "ports": ["8000/http"]}})
print(json.dumps({{
    "lazy": lazy,
    "models": len(ours),
    "built_at_import": built_at_import,
    "deferred_loaded": deferred_loaded,
    "schema_fields": sorted(schema["properties"]),
    "dumped_ports": req.model_dump()["ports"],
    "built_after_use": ComputeRequest.__pydantic_complete__,
}}))
"""


def _probe() -> dict[str, object]:
    out = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True,
                         timeout=60, check=True)
    assert out.stderr == ""
    report: dict[str, object] = json.loads(out.stdout)
    return report


def test_import_loading_is_deferred_and_models_still_work() -> None:
    report = _probe()
    # `import atlas_nb` loads neither pydantic nor httpx: the public API is lazy (PEP 562).
    assert report["lazy"] == []
    # The models are defined at import but build their validators and serializers on
    # first use (defer_build), so the fully loaded import pays no schema building.
    assert isinstance(report["models"], int) and report["models"] >= 7
    assert report["built_at_import"] == []
    assert report["deferred_loaded"] == []
    # ...and a never-built model still validates, dumps and gives its JSON schema.
    fields = report["schema_fields"]
    assert isinstance(fields, list) and {"image", "ports", "gpu"} <= set(fields)
    assert report["dumped_ports"] == [
        {"internal": 8000, "external": None, "protocol": "http", "url": None}
    ]
    assert report["built_after_use"] is True
