"""The provider conformance suite, for pytest: prove a provider keeps the atlas_nb contract.

::

    import pytest
    from atlas_nb.testing import ProviderConformance, ConformanceOptions

    class TestMyProvider(ProviderConformance):
        @pytest.fixture
        def provider(self):
            return MyProvider()

Run it with ``pytest``. The contract it checks is in ``ProviderConformance``'s
docstring. This package imports pytest; ``import atlas_nb`` never imports it.
"""

from __future__ import annotations

from .conformance import ProviderConformance
from .options import ConformanceOptions

__all__ = ["ConformanceOptions", "ProviderConformance"]
