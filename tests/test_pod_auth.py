"""atlas_nb.pod_auth.PodAuthMiddleware: plain ASGI and inside Starlette."""

from __future__ import annotations

import json
import logging
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import urlsplit

import anyio
import httpx
import pytest
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route, WebSocketRoute
from starlette.testclient import TestClient
from starlette.websockets import WebSocket, WebSocketDisconnect

from atlas_nb import ValidationError
from atlas_nb.auth import hash_token, mint_secret, mint_token, sign_url
from atlas_nb.pod_auth import WS_CLOSE_UNAUTHORIZED, PodAuthMiddleware

NOW = 1_700_000_000
TOKEN = mint_token()
SECRET = mint_secret()


# ------------------------------------------------------------- plain ASGI, no framework

Message = dict[str, Any]


def run_http(app: Callable[..., Any], *, path: str = "/x", query: bytes = b"",
             headers: list[tuple[bytes, bytes]] | None = None) -> list[Message]:
    """Drive one HTTP request through an ASGI app by hand; return what it sent."""
    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1",
             "method": "GET", "scheme": "http", "path": path, "raw_path": path.encode(),
             "query_string": query, "root_path": "",
             "headers": headers if headers is not None else [(b"host", b"pod.example")]}
    sent: list[Message] = []

    async def receive() -> Message:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: Message) -> None:
        sent.append(message)

    anyio.run(app, scope, receive, send)
    return sent


