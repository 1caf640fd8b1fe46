"""Contract checks: requests and responses are validated against the vendored specs."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from atlas_nb.sandbox.app import SandboxApp, Stats
from atlas_nb.sandbox.cloud import Api
from atlas_nb.sandbox.contract import Contract, HttpExchange
from atlas_nb.sandbox.faults import Faults
from atlas_nb.sandbox.inprocess import InProcessTransport, LoopThread
from atlas_nb.sandbox.runpod.rest import problem
from atlas_nb.sandbox.schemas import SPEC_DIR, component_errors, load_spec

SPEC = "runpod/rest-v2-openapi.json"
AUTH = {"authorization": "Bearer k"}

# sha256 of each vendored spec, from shared/specs/PROVENANCE.md: the copies must stay verbatim.
VENDORED = {
    "runpod/rest-v2-openapi.json": (
        "b8bce61c5a2290d28a7cb2ed53173637166817249986cb18b101b2fd651fd313"
    ),
    "lambda/lambda-cloud-api-openapi-1.8.3.json": (
        "e848f3e22b533929474c8661561ba271b16eeffbc0d4c2697b6b45b2fc4ceb8f"
    ),
    "vast/vast-openapi.yaml": "84fdb88342dcca514b87795a16a9751b5e6805341034ec8ca24fbf3519d42b25",
    "fly/machines-openapi3.json": (
        "45efe4aaecb2f7c0185831792cd7335528990a304bbbb7eb7e6f91725c53daeb"
    ),
}


def test_vendored_specs_are_byte_identical_to_the_shared_ones() -> None:
    for name, digest in VENDORED.items():
        assert hashlib.sha256((SPEC_DIR / name).read_bytes()).hexdigest() == digest, name
        assert load_spec(name)["paths"], name  # and they parse (JSON and YAML)
    assert (SPEC_DIR / "PROVENANCE.md").is_file()


def _example(path: str, method: str, status: str) -> bytes:
    op = load_spec(SPEC)["paths"][path][method]
    examples = op["responses"][status]["content"]["application/json"]["examples"]
    return json.dumps(next(iter(examples.values()))["value"]).encode()


def test_spec_examples_pass_and_broken_responses_fail() -> None:
    contract = Contract(SPEC)
    ok = HttpExchange(
        "GET",
        "/v2/pods/abc",
        headers=AUTH,
        status=200,
        response_headers={"content-type": "application/json"},
        response_body=_example("/v2/pods/{id}", "get", "200"),
    )
    assert contract.check_response(ok) == []
    broken = json.loads(ok.response_body)
    del broken["status"]
    broken["cost"] = "0.44"
    bad = HttpExchange(
        "GET",
        "/v2/pods/abc",
        headers=AUTH,
        status=200,
        response_headers={"content-type": "application/json"},
        response_body=json.dumps(broken).encode(),
    )
    problems = contract.check_response(bad)
    assert "$: 'status' is a required property" in problems
    assert "$.cost: '0.44' is not of type 'number'" in problems
    wrong_type = HttpExchange(
        "GET",
        "/v2/pods/abc",
        headers=AUTH,
        status=404,
        response_headers={"content-type": "application/json"},
        response_body=b'{"title": "Not Found", "status": 404, "detail": "x"}',
    )
    assert any("application/problem+json" in p for p in contract.check_response(wrong_type))


def test_request_checks() -> None:
    contract = Contract(SPEC)
    good = HttpExchange(
        "POST",
        "/v2/pods",
        headers={**AUTH, "content-type": "application/json"},
        body=b'{"name": "n", "image": "i", "gpu": {"id": "x"}}',
    )
    assert contract.check_request(good) == []
    no_image = HttpExchange(
        "POST",
        "/v2/pods",
        headers={**AUTH, "content-type": "application/json"},
        body=b'{"name": "n", "gpu": {"id": "x"}}',
    )
    assert "$: 'image' is a required property" in contract.check_request(no_image)
    assert contract.check_request(
        HttpExchange("GET", "/v2/pods", query=[("status", "RUNNING")], headers=AUTH)
    ) == ["query parameter 'status' is not declared for GET /v2/pods (the real API ignores it)"]
    assert (
        contract.check_request(
            HttpExchange("GET", "/v2/pods", query=[("includeClusterPods", "true")], headers=AUTH)
        )
        == []
    )
    assert contract.template("/v2/pods/abc/action") == "/v2/pods/{id}/action"
    assert contract.template("/v2/registries/delegations") == "/v2/registries/delegations"
    assert contract.template("/v1/pods") is None


def test_component_errors_read_like_the_spec_example() -> None:
    assert component_errors(SPEC, "PodActionRequest", {"action": "stop"}) == []
    assert component_errors(SPEC, "PodActionRequest", {"action": "stop", "bogus": 1}) == [
        "$: Additional properties are not allowed ('bogus' was unexpected)"
    ]


class _BrokenCloud:
    """A cloud whose REST API answers with a pod that breaks the spec."""

    name = "broken"

    def apis(self) -> Sequence[Api]:
        async def get_pod(request: Request) -> Response:
            return JSONResponse({"id": request.path_params["id"]})

        app = Starlette(routes=[Route("/v2/pods/{id}", get_pod)])
        return [Api("rest", app, problem, spec=SPEC)]

    def close(self) -> None:
        pass


def test_the_sandbox_records_response_violations_before_answering() -> None:
    import httpx

    seen: list[str] = []
    app = SandboxApp([_BrokenCloud()], Faults(), Stats(), validate=True, report=seen.append)
    loop = LoopThread()
    try:
        with httpx.Client(transport=InProcessTransport(app, loop), base_url="http://sb") as http:
            r = http.get("/broken/rest/v2/pods/p1", headers={"Authorization": "Bearer k"})
        assert r.status_code == 200 and r.json() == {"id": "p1"}  # delivered unchanged
    finally:
        loop.stop()
    assert "broken/rest GET /v2/pods/p1: response 200: $: 'name' is a required property" in seen
