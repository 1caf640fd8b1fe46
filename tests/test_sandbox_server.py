"""The sandbox runner: real loopback sockets, attach/detach, clean shutdown, in-process mode."""

from __future__ import annotations

import socket
import threading
import time

import httpx
import pytest

import atlas_nb.sandbox as sandbox
from atlas_nb.sandbox.registry import names as cloud_names
from atlas_nb.sandbox.server import INPROCESS_URL, Sandbox

AUTH = {"Authorization": f"Bearer {sandbox.sandbox_key('runpod')}"}


def _port_is_free(port: int) -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def test_start_serves_over_loopback_and_stops_without_leaks() -> None:
    before = set(threading.enumerate())
    with sandbox.start(provision_delay_s=0, start_delay_s=0) as sb:
        assert sb.url.startswith("http://127.0.0.1:")
        assert sandbox.active_url() == sb.url
        assert set(sb.keys) == set(cloud_names())  # every registered cloud is served
        assert {"runpod", "fly", "lambda_labs", "vast"} <= set(sb.keys)
        assert all(key == sandbox.sandbox_key(name) for name, key in sb.keys.items())
        assert sb.keys["runpod"] == "sandbox-runpod-key"
        index = httpx.get(f"{sb.url}/").json()["clouds"]
        assert set(index) == set(cloud_names())
        assert index["runpod"]["apis"] == {
            "rest": "/runpod/rest",
            "graphql": "/runpod/graphql",
            "serverless": "/runpod/serverless",
        }
        with httpx.Client(base_url=sb.url, headers=AUTH) as http:
            created = http.post(
                "/runpod/rest/v2/pods",
                json={"name": "sock", "image": "i", "gpu": {"id": "NVIDIA L4"}},
            )
            assert created.status_code == 201
            job = http.post("/runpod/serverless/v2/echo/runsync", json={"input": 1}).json()
            assert job["output"] == {"echo": 1}  # starts a worker thread: it must be joined too
        with sb.client(headers=AUTH) as inproc:  # starts the in-process loop thread
            assert inproc.get("/runpod/rest/v2/pods").json()["pods"][0]["name"] == "sock"
        port = sb.port
        assert not _port_is_free(port)
    assert sandbox.active_url() is None
    assert set(threading.enumerate()) == before
    assert _port_is_free(port)
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"http://127.0.0.1:{port}/", timeout=2)


def test_two_sandboxes_at_once_are_independent() -> None:
    with Sandbox(provision_delay_s=0, start_delay_s=0) as one, Sandbox() as two:
        assert one.port != two.port
        assert sandbox.active_url() == two.url  # the most recent attach wins
        body = {"name": "only-in-one", "image": "i", "gpu": {"id": "NVIDIA L4"}}
        assert (
            httpx.post(f"{one.url}/runpod/rest/v2/pods", json=body, headers=AUTH).status_code == 201
        )
        assert len(one.runpod.live_pods()) == 1
        assert two.runpod.live_pods() == []
        assert httpx.get(f"{two.url}/runpod/rest/v2/pods", headers=AUTH).json() == {"pods": []}
        two.close()
        assert sandbox.active_url() == one.url
        assert httpx.get(f"{one.url}/runpod/rest/v2/pods", headers=AUTH).status_code == 200
    assert sandbox.active_url() is None