async def echo(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """The protected app: 200 with the path."""
    assert scope["type"] == "http"
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": scope["path"].encode()})


def status_and_body(sent: list[Message]) -> tuple[int, bytes, dict[bytes, bytes]]:
    start, body = sent
    return start["status"], body["body"], dict(start["headers"])


def test_plain_wrapping_rejects_with_401_json_and_www_authenticate() -> None:
    guarded = PodAuthMiddleware(echo, token=TOKEN.token)
    status, body, headers = status_and_body(run_http(guarded))
    assert status == 401
    assert json.loads(body) == {"error": "unauthorized", "reason": "missing_credentials"}
    assert headers[b"www-authenticate"] == b"Bearer"
    assert headers[b"content-type"] == b"application/json"
    assert headers[b"content-length"] == str(len(body)).encode()


def test_plain_wrapping_admits_the_bearer_token() -> None:
    guarded = PodAuthMiddleware(echo, token_hash=TOKEN.hash)
    auth = (b"authorization", f"Bearer {TOKEN.token}".encode())
    sent = run_http(guarded, headers=[(b"host", b"pod.example"), auth])
    assert status_and_body(sent)[:2] == (200, b"/x")


def test_plain_wrapping_admits_a_signed_url() -> None:
    guarded = PodAuthMiddleware(echo, signing_secret=SECRET, clock=lambda: NOW)
    url = urlsplit(sign_url("https://pod.example/x?a=1", secret=SECRET, now=NOW))
    sent = run_http(guarded, query=url.query.encode())
    assert status_and_body(sent)[:2] == (200, b"/x")
    forged = url.query.replace("a=1", "a=2").encode()
    status, body, _ = status_and_body(run_http(guarded, query=forged))
    assert (status, json.loads(body)["reason"]) == (401, "bad_signature")


def test_lifespan_and_unknown_scopes_pass_through() -> None:
    seen: list[str] = []

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        seen.append(scope["type"])

    guarded = PodAuthMiddleware(app, token=TOKEN.token)

    async def nothing() -> Message:
        return {}

    async def drop(message: Message) -> None:
        raise AssertionError("the middleware must not answer a lifespan scope")

    anyio.run(guarded, {"type": "lifespan"}, nothing, drop)
    assert seen == ["lifespan"]


def test_plain_websocket_is_accepted_then_closed_with_4401_without_running_the_app() -> None:
    # A close before accept makes real servers (uvicorn) answer a bare 403, and the
    # browser would never see 4401; so the middleware must accept first.
    called: list[str] = []

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        called.append(scope["type"])

    guarded = PodAuthMiddleware(app, token=TOKEN.token)
    scope = {"type": "websocket", "scheme": "ws", "path": "/ws", "query_string": b"",
             "headers": [(b"host", b"pod.example")]}
    sent: list[Message] = []

    async def receive() -> Message:
        return {"type": "websocket.connect"}

    async def send(message: Message) -> None:
        sent.append(message)

    anyio.run(guarded, scope, receive, send)
    assert sent == [{"type": "websocket.accept"},
                    {"type": "websocket.close", "code": 4401,
                     "reason": "unauthorized: missing_credentials"}]
    assert called == []


# ------------------------------------------------------------------------ Starlette


async def hello(request: Request) -> JSONResponse:
    return JSONResponse({"path": request.url.path, "q": dict(request.query_params)})


async def ws_echo(websocket: WebSocket) -> None:
    await websocket.accept()
    await websocket.send_text("hello")
    await websocket.close()


ROUTES = [Route("/x", hello), Route("/health", hello), Route("/files/{name}", hello),
          WebSocketRoute("/ws", ws_echo)]


def client(**options: Any) -> TestClient:
    app = Starlette(routes=ROUTES)
    options.setdefault("clock", lambda: NOW)
    app.add_middleware(PodAuthMiddleware, **options)
    return TestClient(app)


BOTH: dict[str, Any] = {"token_hash": TOKEN.hash, "signing_secret": SECRET}


def reason(response: Any) -> str:
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == "Bearer"
    body = response.json()
    assert body["error"] == "unauthorized"
    return str(body["reason"])


def test_bearer_header_variants() -> None:
    c = client(**BOTH)
    assert c.get("/x", headers={"Authorization": f"Bearer {TOKEN.token}"}).json()["path"] == "/x"
    assert c.get("/x", headers={"Authorization": f"bearer  {TOKEN.token} "}).status_code == 200
    assert reason(c.get("/x")) == "missing_credentials"
    for bad in (f"Bearer {TOKEN.token}x", f"Basic {TOKEN.token}", "Bearer", "Bearer a b",
                f"Bearer {mint_token().token}", TOKEN.token):
        assert reason(c.get("/x", headers={"Authorization": bad})) == "bad_token", bad


def test_repeated_authorization_header_never_authenticates() -> None:
    c = client(**BOTH)
    good = ("authorization", f"Bearer {TOKEN.token}")
    assert reason(c.get("/x", headers=[good, ("authorization", "Bearer nope")])) == "bad_token"
    assert reason(c.get("/x", headers=[good, good])) == "bad_token"


def test_signed_url_admitted_and_every_failure_reason() -> None:
    c = client(**BOTH)
    url = sign_url("http://testserver/x?model=a&model=b", secret=SECRET, expires_in=60, now=NOW)
    ok = c.get(url)
    assert ok.status_code == 200 and ok.json()["q"]["model"] == "b"
    assert reason(c.get(url.replace("/x?", "/files/x?"))) == "bad_signature"
    assert reason(c.get(url.replace("model=a&model=b", "model=b&model=a"))) == "bad_signature"
    assert reason(c.get(url.replace("atlas_v=1", "atlas_v=2"))) == "malformed"
    assert reason(client(**BOTH, clock=lambda: NOW + 91).get(url)) == "expired"
    assert client(**BOTH, clock=lambda: NOW + 90).get(url).status_code == 200  # 30 s leeway
    assert reason(client(**BOTH, clock=lambda: NOW + 61, leeway_s=0).get(url)) == "expired"
    other_secret = sign_url("http://testserver/x", secret=mint_secret(), now=NOW)
    assert reason(c.get(other_secret)) == "bad_signature"


def test_signed_url_is_bound_to_the_host_header() -> None:
    c = client(**BOTH)
    url = sign_url("http://pod-a.example/x", secret=SECRET, now=NOW)
    path_and_query = url.removeprefix("http://pod-a.example")
    assert c.get(path_and_query, headers={"Host": "pod-a.example"}).status_code == 200
    assert c.get(path_and_query, headers={"Host": "POD-A.example:80"}).status_code == 200
    assert reason(c.get(path_and_query, headers={"Host": "pod-b.example"})) == "bad_signature"
    assert reason(c.get(path_and_query, headers={"Host": "pod-a.example:8080"})) == "bad_signature"
    assert reason(c.get(path_and_query, headers={"Host": "bad host/x"})) == "malformed"


def test_forwarded_host_only_when_trusted() -> None:
    url = sign_url("https://pod.example/x", secret=SECRET, now=NOW)
    path_and_query = url.removeprefix("https://pod.example")
    forwarded = {"X-Forwarded-Host": "pod.example", "X-Forwarded-Proto": "https"}
    assert reason(client(**BOTH).get(path_and_query, headers=forwarded)) == "bad_signature"
    trusted = client(**BOTH, trust_forwarded_host=True)
    assert trusted.get(path_and_query, headers=forwarded).status_code == 200


def test_signed_url_with_an_encoded_path() -> None:
    c = client(**BOTH)
    url = sign_url("http://testserver/files/a%20b.txt", secret=SECRET, now=NOW)
    response = c.get(url)
    assert response.status_code == 200 and response.json()["path"] == "/files/a b.txt"
    assert reason(c.get(url.replace("a%20b", "a%20c"))) == "bad_signature"


def test_signed_url_on_a_bearer_only_pod_is_refused() -> None:
    url = sign_url("http://testserver/x", secret=SECRET, now=NOW)
    assert reason(client(token_hash=TOKEN.hash).get(url)) == "missing_credentials"
    assert reason(client(signing_secret=SECRET).get(
        "/x", headers={"Authorization": f"Bearer {TOKEN.token}"})) == "bad_token"


def test_exempt_paths_are_exact() -> None:
    c = client(**BOTH)
    assert c.get("/health").status_code == 200
    assert reason(c.get("/health/")) == "missing_credentials"
    assert reason(c.get("/x")) == "missing_credentials"
    strict = client(**BOTH, exempt_paths=())
    assert reason(strict.get("/health")) == "missing_credentials"
    custom = client(**BOTH, exempt_paths=["/x"])
    assert custom.get("/x").status_code == 200


def test_websocket_rejected_with_4401_or_admitted() -> None:
    c = client(**BOTH)
    with pytest.raises(WebSocketDisconnect) as info, c.websocket_connect("/ws") as ws:
        ws.receive_text()
    assert info.value.code == WS_CLOSE_UNAUTHORIZED == 4401
    assert info.value.reason == "unauthorized: missing_credentials"
    headers = {"Authorization": f"Bearer {TOKEN.token}"}
    with c.websocket_connect("/ws", headers=headers) as ws:
        assert ws.receive_text() == "hello"
    signed = sign_url("ws://testserver/ws", secret=SECRET, now=NOW)
    with c.websocket_connect(signed.removeprefix("ws://testserver")) as ws:
        assert ws.receive_text() == "hello"
    forged = signed.removeprefix("ws://testserver").replace("atlas_exp=", "atlas_exp=1")
    with pytest.raises(WebSocketDisconnect) as info, c.websocket_connect(forged) as ws:
        ws.receive_text()
    assert (info.value.code, info.value.reason) == (4401, "unauthorized: bad_signature")


def test_middleware_list_style_and_from_env_as_factory() -> None:
    env = {"ATLAS_PRESHARED_KEY": TOKEN.token}
    app = Starlette(routes=ROUTES,
                    middleware=[Middleware(PodAuthMiddleware.from_env, environ=env)])
    c = TestClient(app)
    assert reason(c.get("/x")) == "missing_credentials"
    assert c.get("/x", headers={"Authorization": f"Bearer {TOKEN.token}"}).status_code == 200


def test_from_env_reads_both_variables_and_keeps_no_plain_token() -> None:
    env = {"ATLAS_PRESHARED_KEY": TOKEN.token, "ATLAS_SIGNING_SECRET": SECRET}
    mw = PodAuthMiddleware.from_env(echo, environ=env, clock=lambda: NOW)
    state = repr(vars(mw)) + repr(mw)
    assert TOKEN.token not in state and SECRET not in repr(mw)
    assert TOKEN.hash in state
    auth = (b"authorization", f"Bearer {TOKEN.token}".encode())
    assert status_and_body(run_http(mw, headers=[(b"host", b"h"), auth]))[0] == 200
    url = urlsplit(sign_url("http://pod.example/x", secret=SECRET, now=NOW))
    assert status_and_body(run_http(mw, query=url.query.encode()))[0] == 200


def test_from_env_reads_os_environ(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ATLAS_PRESHARED_KEY", TOKEN.token)
    monkeypatch.delenv("ATLAS_SIGNING_SECRET", raising=False)
    mw = PodAuthMiddleware.from_env(echo)
    auth = (b"authorization", f"Bearer {TOKEN.token}".encode())
    assert status_and_body(run_http(mw, headers=[(b"host", b"h"), auth]))[0] == 200


@pytest.mark.parametrize("env", [{}, {"ATLAS_PRESHARED_KEY": "", "ATLAS_SIGNING_SECRET": ""}])
def test_from_env_without_credentials_refuses_to_start_open(env: dict[str, str]) -> None:
    with pytest.raises(ValidationError, match="ATLAS_PRESHARED_KEY"):
        PodAuthMiddleware.from_env(echo, environ=env)


@pytest.mark.parametrize(("options", "match"), [
    ({}, "needs token"),
    ({"token": TOKEN.token, "token_hash": TOKEN.hash}, "not both"),
    ({"token": ""}, "non-empty"),
    ({"token_hash": "abc"}, "64 hex"),
    ({"signing_secret": "short"}, "too short"),
    ({"token_hash": TOKEN.hash, "exempt_paths": "/health"}, "exempt_paths"),
    ({"token_hash": TOKEN.hash, "leeway_s": -1}, "leeway_s"),
])
def test_constructor_validation(options: dict[str, Any], match: str) -> None:
    with pytest.raises(ValidationError, match=match):
        PodAuthMiddleware(echo, **options)


def test_uppercase_token_hash_is_accepted() -> None:
    guarded = PodAuthMiddleware(echo, token_hash=hash_token(TOKEN.token).upper())
    auth = (b"authorization", f"Bearer {TOKEN.token}".encode())
    assert status_and_body(run_http(guarded, headers=[(b"host", b"h"), auth]))[0] == 200


def test_rejections_are_logged_without_token_or_signature(
    caplog: pytest.LogCaptureFixture,
) -> None:
    c = client(**BOTH)
    url = sign_url("http://testserver/x?a=1", secret=SECRET, now=NOW)
    sig = url.split("atlas_sig=")[1]
    with caplog.at_level(logging.DEBUG):
        c.get("/x", headers={"Authorization": f"Bearer {TOKEN.token}x"})
        c.get("/x", headers={"Authorization": f"Bearer {TOKEN.token}"})
        c.get(url.replace("a=1", "a=2"))
        c.get(url)
    # Only our logger: the test client itself logs every URL it requests.
    ours = "\n".join(r.getMessage() for r in caplog.records if r.name.startswith("atlas_nb"))
    assert "rejected GET /x: bad_token" in ours
    assert "rejected GET /x: bad_signature" in ours
    for secret in (TOKEN.token, sig, SECRET):
        assert secret not in ours


def test_importable_without_any_web_framework() -> None:
    code = (
        "import sys\n"
        "class Block:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] in ('starlette', 'fastapi', 'uvicorn'):\n"
        "            raise ImportError('blocked ' + name)\n"
        "sys.meta_path.insert(0, Block())\n"
        "from atlas_nb.pod_auth import PodAuthMiddleware\n"
        "PodAuthMiddleware(lambda s, r, w: None, token='t' * 43)\n"
        "assert not any(m.split('.')[0] in ('starlette', 'fastapi') for m in sys.modules)\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


# ------------------------------------------------------- a real server on loopback


@pytest.fixture
def served() -> Iterator[str]:
    """The Starlette app behind the middleware, served by uvicorn on a free port."""
    import uvicorn

    app = Starlette(routes=ROUTES)
    app.add_middleware(PodAuthMiddleware, **BOTH)
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, lifespan="on", log_config=None,
                                           access_log=False, ws="websockets-sansio"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 15
    while not server.started and thread.is_alive() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert server.started, "uvicorn did not start"
    try:
        yield f"127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()


def test_over_a_real_socket(served: str) -> None:
    from websockets.exceptions import ConnectionClosed
    from websockets.sync.client import connect

    with httpx.Client(base_url=f"http://{served}") as http:
        assert http.get("/health").status_code == 200
        denied = http.get("/x")
        assert denied.status_code == 401 and denied.headers["www-authenticate"] == "Bearer"
        bearer = {"Authorization": f"Bearer {TOKEN.token}"}
        assert http.get("/x", headers=bearer).status_code == 200
        signed = sign_url(f"http://{served}/files/a%20b?m=1&m=2", secret=SECRET)
        seen = http.get(signed).json()
        assert (seen["path"], seen["q"]["m"]) == ("/files/a b", "2")
        assert http.get(signed.replace("m=1&m=2", "m=2&m=1")).status_code == 401
    with connect(f"ws://{served}/ws", additional_headers=bearer) as ws:
        assert ws.recv(timeout=5) == "hello"
    with connect(sign_url(f"ws://{served}/ws", secret=SECRET)) as ws:
        assert ws.recv(timeout=5) == "hello"
    with pytest.raises(ConnectionClosed) as info, connect(f"ws://{served}/ws") as ws:
        ws.recv(timeout=5)
    assert info.value.rcvd is not None and info.value.rcvd.code == 4401


@pytest.mark.parametrize("raw", [b"name=\xc3\xa4", b"name=%C3%A4", b"name=%c3%a4"])
def test_raw_utf8_and_escaped_query_bytes_verify_alike(raw: bytes) -> None:
    guarded = PodAuthMiddleware(echo, signing_secret=SECRET, clock=lambda: NOW)
    ours = urlsplit(sign_url("https://pod.example/x?name=ä", secret=SECRET, now=NOW)).query
    query = raw + b"&" + ours.split("&", 1)[1].encode()
    assert status_and_body(run_http(guarded, query=query))[0] == 200
    forged = query.replace(b"name=", b"name=x")
    assert status_and_body(run_http(guarded, query=forged))[0] == 401


def test_path_without_raw_path_falls_back_to_the_decoded_path() -> None:
    guarded = PodAuthMiddleware(echo, signing_secret=SECRET, clock=lambda: NOW)
    url = urlsplit(sign_url("https://pod.example/a%2525b c", secret=SECRET, now=NOW))
    scope = {"type": "http", "method": "GET", "scheme": "https", "path": "/a%25b c",
             "query_string": url.query.encode(), "headers": [(b"host", b"pod.example")]}
    sent: list[Message] = []

    async def receive() -> Message:
        return {"type": "http.request", "body": b""}

    async def send(message: Message) -> None:
        sent.append(message)

    anyio.run(guarded, scope, receive, send)
    assert sent[0]["status"] == 200
