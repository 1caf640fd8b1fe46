"""The Fly app logs HTTP client: one page of an app's log lines per request.

``LogsClient.fetch`` sends ``GET {base}/api/v1/apps/{app}/logs`` (base
``https://api.fly.io``; with a sandbox active, ``S/fly/api``) through the one HTTP
seam with the flyctl-style ``Authorization`` header, and on a 401 invalidates the
token source, fetches a fresh token and retries **once**. The wire translation is
in ``wire``.

The logs API is polled, not long-polled: it answers at once with what it has (flyctl's
``logs/polling.go`` ``Poll`` loops ``GetAppLogs(ctx, app, nextToken, region, vmID)`` with
its own backoff, and the endpoint takes no wait/timeout parameter). So there is no server
window to size; each poll is capped by the user's ``http=`` timeout like any request.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any
from urllib.parse import quote

from ... import telemetry
from ..._http import HttpClient, HttpOption, RetryPolicy, decode
from ...config import resolve_base_url
from ...errors import AtlasError, NotFound, Unauthorized
from ..auth_header import authorization
from ..tokens import FixedToken, TokenSource, default_chain
from .wire import LogPage, check_app, page_from_bytes

__all__ = ["DEFAULT_BASE_URL", "LogsClient", "fetch_logs"]

DEFAULT_BASE_URL = "https://api.fly.io"


class LogsClient:
    """Fetches pages of one Fly app's logs.

    Args:
        base_url: the API base (default: the sandbox's ``S/fly/api`` when one is
            active, else the config file's ``providers.fly.base_url.api``, else
            ``https://api.fly.io``).
        http: the ``http=`` option (client, transport or options dict).
        token: use exactly this token (no chain, no re-resolution).
        tokens: where tokens come from (default: the process-wide ``tokens`` chain,
            or the sandbox key when talking to the active sandbox).
        retry: the HTTP retry policy (a poller passes ``RetryPolicy(attempts=1)`` and
            counts errors itself).
    """

    def __init__(
        self,
        *,
        base_url: str | Mapping[str, str] | None = None,
        http: HttpOption = None,
        token: str | None = None,
        tokens: TokenSource | None = None,
        retry: RetryPolicy | None = None,
    ) -> None:
        from ... import sandbox

        self.base_url = resolve_base_url("fly", "api", DEFAULT_BASE_URL, base_url)
        if token is not None:
            self.tokens: TokenSource = FixedToken(token)
        elif tokens is not None:
            self.tokens = tokens
        elif base_url is None and sandbox.active_url() and \
                self.base_url == f"{sandbox.active_url()}/fly/api":
            self.tokens = FixedToken(sandbox.sandbox_key("fly"), source="sandbox")
        else:
            self.tokens = default_chain()
        self._http = http
        self._retry = retry
        self._clients: dict[str, HttpClient] = {}

    def __repr__(self) -> str:
        return f"LogsClient(base_url={self.base_url!r}, tokens={self.tokens!r})"

    def _client(self, token: str) -> HttpClient:
        client = self._clients.get(token)
        if client is None:
            self._clients.clear()  # one live token at a time; forget rejected ones
            client = HttpClient(
                provider="fly", api="api", base_url=self.base_url,
                headers={"Authorization": authorization(token), "Accept": "application/json"},
                secrets=(token,), http=self._http, retry=self._retry,
            )
            self._clients[token] = client
        return client

    def fetch(
        self,
        app: str,
        *,
        next_token: str | None = None,
        instance: str | None = None,
        region: str | None = None,
        timeout: float | None = None,
    ) -> LogPage:
        """One page of ``app``'s logs after ``next_token`` (``None``: the most recent lines).

        Raises:
            Unauthorized: the token was refused twice (once after re-resolving it).
            NotFound: no such app.
            AtlasError: any other failure (``TransportError``, ``ProviderError``...).
        """
        app = check_app(app)
        path = f"/api/v1/apps/{quote(app, safe='')}/logs"
        params = {"next_token": next_token or None, "instance": instance, "region": region}
        token = self.tokens.get(app)
        try:
            content = self._get(token, path, params, timeout)
        except Unauthorized as refused:
            # The token may be stale or revoked: drop every cached layer, resolve a fresh
            # one and try exactly once more (a second 401 is the caller's to report).
            self.tokens.invalidate(app, rejected=token)
            try:
                fresh = self.tokens.get(app)
            except AtlasError:
                telemetry.emit("fly.logs.reauth", {"app": app, "fresh_token": False})
                raise refused from None  # the server's 401 says more than "no token left"
            telemetry.emit("fly.logs.reauth", {"app": app, "fresh_token": fresh != token})
            try:
                content = self._get(fresh, path, params, timeout)
            except NotFound as exc:
                raise _app_not_found(app, exc) from None
        except NotFound as exc:
            raise _app_not_found(app, exc) from None
        return page_from_bytes(content, app)

    def _get(self, token: str, path: str, params: Mapping[str, Any],
             timeout: float | None) -> bytes:
        """The raw body of a 2xx answer (parsed by ``page_from_bytes``), else the error."""
        client = self._client(token)
        response = client.send("GET", path, params=params, timeout=timeout)
        if not response.is_success:
            raise client.error(response.status_code, decode(response), response.headers)
        return response.content


def _app_not_found(app: str, exc: NotFound) -> NotFound:
    return NotFound(f"Fly app {app!r} not found (its logs answered 404); check the name with "
                    "`fly apps list`", provider="fly", status=404, raw=exc.raw)


def fetch_logs(
    app: str,
    *,
    next_token: str | None = None,
    instance: str | None = None,
    region: str | None = None,
    token: str | None = None,
    base_url: str | Mapping[str, str] | None = None,
    http: HttpOption = None,
) -> LogPage:
    """One page of ``app``'s logs (see ``LogsClient``); follow ``page.next_token`` for more."""
    started = time.perf_counter()
    client = LogsClient(base_url=base_url, http=http, token=token)
    page = client.fetch(app, next_token=next_token, instance=instance, region=region)
    telemetry.emit("fly.logs.fetch", {"app": app, "count": len(page.entries),
                                      "duration_ms": (time.perf_counter() - started) * 1000.0})
    return page
