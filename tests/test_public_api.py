"""The public surface: a frozen ``__all__``, and an import with no heavy or global side effects."""

from __future__ import annotations

import json
import subprocess
import sys

import atlas_nb

EXPECTED_ALL = [
    "CAPABILITIES",
    "AtlasError",
    "AuthHandle",
    "Catalog",
    "CatalogWarning",
    "Compute",
    "ComputeRequest",
    "Forbidden",
    "GpuType",
    "Job",
    "JobRequest",
    "NotFound",
    "PortMapping",
    "Provider",
    "ProviderError",
    "RateLimited",
    "SignatureError",
    "Timeout",
    "TransportError",
    "Unauthorized",
    "UnknownError",
    "Unsupported",
    "ValidationError",
    "__version__",
    "cancel_job",
    "capabilities",
    "get_compute",
    "get_job",
    "list_compute",
    "list_gpu_types",
    "load_ipython_extension",
    "register",
    "run_job",
    "spawn_compute",
    "spawn_many",
    "start",
    "stop",
    "stream_job",
    "terminate",
    "unload_ipython_extension",
    "wait_ready",
]


def _isort_order(name: str) -> tuple[int, str]:
    """ruff RUF022's order: SCREAMING_CASE, then CamelCase, then everything else."""
    if name.isupper():
        return 0, name
    if name[:1].isupper():
        return 1, name
    return 2, name


def test_all_is_frozen() -> None:
    assert atlas_nb.__all__ == EXPECTED_ALL, "a public name was added or removed: update here"


def test_all_is_sorted_and_unique() -> None:
    assert atlas_nb.__all__ == sorted(atlas_nb.__all__, key=_isort_order)
    assert len(set(atlas_nb.__all__)) == len(atlas_nb.__all__)


def test_every_name_resolves_and_is_documented() -> None:
    for name in atlas_nb.__all__:
        obj = getattr(atlas_nb, name)
        if callable(obj) and not name.startswith("_"):
            assert obj.__doc__, f"atlas_nb.{name} has no docstring"
    assert isinstance(atlas_nb.__version__, str) and atlas_nb.__version__.count(".") == 2


def test_star_import_gives_exactly_all() -> None:
    namespace: dict[str, object] = {}
    exec("from atlas_nb import *", namespace)
    assert set(namespace) - {"__builtins__"} == set(EXPECTED_ALL)


PROBE = """
import json, logging, sys
root = logging.getLogger()
before = (list(root.handlers), root.level)
import atlas_nb
import atlas_nb.facade, atlas_nb.providers.mock, atlas_nb.telemetry, atlas_nb._http
c = atlas_nb.spawn_compute(provider="mock", image="img:1")  # exercise the core once
atlas_nb.terminate(c.id, provider="mock")
print(json.dumps({
    "heavy": sorted(m for m in ("IPython", "ipywidgets", "pandas", "ipykernel", "matplotlib")
                    if m in sys.modules),
    "root_handlers_added": len(root.handlers) - len(before[0]),
    "root_level_changed": root.level != before[1],
    "atlas_handlers": [type(h).__name__ for h in logging.getLogger("atlas_nb").handlers],
}))
"""


def test_import_is_light_and_leaves_logging_alone() -> None:
    out = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True,
                         timeout=60, check=True)
    report = json.loads(out.stdout)
    assert report["heavy"] == []
    assert report["root_handlers_added"] == 0
    assert report["root_level_changed"] is False
    # a library may add a NullHandler to its own logger, and nothing else
    assert set(report["atlas_handlers"]) <= {"NullHandler"}
    assert out.stderr == ""
