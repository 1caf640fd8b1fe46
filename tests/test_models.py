"""models.py: frozen models, port and env coercion, clear validation errors, HTML reprs."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any

import pydantic
import pytest

import atlas_nb
from atlas_nb import (
    AuthHandle,
    Compute,
    ComputeRequest,
    GpuType,
    Job,
    JobRequest,
    PortMapping,
)

TOKEN = "tok-CANARY-abcdef0123456789"


def _samples() -> dict[str, Any]:
    handle = AuthHandle(scheme="bearer", token=TOKEN, hash="h" * 64,
                        header=f"Authorization: Bearer {TOKEN}")
    return {
        "PortMapping": PortMapping(internal=8000, external=8000, protocol="http",
                                   url="https://pod-8000.example"),
        "AuthHandle": handle,
        "ComputeRequest": ComputeRequest(gpu="h100", image="ghcr.io/me/srv:1", ports=[8000],
                                         name="req-name"),
        "Compute": Compute(id="pod-123", provider="runpod", status="running", gpu_type="h100_sxm",
                           gpu_count=2, cost_per_hour=5.98, region="US-TX-3", image="img:1",
                           name="atlas-demo", auth=handle,
                           ports=[PortMapping(internal=8000, url="https://pod-123-8000.x")],
                           created_at=datetime(2024, 5, 1, tzinfo=UTC)),
        "JobRequest": JobRequest(endpoint="ep-42", input={"prompt": "hi"}, mode="sync",
                                 timeout_ms=5000),
        "Job": Job(id="job-77", endpoint="ep-42", provider="runpod", status="completed",
                   output={"text": "hello"}, execution_time_ms=123),
        "GpuType": GpuType(provider="lambda_labs", id="gpu_8x_h100_sxm5", canonical="h100_sxm",
                           display_name="H100 SXM 80GB", memory_gb=80, gpu_count=8,
                           price_per_hour=23.92, regions=("us-east-1",)),
    }


MODEL_NAMES = ["PortMapping", "AuthHandle", "ComputeRequest", "Compute", "JobRequest", "Job",
               "GpuType"]

# Values each model's HTML must show.
HTML_SHOWS: dict[str, tuple[str, ...]] = {
    "PortMapping": ("8000", "http", "https://pod-8000.example"),
    "AuthHandle": ("bearer", "h" * 64, "ATLAS_PRESHARED_KEY"),
    "ComputeRequest": ("h100", "ghcr.io/me/srv:1", "req-name"),
    "Compute": ("pod-123", "runpod", "running", "h100_sxm", "5.98", "US-TX-3", "atlas-demo",
                "https://pod-123-8000.x", "bearer"),
    "JobRequest": ("ep-42", "sync", "5000", "prompt"),
    "Job": ("job-77", "ep-42", "completed", "hello", "123"),
    "GpuType": ("gpu_8x_h100_sxm5", "h100_sxm", "H100 SXM 80GB", "23.92", "us-east-1"),
}


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_every_model_is_frozen(name: str) -> None:
    model = _samples()[name]
    field = next(iter(type(model).model_fields))
    before = getattr(model, field)
    with pytest.raises((pydantic.ValidationError, TypeError, AttributeError)):
        setattr(model, field, before)
    assert getattr(model, field) == before
    assert type(model).model_config.get("frozen") is True


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_every_model_has_an_html_repr_with_its_values(name: str) -> None:
    model = _samples()[name]
    html = model._repr_html_()
    assert html.startswith("<table")
    assert name in html
    for value in HTML_SHOWS[name]:
        assert value in html, f"{name} HTML lacks {value!r}"


def test_html_escapes_values() -> None:
    c = Compute(id="<script>alert(1)</script>", provider="mock")
    html = c._repr_html_()
    assert "<script>" not in html
    assert "&lt;script&gt;" in html


def test_every_model_is_exported() -> None:
    for name in MODEL_NAMES:
        assert getattr(atlas_nb, name).__name__ == name


def test_unknown_fields_are_rejected_with_the_field_name() -> None:
    with pytest.raises(atlas_nb.ValidationError, match=r"ComputeRequest\.gpus"):
        ComputeRequest(image="x", gpus=2)


class TestPorts:
    @pytest.mark.parametrize(
        ("value", "internal", "protocol"),
        [
            ((8000, "http"), 8000, "http"),
            ((22, "tcp"), 22, "tcp"),
            (("8000", "udp"), 8000, "udp"),
            ([8888, "HTTP"], 8888, "http"),
            ((443, "https"), 443, "http"),
            ("8000/http", 8000, "http"),
            ("22/tcp", 22, "tcp"),
            (" 9000 / TCP ", 9000, "tcp"),
            ("8000", 8000, "http"),
            (8000, 8000, "http"),
            ({"internal": 7000, "protocol": "tcp"}, 7000, "tcp"),
            (PortMapping(internal=5000, protocol="udp"), 5000, "udp"),
        ],
    )
    def test_parse_forms(self, value: Any, internal: int, protocol: str) -> None:
        p = PortMapping.parse(value)
        assert (p.internal, p.protocol) == (internal, protocol)
        assert p.spec == f"{internal}/{protocol}"

    def test_parse_returns_the_same_mapping(self) -> None:
        p = PortMapping(internal=1, protocol="tcp")
        assert PortMapping.parse(p) is p

    @pytest.mark.parametrize(
        ("ports", "expected"),
        [
            ([(8000, "http")], ("8000/http",)),
            ((8000, "http"), ("8000/http",)),
            ("8000/http", ("8000/http",)),
            (8000, ("8000/http",)),
            (PortMapping(internal=22, protocol="tcp"), ("22/tcp",)),
            (["8000/http", (22, "tcp"), 9000, PortMapping(internal=53, protocol="udp")],
             ("8000/http", "22/tcp", "9000/http", "53/udp")),
            ((8000, 8001), ("8000/http", "8001/http")),
            (("8000/http", "22/tcp"), ("8000/http", "22/tcp")),
            (None, ()),
            ([], ()),
        ],
    )
    def test_request_ports(self, ports: Any, expected: tuple[str, ...]) -> None:
        req = ComputeRequest(image="img", ports=ports)
        assert tuple(p.spec for p in req.ports) == expected
        assert all(isinstance(p, PortMapping) for p in req.ports)

    @pytest.mark.parametrize(
        "ports",
        [[(8000, "ftp")], "8000/ftp", ["80/sctp"], [(8000, "http", "x")], ["http/8000"],
         [True], [(True, "tcp")], [3.5]],
    )
    def test_bad_ports_name_the_field_and_the_fix(self, ports: Any) -> None:
        with pytest.raises(atlas_nb.ValidationError) as info:
            ComputeRequest(image="img", ports=ports)
        msg = str(info.value)
        assert msg.startswith("ComputeRequest.ports:")
        assert re.search(r"; (use|write) ", msg), msg  # every message says how to fix it

    def test_unknown_protocol_lists_the_known_ones(self) -> None:
        with pytest.raises(atlas_nb.ValidationError) as info:
            ComputeRequest(image="img", ports=[(8000, "ftp")])
        msg = str(info.value)
        assert "'ftp'" in msg
        assert "'http'" in msg and "'tcp'" in msg and "'udp'" in msg

    @pytest.mark.parametrize("port", [0, 65536, -1])
    def test_port_range(self, port: int) -> None:
        with pytest.raises(atlas_nb.ValidationError, match=r"PortMapping\.internal"):
            PortMapping(internal=port)


class TestEnv:
    def test_values_become_strings(self) -> None:
        req = ComputeRequest(image="img", env={"A": 1, "B": 2.5, "C": True, "D": False, "E": "x"})
        assert req.env == {"A": "1", "B": "2.5", "C": "true", "D": "false", "E": "x"}
        assert all(isinstance(v, str) for v in req.env.values())

    def test_none_is_empty(self) -> None:
        assert ComputeRequest(image="img", env=None).env == {}

    @pytest.mark.parametrize(
        "env", [{"A": None}, {"A": {"nested": 1}}, {"A": [1]}, {"": "x"}, {1: "x"}, ["A=1"]],
    )
    def test_bad_env(self, env: Any) -> None:
        with pytest.raises(atlas_nb.ValidationError, match=r"^ComputeRequest\.env"):
            ComputeRequest(image="img", env=env)

    def test_env_values_stay_out_of_repr_and_html(self) -> None:
        req = ComputeRequest(image="img", env={"HF_TOKEN": "hf_SECRET_value_123"})
        assert "hf_SECRET_value_123" not in repr(req)
        assert "hf_SECRET_value_123" not in str(req)
        assert "hf_SECRET_value_123" not in req._repr_html_()


class TestComputeRequestValidation:
    @pytest.mark.parametrize(
        ("kwargs", "field", "fix"),
        [
            ({"gpu_count": 0}, "gpu_count", "gpu_count=1"),
            ({"gpu_count": -4}, "gpu_count", "gpu_count=1"),
            ({"idle_ttl_ms": -1}, "idle_ttl_ms", "milliseconds"),
            ({"image": ""}, "image", "image='registry/name:tag'"),
            ({"image": "   "}, "image", "image='registry/name:tag'"),
            ({"image": None}, "image", "image='registry/name:tag'"),
            ({"auth": "basic"}, "auth", "'bearer'"),
            ({"cloud_type": "cheap"}, "cloud_type", "'community'"),
        ],
    )
    def test_message_names_field_and_fix(self, kwargs: dict[str, Any], field: str,
                                         fix: str) -> None:
        args = {"image": "img:1", **kwargs}
        with pytest.raises(atlas_nb.ValidationError) as info:
            ComputeRequest(**args)
        msg = str(info.value)
        assert msg.startswith(f"ComputeRequest.{field}:"), msg
        assert fix in msg, msg
        assert "\n" not in msg  # one line
        assert info.value.kind == "validation"

    def test_missing_image_is_fine_with_a_template(self) -> None:
        req = ComputeRequest(template_id="tpl-1")
        assert req.image is None and req.template_id == "tpl-1"

    def test_image_is_stripped(self) -> None:
        assert ComputeRequest(image="  img:1 ").image == "img:1"

    def test_unknown_gpu_lists_close_matches(self) -> None:
        with pytest.raises(atlas_nb.ValidationError) as info:
            ComputeRequest(image="img", gpu="h1000")
        msg = str(info.value)
        assert msg.startswith("ComputeRequest.gpu:")
        assert "'h1000'" in msg and "did you mean" in msg and "h100" in msg

    @pytest.mark.parametrize(("gpu", "expected"),
                             [("H100", "h100"), ("h100-sxm", "h100_sxm"), ("A100", "a100_80g"),
                              ("RTX 4090", "rtx_4090"), ("cpu", None), ("", None), (None, None)])
    def test_gpu_is_canonical(self, gpu: str | None, expected: str | None) -> None:
        assert ComputeRequest(image="img", gpu=gpu).gpu == expected

    def test_region_hints_accept_one_string(self) -> None:
        assert ComputeRequest(image="i", region_hints="US-TX-3").region_hints == ("US-TX-3",)
        assert ComputeRequest(image="i", region_hints=["a", "b"]).region_hints == ("a", "b")

    def test_defaults(self) -> None:
        req = ComputeRequest(image="img")
        assert (req.gpu, req.gpu_count, req.auth, req.cloud_type, req.spot) == (
            None, 1, "none", "any", False)
        assert req.ports == () and req.env == {} and req.idle_ttl_ms is None


class TestJobModels:
    def test_job_request_validation(self) -> None:
        with pytest.raises(atlas_nb.ValidationError, match=r"^JobRequest\.endpoint"):
            JobRequest(endpoint="")
        with pytest.raises(atlas_nb.ValidationError, match=r"^JobRequest\.mode.*mode='sync'"):
            JobRequest(endpoint="e", mode="later")
        with pytest.raises(atlas_nb.ValidationError, match=r"^JobRequest\.timeout_ms"):
            JobRequest(endpoint="e", timeout_ms=0)

    def test_job_done(self) -> None:
        for status, done in [("in_queue", False), ("in_progress", False), ("completed", True),
                             ("failed", True), ("cancelled", True), ("timed_out", True)]:
            assert Job(id="j", endpoint="e", provider="p", status=status).done is done

    def test_unknown_job_status_is_rejected(self) -> None:
        with pytest.raises(atlas_nb.ValidationError, match=r"^Job\.status"):
            Job(id="j", endpoint="e", provider="p", status="weird")


class TestCompute:
    def test_cost_is_coerced_to_float(self) -> None:
        assert Compute(id="a", provider="p", cost_per_hour="0.44").cost_per_hour == 0.44
        assert Compute(id="a", provider="p", cost_per_hour=None).cost_per_hour == 0.0
        assert Compute(id="a", provider="p", cost_per_hour="").cost_per_hour == 0.0

    def test_url_and_ready(self) -> None:
        c = Compute(id="a", provider="p", status="running",
                    ports=[PortMapping(internal=22, protocol="tcp", url="tcp://1.2.3.4:2222"),
                           PortMapping(internal=8000, url="https://a-8000.x")])
        assert c.url == "https://a-8000.x"
        assert c.ready
        assert not c.model_copy(update={"status": "provisioning"}).ready
        waiting = Compute(id="a", provider="p", status="running",
                          ports=[PortMapping(internal=8000)])
        assert not waiting.ready and waiting.url is None

    def test_unknown_status_is_rejected_by_the_model(self) -> None:
        with pytest.raises(atlas_nb.ValidationError, match=r"^Compute\.status"):
            Compute(id="a", provider="p", status="booting")


class TestAuthHandleSecrecy:
    def test_token_never_in_repr_str_or_html(self) -> None:
        handle = _samples()["AuthHandle"]
        for text in (repr(handle), str(handle), handle._repr_html_()):
            assert TOKEN not in text

    def test_token_never_in_the_compute_that_carries_it(self) -> None:
        c = _samples()["Compute"]
        assert c.auth is not None and c.auth.token == TOKEN
        for text in (repr(c), str(c), c._repr_html_()):
            assert TOKEN not in text

    def test_headers(self) -> None:
        handle = _samples()["AuthHandle"]
        assert handle.headers() == {"Authorization": f"Bearer {TOKEN}"}
        signed = AuthHandle(scheme="signed_url", token="secret-secret")
        assert signed.headers() == {}
