"""atlas_nb: rent GPUs and run inference on RunPod, Fly.io, Lambda Cloud and Vast.ai.

>>> import atlas_nb as atlas
>>> c = atlas.spawn_compute(provider="mock", gpu="h100", image="img:1", ports=[(8000, "http")])
>>> atlas.terminate(c.id, provider="mock")

In a notebook, ``%load_ext atlas_nb`` adds the ``%atlas`` magics. The core never
imports IPython, ipywidgets or pandas.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from .errors import (
    AtlasError,
    Forbidden,
    NotFound,
    ProviderError,
    RateLimited,
    Timeout,
    TransportError,
    Unauthorized,
    UnknownError,
    Unsupported,
    ValidationError,
)

if TYPE_CHECKING:
    from .auth import SignatureError
    from .facade import (
        Catalog,
        CatalogWarning,
        cancel_job,
        capabilities,
        get_compute,
        get_job,
        list_compute,
        list_gpu_types,
        run_job,
        spawn_compute,
        spawn_many,
        start,
        stop,
        stream_job,
        terminate,
        wait_ready,
    )
    from .models import (
        AuthHandle,
        Compute,
        ComputeRequest,
        GpuType,
        Job,
        JobRequest,
        PortMapping,
    )
    from .providers import CAPABILITIES, Provider, register

# Public names served from submodules on first use (PEP 562), so `import atlas_nb` stays
# cheap in a notebook: the pydantic models and httpx load with the first real call.
_LAZY: dict[str, str] = {
    **{name: "facade" for name in (
        "Catalog", "CatalogWarning", "cancel_job", "capabilities", "get_compute", "get_job",
        "list_compute", "list_gpu_types", "run_job", "spawn_compute", "spawn_many", "start",
        "stop",
        "stream_job", "terminate", "wait_ready")},
    **{name: "models" for name in (
        "AuthHandle", "Compute", "ComputeRequest", "GpuType", "Job", "JobRequest", "PortMapping")},
    **{name: "providers" for name in ("CAPABILITIES", "Provider", "register")},
    "SignatureError": "auth",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'atlas_nb' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY})


__version__ = "0.1.0"

__all__ = [
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


def load_ipython_extension(ipython: Any) -> None:
    """``%load_ext atlas_nb``: imports the notebook layer only now."""
    from .notebook import load_ipython_extension as _load

    _load(ipython)


def unload_ipython_extension(ipython: Any) -> None:
    """``%unload_ext atlas_nb``: stops background threads; never terminates pods."""
    from .notebook import unload_ipython_extension as _unload

    _unload(ipython)
