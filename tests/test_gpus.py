"""gpus.py: canonical names, aliases, count- and form-factor-aware provider ids, reverse lookup."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from atlas_nb import Unsupported, ValidationError, sandbox
from atlas_nb.gpus import GPUS, canonical, family, from_provider_id, provider_id, provider_ids

FIXTURES = Path(__file__).parent / "fixtures"
# Vendored extracts of the providers' own data; provenance in fixtures/README.md.
RUNPOD_FIXTURE = json.loads((FIXTURES / "runpod_gpu_type_ids.json").read_text())
RUNPOD_IDS: list[str] = RUNPOD_FIXTURE["gpu_type_ids"]
LAMBDA_TYPES: list[str] = json.loads((FIXTURES / "lambda_instance_types.json").read_text())[
    "instance_types"]
PROVIDERS = ("runpod", "lambda_labs", "vast", "fly")

# The canonical names DESIGN.md promises.
DESIGN_NAMES = ["h200", "h100", "h100_sxm", "h100_pcie", "a100_80g", "a100_40g", "l40s", "l40",
                "l4", "a6000", "a5000", "a4000", "rtx_6000_ada", "rtx_4090", "rtx_3090", "mi300x",
                "a10", "b200", "gh200"]


def test_design_names_are_canonical() -> None:
    for name in DESIGN_NAMES:
        assert name in GPUS
        assert canonical(name) == name


def test_every_spec_is_consistent() -> None:
    for name, spec in GPUS.items():
        assert spec.name == name
        assert re.fullmatch(r"[a-z0-9_]+", name), name
        assert spec.memory_gb > 0
        # a family is itself a name users can write, resolving into that family
        assert family(spec.family) == spec.family
        for alias in spec.aliases:
            assert canonical(alias) == name, alias
            assert alias not in GPUS  # an alias never shadows another canonical name


@pytest.mark.parametrize(
    ("written", "expected"),
    [
        ("H100", "h100"), ("h100", "h100"), ("H100-SXM", "h100_sxm"), ("h100 sxm", "h100_sxm"),
        ("h100sxm", "h100_sxm"), ("H100_SXM5", "h100_sxm"), ("h100-pcie", "h100_pcie"),
        ("A100", "a100_80g"), ("a100_80gb", "a100_80g"), ("A100_40GB", "a100_40g"),
        ("RTX-4090", "rtx_4090"), ("rtx4090", "rtx_4090"), ("4090", "rtx_4090"),
        ("RTX A6000", "a6000"), ("rtx_a5000", "a5000"), ("RTX 6000 Ada", "rtx_6000_ada"),
        ("  L40S  ", "l40s"), ("MI300X", "mi300x"), ("GH200", "gh200"), ("b200", "b200"),
    ],
)
def test_aliases_and_case_are_forgiven(written: str, expected: str) -> None:
    assert canonical(written) == expected


def test_family() -> None:
    assert family("h100_sxm") == "h100"
    assert family("H100-PCIE") == "h100"
    assert family("a100_40g") == family("a100_80g") == "a100"
    assert family("l40s") == "l40s" != family("l40")


class TestUnknownName:
    def test_lists_the_closest_names(self) -> None:
        with pytest.raises(ValidationError) as info:
            canonical("h10")
        msg = str(info.value)
        assert "'h10'" in msg
        assert "did you mean" in msg
        assert "h100" in msg
        assert info.value.kind == "validation"

    def test_close_aliases_are_shown_as_canonical_names(self) -> None:
        with pytest.raises(ValidationError) as info:
            canonical("rtx409")
        assert "rtx_4090" in str(info.value)

    def test_nothing_close_lists_every_name(self) -> None:
        with pytest.raises(ValidationError) as info:
            canonical("quantum-potato")
        msg = str(info.value)
        assert "known:" in msg
        assert all(name in msg for name in DESIGN_NAMES)


class TestProviderIds:
    def test_runpod_form_factors_differ(self) -> None:
        sxm = provider_id("h100_sxm", "runpod")
        pcie = provider_id("h100_pcie", "runpod")
        assert sxm == "NVIDIA H100 80GB HBM3"
        assert pcie == "NVIDIA H100 PCIe"
        assert provider_id("h100_nvl", "runpod") == "NVIDIA H100 NVL"
        assert len({sxm, pcie}) == 2

    def test_family_name_prefers_one_form_and_lists_all(self) -> None:
        assert provider_id("h100", "runpod") == "NVIDIA H100 80GB HBM3"
        assert set(provider_ids("h100", "runpod")) == {
            "NVIDIA H100 80GB HBM3", "NVIDIA H100 PCIe", "NVIDIA H100 NVL"}
        assert provider_ids("h100", "runpod")[0] == provider_id("h100", "runpod")

    def test_runpod_ignores_the_count(self) -> None:
        assert provider_id("h100_sxm", "runpod", count=8) == "NVIDIA H100 80GB HBM3"

    @pytest.mark.parametrize(
        ("name", "count", "expected"),
        [("h100_sxm", 8, "gpu_8x_h100_sxm5"), ("h100_sxm", 1, "gpu_1x_h100_sxm5"),
         ("h100", 2, "gpu_2x_h100_sxm5"), ("h100_pcie", 1, "gpu_1x_h100_pcie"),
         ("a10", 1, "gpu_1x_a10"), ("a100_80g", 8, "gpu_8x_a100_80gb_sxm4"),
         ("b200", 8, "gpu_8x_b200_sxm6"), ("gh200", 1, "gpu_1x_gh200"),
         ("a6000", 4, "gpu_4x_a6000")],
    )
    def test_lambda_ids_carry_the_count(self, name: str, count: int, expected: str) -> None:
        pid = provider_id(name, "lambda_labs", count=count)
        assert pid == expected
        assert pid in LAMBDA_TYPES  # a real instance type in the Lambda catalog

    def test_every_lambda_model_exists_in_the_catalog(self) -> None:
        models = {re.sub(r"^gpu_\d+x_", "", t) for t in LAMBDA_TYPES if t.startswith("gpu_")}
        for name in GPUS:
            for suffix in provider_ids(name, "lambda_labs"):
                assert suffix in models, f"{name}: gpu_Nx_{suffix} is not a Lambda type"

    def test_every_runpod_id_is_in_the_spec_enum(self) -> None:
        for name in GPUS:
            for pid in provider_ids(name, "runpod"):
                assert pid in RUNPOD_IDS, f"{name}: {pid!r} is not a RunPod gpuTypeId"

    def test_runpod_fixture_is_the_spec_enum_and_covers_the_sandbox_catalog(self) -> None:
        source = RUNPOD_FIXTURE["source"]
        assert source["pointer"].endswith("/PodCreateInput/properties/gpuTypeIds/items/enum")
        assert len(source["sha256"]) == 64 and len(source["commit"]) == 40
        assert len(RUNPOD_IDS) == len(set(RUNPOD_IDS)) == 49
        # the sandbox's RunPod catalog is vendored from other RunPod sources: it agrees
        with sandbox.start(clouds=["runpod"], start_server=False, attach=False,
                           validate=False) as sb:
            served = set(sb.runpod.catalog.gpus)
        assert served and served <= set(RUNPOD_IDS)

    def test_mock_uses_canonical_names(self) -> None:
        assert provider_id("H100-SXM", "mock") == "h100_sxm"

    @pytest.mark.parametrize(("name", "provider"),
                             [("mi300x", "lambda_labs"), ("gh200", "runpod"), ("b200", "fly"),
                              ("rtx_6000", "vast")])
    def test_missing_gpu_is_unsupported_naming_what_is_offered(self, name: str,
                                                              provider: str) -> None:
        with pytest.raises(Unsupported) as info:
            provider_id(name, provider)
        err = info.value
        assert err.provider == provider
        assert err.kind == "unsupported"
        offered = sorted(n for n in GPUS if provider_ids(n, provider))
        assert offered and name not in offered
        msg = str(err)
        assert f"does not offer {name}" in msg
        assert msg.endswith(", ".join(offered))

    def test_unknown_name_is_a_validation_error_not_unsupported(self) -> None:
        with pytest.raises(ValidationError):
            provider_id("h1000", "runpod")


class TestReverseLookup:
    @pytest.mark.parametrize(
        ("provider", "pid", "expected"),
        [
            ("runpod", "NVIDIA H100 80GB HBM3", ("h100_sxm", 1)),
            ("runpod", "NVIDIA H100 PCIe", ("h100_pcie", 1)),
            ("runpod", "NVIDIA H100 NVL", ("h100_nvl", 1)),
            ("runpod", "nvidia h100 pcie", ("h100_pcie", 1)),
            ("runpod", "NVIDIA A100 80GB PCIe", ("a100_80g", 1)),
            ("runpod", "NVIDIA GeForce RTX 4090", ("rtx_4090", 1)),
            ("runpod", "NVIDIA RTX A2000", (None, 1)),
            ("lambda_labs", "gpu_8x_h100_sxm5", ("h100_sxm", 8)),
            ("lambda_labs", "gpu_1x_h100_pcie", ("h100_pcie", 1)),
            ("lambda_labs", "gpu_4x_a100", ("a100_40g", 4)),
            ("lambda_labs", "gpu_8x_a100_80gb_sxm4", ("a100_80g", 8)),
            ("lambda_labs", "gpu_2x_b200_sxm6", ("b200", 2)),
            ("lambda_labs", "gpu_1x_rtx6000", ("rtx_6000", 1)),
            ("lambda_labs", "cpu_4x_general", (None, 0)),
            ("lambda_labs", "gpu_8x_mystery", (None, 8)),
            ("vast", "RTX 4090", ("rtx_4090", 1)),
            ("vast", "H100 SXM", ("h100_sxm", 1)),
            ("fly", "a100-pcie-40gb", ("a100_40g", 1)),
            ("fly", "l40s", ("l40s", 1)),
            ("mock", "h100", ("h100", 1)),
            ("mock", "nope", (None, 1)),
        ],
    )
    def test_known_ids(self, provider: str, pid: str,
                       expected: tuple[str | None, int]) -> None:
        assert from_provider_id(provider, pid) == expected

    def test_round_trip_for_every_offered_gpu(self) -> None:
        for name, spec in GPUS.items():
            for provider in PROVIDERS:
                for pid in provider_ids(name, provider):
                    wire = f"gpu_3x_{pid}" if provider == "lambda_labs" else pid
                    back, count = from_provider_id(provider, wire)
                    assert back is not None, (name, provider, pid)
                    assert count == (3 if provider == "lambda_labs" else 1)
                    if name == spec.family and back != name:
                        # a family id comes back as its specific form factor
                        assert family(back) == name, (name, provider, pid, back)
                    else:
                        assert back == name, (name, provider, pid, back)
