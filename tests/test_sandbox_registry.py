"""Which clouds the sandbox serves comes from the provider registry and the
``atlas_nb.sandbox_clouds`` entry points: there is no second list to edit."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from importlib.metadata import EntryPoint
from typing import Any, ClassVar

import pytest
from starlette.responses import Response

from atlas_nb import providers
from atlas_nb.sandbox import registry
from atlas_nb.sandbox.cloud import Api, CloudContext, json_response
from atlas_nb.sandbox.server import Sandbox

BUILT_IN = {"runpod", "fly", "lambda_labs", "vast"}


class TinyCloud:
    """A cloud in a few lines: one API answering its own name."""

    name = "tiny"

    def __init__(self, ctx: CloudContext) -> None:
        self.ctx = ctx

    def apis(self) -> Sequence[Api]:
        async def app(scope: Any, receive: Any, send: Any) -> None:
            await json_response({"cloud": self.name, "path": scope["path"]})(scope, receive, send)

        def error(status: int, detail: str, headers: Mapping[str, str] | None) -> Response:
            return json_response({"error": detail}, status, headers)

        return [Api("api", app, error)]

    def close(self) -> None:
        pass


class AcmeCloud(TinyCloud):
    name = "acme"


class TinyProvider:
    """Just enough of a provider class for the registry to read its facts."""

    name: ClassVar[str] = "tiny"
    sandbox_cloud: ClassVar[str | None] = f"{__name__}:TinyCloud"


@pytest.fixture
def clean_registry(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setattr(providers, "_custom", {})
    monkeypatch.setattr(providers, "_facts", {})
    monkeypatch.setattr(providers, "_aliases", None)
    yield


def _entry_points(*points: tuple[str, str]) -> Any:
    def fake(*, group: str) -> list[EntryPoint]:
        assert group == registry.ENTRY_POINT_GROUP == "atlas_nb.sandbox_clouds"
        return [EntryPoint(name=n, value=v, group=group) for n, v in points]

    return fake


def test_every_built_in_provider_names_its_cloud_and_offline_ones_have_none() -> None:
    assert set(registry.names()) >= BUILT_IN
    assert "mock" in providers.names() and "mock" not in registry.names()
    for name in BUILT_IN:
        assert registry.clouds()[name] == providers.facts(name).sandbox_cloud
        cls = registry.load(name)
        assert cls.name == name and cls.__module__ == f"atlas_nb.sandbox.{name}"


def test_a_registered_provider_brings_its_cloud(clean_registry: None) -> None:
    providers.register("tiny", TinyProvider)
    assert "tiny" in registry.names() and registry.load("tiny") is TinyCloud
    with Sandbox(start_server=False, attach=False, clouds=["tiny"]) as sb, sb.client() as http:
        assert http.get("/tiny/api/hello").json() == {"cloud": "tiny", "path": "/tiny/api/hello"}
        assert set(http.get("/").json()["clouds"]) == {"tiny"}


def test_an_entry_point_ships_a_cloud_with_no_change_to_atlas_nb(
    clean_registry: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(registry, "entry_points", _entry_points(
        ("acme", f"{__name__}:AcmeCloud"),
        ("runpod", f"{__name__}:TinyCloud"),  # a provider's own pointer wins over this one
    ))
    assert registry.load("acme") is AcmeCloud
    assert registry.clouds()["runpod"] == "atlas_nb.sandbox.runpod:RunPodCloud"
    with Sandbox(start_server=False, attach=False) as sb:
        assert BUILT_IN | {"acme"} == set(sb.clouds)
        with sb.client() as http:
            assert http.get("/acme/api/x").json()["cloud"] == "acme"
            assert http.get("/runpod/rest/v2/pods").status_code == 401  # the real RunPod


def test_an_unknown_cloud_is_refused_with_the_known_ones() -> None:
    with pytest.raises(ValueError, match="no sandbox cloud 'nimbus'; known: runpod"):
        registry.load("nimbus")
    with pytest.raises(ValueError, match="nimbus"):
        Sandbox(start_server=False, attach=False, clouds=["nimbus"])
