"""The sandbox runner: every emulated cloud on a loopback port, or in-process.

``with atlas_nb.sandbox.start() as sb:`` builds the clouds, serves them with
uvicorn on a free loopback port in a daemon thread, and attaches this process
to it (providers then default to ``sb.url`` and the sandbox keys). Leaving the
block detaches, stops the server, stops cloud workers and joins every thread it
started, so nothing leaks: no thread, no port.

``Sandbox(start_server=False)`` binds nothing; use ``sb.client()`` (an
``httpx.Client`` wired to the app in-process) as the ``http=`` of any call.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterable, Mapping
from types import TracebackType
from typing import TYPE_CHECKING, Any

import httpx

from . import attach, detach, sandbox_key
from .accounts import Account, Accounts
from .app import SandboxApp, Stats
from .capacity import Capacity
from .cloud import Clock, Cloud, CloudContext, SystemClock
from .contract import available as contract_available
from .control_api import build_control_app
from .faults import Faults
from .inprocess import InProcessTransport, LoopThread
from .registry import clouds as cloud_table
from .registry import load

if TYPE_CHECKING:
    from .control import Control
    from .runpod import RunPodCloud

__all__ = ["INPROCESS_URL", "Sandbox"]

INPROCESS_URL = "http://atlas-sandbox.invalid"
"""The URL of an in-process sandbox: it never resolves, so only ``sb.client()`` reaches it."""


class Sandbox:
    """Emulated clouds with fault injection, statistics and contract checks.

    Args:
        host / port: where to listen (``port=0``: a free port).
        start_server: ``False`` for in-process use only (no socket, no server thread).
        validate: check every request and response against the vendored specs and
            record failures in ``violations``. ``None`` (default): on when
            openapi-core is installed.
        clock: time source for lifecycles (``cloud.ManualClock`` in tests).
        seed: makes ids, addresses and default fault streams reproducible.
        provision_delay_s / start_delay_s: how long a new compute stays in each
            booting state (0 allowed).
        clouds: which registered clouds to serve (default: all).
        options: per-cloud options, ``{"runpod": {"workers": 2}}``.
        attach: point this process's providers at the sandbox while it runs.

    Attributes:
        url: the base URL (``http://127.0.0.1:PORT``); APIs live at ``url/{cloud}/{api}``.
        keys: the key of each cloud's default account (``sandbox-{cloud}-key``; not
            secrets). ``add_account(cloud)`` adds another account with its own key.
        faults: the fault injector; ``sb.faults("POST /v2/pods", drop_rate=0.5)``.
        capacity: GPU stock overrides per cloud; ``sb.capacity.set("runpod", "h100", 0)``.
        clock: the time source; a ``ManualClock`` can also be moved over HTTP.
        asgi_app: the combined ASGI app, for any ASGI host.
    """

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        start_server: bool = True,
        validate: bool | None = None,
        clock: Clock | None = None,
        seed: int = 0,
        provision_delay_s: float = 0.2,
        start_delay_s: float = 0.2,
        clouds: Iterable[str] | None = None,
        options: Mapping[str, Mapping[str, Any]] | None = None,
        attach: bool = True,
    ) -> None:
        if validate and not contract_available():
            raise RuntimeError(
                "Sandbox(validate=True) needs openapi-core: pip install openapi-core"
            )
        self.validate = contract_available() if validate is None else validate
        self.host = host
        self.port = port
        self.start_server = start_server
        self.clock = clock or SystemClock()
        self.seed = seed
        self._attach = attach
        self._violations: list[str] = []
        self._lock = threading.Lock()
        self._closing = threading.Event()
        table = cloud_table()
        names = list(clouds) if clouds is not None else list(table)
        # fail on a bad name before building any
        classes = {name: load(name, table) for name in names}
        options = options or {}
        self.capacity = Capacity()
        self.clouds: dict[str, Cloud] = {}
        for name, cls in classes.items():
            ctx = CloudContext(
                clock=self.clock,
                seed=seed,
                provision_delay_s=provision_delay_s,
                start_delay_s=start_delay_s,
                options=dict(options.get(name, {})),
                closing=self._closing,
                report=self._report,
                capacity=self.capacity,
            )
            self.clouds[name] = cls(ctx)
        self.faults = Faults(seed)
        self._stats = Stats()
        self.asgi_app = SandboxApp(
            list(self.clouds.values()),
            self.faults,
            self._stats,
            validate=self.validate,
            report=self._report,
            control=build_control_app(self),
        )
        self.url = INPROCESS_URL
        self._server: Any = None
        self._thread: threading.Thread | None = None
        self._loop: LoopThread | None = None
        self._started = False
        self._closed = False

    def __repr__(self) -> str:
        state = "closed" if self._closed else "running" if self._started else "new"
        return f"Sandbox({self.url!r}, {state}, clouds={list(self.clouds)})"

    def __getattr__(self, name: str) -> Any:
        clouds = self.__dict__.get("clouds") or {}
        if name in clouds:
            return clouds[name]
        raise AttributeError(name)

    @property
    def runpod(self) -> RunPodCloud:
        """The RunPod cloud's state (pods, endpoints, test helpers)."""
        cloud: RunPodCloud = self.clouds["runpod"]  # type: ignore[assignment]
        return cloud

    @property
    def keys(self) -> dict[str, str]:
        """Cloud name -> the key of its default account."""
        return {name: sandbox_key(name) for name in self.clouds}

    def accounts(self, provider: str) -> list[Account]:
        """The accounts of one cloud, the default one first (``accounts.py``)."""
        return self._accounts_of(provider).all()

    def add_account(self, provider: str, key: str | None = None) -> Account:
        """Add an account to ``provider``'s cloud: its own key and its own namespace.

        Another account's resources answer what the cloud answers for an unknown id.
        ``key`` defaults to ``sandbox-{provider}-acct{n}-key``; ``ValueError`` for an
        unknown cloud, a cloud without accounts, or a key already in use.
        """
        account = self._accounts_of(provider).add(key)
        logs = getattr(self.clouds[provider], "logs", None)  # Fly's logs API keeps its own set
        if logs is not None and callable(getattr(logs, "accept_token", None)):
            logs.accept_token(account.key)
        return account

    def _accounts_of(self, provider: str) -> Accounts:
        cloud = self.clouds.get(provider)
        if cloud is None:
            raise ValueError(f"no cloud {provider!r} in this sandbox; it serves: "
                             f"{', '.join(self.clouds)}")
        accounts = getattr(cloud, "accounts", None)
        if not isinstance(accounts, Accounts):
            raise ValueError(f"the {provider} cloud has no accounts")
        return accounts

    @property
    def violations(self) -> list[str]:
        """Contract and policy violations seen so far (a copy), one readable line each."""
        with self._lock:
            return list(self._violations)

    def clear_violations(self) -> None:
        """Forget the violations recorded so far."""
        with self._lock:
            self._violations.clear()

    def _report(self, line: str) -> None:
        with self._lock:
            self._violations.append(line)

    def stats(self) -> dict[str, Any]:
        """Request counts (total, per route, per status, per fault) and concurrency peaks."""
        return self._stats.snapshot()

    def reset_stats(self) -> None:
        """Zero the statistics."""
        self._stats.reset()

    def client(self, **kwargs: Any) -> httpx.Client:
        """A sync ``httpx.Client`` bound to the app in-process (no socket)."""
        with self._lock:
            if self._closed:
                raise RuntimeError("this sandbox is closed")
            if self._loop is None:
                self._loop = LoopThread()
            loop = self._loop
        kwargs.setdefault("base_url", self.url)
        return httpx.Client(transport=InProcessTransport(self.asgi_app, loop), **kwargs)

    def control(self, **kwargs: Any) -> Control:
        """A ``control.Control`` for this sandbox (over ``client()``, so in-process too).

        The same client a test in another process builds with ``Control(url)``."""
        from .control import Control

        return Control(self.url, http=self.client(**kwargs))

    def start(self) -> Sandbox:
        """Serve (unless ``start_server=False``) and attach; returns ``self``."""
        if self._closed:
            raise RuntimeError("a closed sandbox cannot be restarted; make a new one")
        if self._started:
            return self
        self.asgi_app.prepare()
        if self.start_server:
            self._serve()
        self._started = True
        if self._attach:
            attach(self.url)
        return self

    def _serve(self) -> None:
        import uvicorn

        sock = socket.socket(socket.AF_INET6 if ":" in self.host else socket.AF_INET)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((self.host, self.port))
        except OSError as exc:
            sock.close()
            raise RuntimeError(f"sandbox cannot listen on {self.host}:{self.port}: {exc}") from None
        sock.listen(128)
        sock.setblocking(False)
        self.port = sock.getsockname()[1]
        host = f"[{self.host}]" if ":" in self.host else self.host
        self.url = f"http://{host}:{self.port}"
        config = uvicorn.Config(
            self.asgi_app,
            lifespan="off",
            log_config=None,
            log_level=None,
            access_log=False,
            ws="none",
            timeout_graceful_shutdown=3,
        )
        server = uvicorn.Server(config)
        errors: list[BaseException] = []

        def run() -> None:
            try:
                server.run(sockets=[sock])
            except BaseException as exc:  # reported to start(), never lost
                errors.append(exc)
            finally:
                sock.close()

        thread = threading.Thread(target=run, name=f"atlas-sandbox-{self.port}", daemon=True)
        thread.start()
        deadline = time.monotonic() + 15
        while not server.started and thread.is_alive() and time.monotonic() < deadline:
            time.sleep(0.005)
        if not server.started:
            server.should_exit = True
            thread.join(timeout=5)
            sock.close()
            raise RuntimeError(
                f"sandbox server did not start: {errors[0] if errors else 'timeout'}"
            )
        self._server, self._thread = server, thread
        self._stats.connections = lambda: len(server.server_state.connections)

    def close(self) -> None:
        """Detach, stop serving, stop cloud workers and join every thread. Idempotent."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        if self._started and self._attach:
            detach(self.url)
        self._closing.set()  # clouds refuse new work from here on
        for cloud in self.clouds.values():
            cloud.close()  # wakes long polls (runsync, stream) and joins worker threads
        if self._server is not None and self._thread is not None:
            self._server.should_exit = True
            self._thread.join(timeout=15)
        if self._loop is not None:
            self._loop.stop()

    def __enter__(self) -> Sandbox:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
