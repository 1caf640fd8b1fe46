"""Serve the sandbox in-process: an httpx transport that calls the ASGI app directly.

``sb.client()`` returns an ``httpx.Client`` on this transport, so providers and
tests talk to the emulated clouds with no socket at all. Requests run on a
private event loop in one daemon thread (owned and stopped by the sandbox), so
concurrent callers really overlap, httpx read timeouts apply, and a fault that
closes "the connection" surfaces as ``httpx.RemoteProtocolError``, just as over
a socket.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from collections.abc import Coroutine
from typing import Any, TypeVar

import httpx

from .cloud import ASGIApp, Message
from .faults import ConnectionAborted

__all__ = ["InProcessTransport", "LoopThread"]

T = TypeVar("T")


class LoopThread:
    """An asyncio loop running in a daemon thread until ``stop()``."""

    def __init__(self, name: str = "atlas-sandbox-inprocess") -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        try:
            self._loop.run_forever()
        finally:
            self._loop.run_until_complete(self._loop.shutdown_asyncgens())
            self._loop.close()

    def submit(self, coro: Coroutine[Any, Any, T]) -> concurrent.futures.Future[T]:
        """Run ``coro`` on the loop; a future for its result."""
        return asyncio.run_coroutine_threadsafe(coro, self._loop)

    def stop(self) -> None:
        """Cancel what is still running, stop the loop and join the thread."""
        if not self._thread.is_alive():
            return

        async def cancel_all() -> None:
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

        try:
            self.submit(cancel_all()).result(timeout=5)
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=5)


class InProcessTransport(httpx.BaseTransport):
    """An httpx transport that hands each request to an ASGI app on a ``LoopThread``."""

    def __init__(self, app: ASGIApp, loop: LoopThread) -> None:
        self._app = app
        self._loop = loop

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        """Run the request through the app and return its complete response."""
        body = request.read()
        timeout = (request.extensions.get("timeout") or {}).get("read")
        future = self._loop.submit(self._call(request, body))
        try:
            status, headers, content = future.result(timeout=timeout)
        except concurrent.futures.TimeoutError:
            future.cancel()
            raise httpx.ReadTimeout("sandbox: read timed out", request=request) from None
        except ConnectionAborted as exc:
            raise httpx.RemoteProtocolError(str(exc), request=request) from None
        return httpx.Response(status, headers=headers, content=content, request=request)

    async def _call(
        self, request: httpx.Request, body: bytes
    ) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
        url = request.url
        scope = {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": request.method,
            "scheme": url.scheme,
            "path": url.path,
            "raw_path": url.raw_path.split(b"?", 1)[0],
            "root_path": "",
            "query_string": url.query,
            "headers": [(k.lower(), v) for k, v in request.headers.raw],
            "server": (url.host, url.port or (443 if url.scheme == "https" else 80)),
            "client": ("127.0.0.1", 50000),
            "extensions": {},
        }
        sent = False
        finished = asyncio.Event()

        async def receive() -> Message:
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": body, "more_body": False}
            await finished.wait()
            return {"type": "http.disconnect"}

        status = 500
        headers: list[tuple[bytes, bytes]] = []
        chunks: list[bytes] = []

        async def send(message: Message) -> None:
            nonlocal status, headers
            if message["type"] == "http.response.start":
                status = message["status"]
                headers = list(message.get("headers", []))
            elif message["type"] == "http.response.body":
                chunks.append(message.get("body", b""))
                if not message.get("more_body"):
                    finished.set()

        try:
            await self._app(scope, receive, send)
        finally:
            finished.set()
        return status, headers, b"".join(chunks)