def test_detach_all_undoes_every_attach_and_says_what_was_attached(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    sandbox.attach("http://one:1/")
    sandbox.attach("http://two:2")
    assert sandbox.attached() == ["http://one:1", "http://two:2"]
    assert sandbox.active_url() == "http://two:2"
    assert sandbox.detach_all() == ["http://one:1", "http://two:2"]
    assert sandbox.attached() == [] and sandbox.active_url() is None
    assert sandbox.detach_all() == []
    monkeypatch.setenv("ATLAS_NB_SANDBOX", "http://env:3/")
    assert sandbox.active_url() == "http://env:3"  # the env var is not an attach


def test_fixed_port_and_port_in_use() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with Sandbox(port=port, attach=False) as sb:
        assert sb.url == f"http://127.0.0.1:{port}"
        clash = Sandbox(port=port, attach=False)
        with pytest.raises(RuntimeError, match="cannot listen"):
            clash.start()
        clash.close()


def test_in_process_mode_binds_nothing() -> None:
    before = set(threading.enumerate())
    sb = Sandbox(start_server=False, provision_delay_s=0, start_delay_s=0)
    with sb:
        assert sb.url == INPROCESS_URL and sandbox.active_url() == INPROCESS_URL
        with sb.client(headers=AUTH) as http:
            r = http.post(
                "/runpod/rest/v2/pods",
                json={"name": "inproc", "image": "i", "gpu": {"id": "NVIDIA L4"}},
            )
            assert r.status_code == 201 and r.json()["status"] == "RUNNING"
            assert http.get("/nowhere").status_code == 404
    assert sandbox.active_url() is None
    assert set(threading.enumerate()) == before
    with pytest.raises(RuntimeError, match="closed"):
        sb.client()
    with pytest.raises(RuntimeError, match="restarted"):
        sb.start()


def test_asgi_app_works_under_another_asgi_host() -> None:
    from starlette.testclient import TestClient

    sb = Sandbox(start_server=False, attach=False)
    with TestClient(sb.asgi_app) as client:
        assert client.get("/runpod/rest/v2/pods", headers=AUTH).json() == {"pods": []}
    sb.close()


def test_attach_points_providers_at_the_sandbox() -> None:
    from atlas_nb import config

    with Sandbox(attach=True) as sb:
        assert config.resolve_base_url("runpod", "rest", "https://api.runpod.io") == (
            f"{sb.url}/runpod/rest"
        )
        assert config.resolve_api_key("runpod") == "sandbox-runpod-key"
    assert config.resolve_base_url("runpod", "rest", "https://api.runpod.io") == (
        "https://api.runpod.io"
    )


def test_read_timeout_applies_in_process() -> None:
    with (
        Sandbox(start_server=False, attach=False) as sb,
        sb.client(headers=AUTH) as http,
        pytest.raises(httpx.ReadTimeout),
    ):
        http.post(
            "/runpod/serverless/v2/slow/runsync",
            json={"input": {"seconds": 5}},
            timeout=0.2,
        )


def test_other_clouds_are_reachable_as_attributes() -> None:
    sb = Sandbox(start_server=False, attach=False)
    try:
        assert sb.runpod is sb.clouds["runpod"]
        assert getattr(sb, "runpod") is sb.runpod  # noqa: B009 - the generic lookup path
        with pytest.raises(AttributeError):
            _ = sb.no_such_cloud
        assert "runpod" in repr(sb)
    finally:
        sb.close()


def test_choose_which_clouds_to_serve() -> None:
    sb = Sandbox(start_server=False, attach=False, clouds=["runpod"])
    try:
        assert list(sb.clouds) == ["runpod"] and list(sb.keys) == ["runpod"]
    finally:
        sb.close()
    with pytest.raises(ValueError, match="no sandbox cloud 'nope'"):
        Sandbox(start_server=False, attach=False, clouds=["nope"])


def test_close_wakes_pending_long_polls() -> None:
    before = set(threading.enumerate())
    sb = Sandbox(clouds=["runpod"], attach=False).start()
    answer: dict[str, object] = {}

    def runsync() -> None:  # would wait 90 s for the 30 s job without the wake-up
        answer.update(
            httpx.post(
                f"{sb.url}/runpod/serverless/v2/slow/runsync",
                json={"input": {"seconds": 30}},
                headers=AUTH,
                timeout=60,
            ).json()
        )

    caller = threading.Thread(target=runsync)
    caller.start()
    # Close only once the runsync is really parked on its job: "in flight" alone can be a
    # request still in the middleware, which a closing server may refuse instead of waking.
    slow = sb.runpod.serverless.endpoints["slow"]
    deadline = time.monotonic() + 30
    while not any(job.waiters for job in list(slow.jobs.values())):
        assert time.monotonic() < deadline, "the runsync never started waiting"
        caller.join(0.01)
    sb.close()
    caller.join(10)
    assert answer["status"] in {"IN_QUEUE", "IN_PROGRESS"}
    assert set(threading.enumerate()) == before
