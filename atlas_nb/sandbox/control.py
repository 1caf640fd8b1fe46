"""A Python client for the sandbox's control API: ``sb``'s knobs, from any process.

``Control(url)`` talks to ``S/_control/`` (see ``control_api.py``) of a sandbox
running anywhere, e.g. ``atlas-nb sandbox`` started by a test as a subprocess, and
reads like the in-process objects it mirrors::

    ctl = Control("http://127.0.0.1:8765")      # or Control() for the attached sandbox
    rule = ctl.faults("runpod/rest:POST /v2/pods", error_rate={500: 1.0}, count=1)
    ...; rule.injected; rule.clear()             # like sb.faults(...) and its FaultRule
    ctl.faults.rules; ctl.faults.clear()
    ctl.capacity.set("runpod", "h100", 0)        # like sb.capacity
    ctl.clock.advance(30)                        # a sandbox built with a ManualClock only
    ctl.add_account("runpod")                    # like sb.add_account: Account(key, id)
    ctl.stats(); ctl.violations

``sb.control()`` gives the same client bound to an in-process sandbox. Refusals
raise ``ControlError`` with the server's message and status.
"""

from __future__ import annotations

from collections import Counter
from types import TracebackType
from typing import Any

import httpx

from .accounts import Account

__all__ = ["Control", "ControlError", "RemoteCapacity", "RemoteClock", "RemoteFaults",
           "RemoteRule"]

_PREFIX = "/_control"


class ControlError(Exception):
    """The control API refused a request (``status``: its HTTP status)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"sandbox control API: {message} (HTTP {status})")
        self.status = status
        self.message = message


class Control:
    """The control API of the sandbox at ``url`` (default: the one this process is attached to).

    Args:
        url: the sandbox's base URL (``sb.url``, ``ATLAS_NB_SANDBOX``).
        http: an ``httpx.Client`` to send through (``sb.client()`` in-process); closed
            with this object only if it made it.
        timeout: seconds per request when it makes its own client.
    """

    def __init__(
        self, url: str | None = None, *, http: httpx.Client | None = None, timeout: float = 10.0
    ) -> None:
        if url is None:
            from . import active_url

            url = active_url()
            if url is None:
                raise ValueError("no sandbox URL: pass one, or attach a sandbox first")
        self.url = url.rstrip("/")
        self._own = http is None
        self._http = http if http is not None else httpx.Client(timeout=timeout)
        self.faults = RemoteFaults(self)
        """The fault rules: call it to add one (``sb.faults(...)`` arguments)."""
        self.clock = RemoteClock(self)
        """The sandbox's clock: ``time()``, ``advance(s)``, ``manual``."""
        self.capacity = RemoteCapacity(self)
        """GPU stock overrides: ``set``, ``get``, ``clear``, ``snapshot``."""

    def __repr__(self) -> str:
        return f"Control({self.url!r})"

    def request(self, method: str, path: str, **kwargs: Any) -> Any:
        """One call to ``/_control{path}``; the JSON answer, or ``ControlError``."""
        response = self._http.request(method, f"{self.url}{_PREFIX}{path}", **kwargs)
        try:
            body = response.json()
        except ValueError:
            body = None
        if response.status_code >= 400:
            message = body.get("error") if isinstance(body, dict) else None
            raise ControlError(response.status_code, message or response.text[:200])
        return body

    def add_account(self, provider: str, key: str | None = None) -> Account:
        """Add an account to one cloud (``sb.add_account``): its own key and namespace."""
        body: dict[str, Any] = {"cloud": provider}
        if key is not None:
            body["key"] = key
        made = self.request("POST", "/accounts", json=body)
        return Account(made["key"], made["id"], int(made["number"]))

    def accounts(self, provider: str) -> list[Account]:
        """One cloud's accounts, the default one first (``sb.accounts``)."""
        found = self.request("GET", "/accounts", params={"cloud": provider}).get(provider, [])
        return [Account(a["key"], a["id"], int(a["number"])) for a in found]

    def stats(self) -> dict[str, Any]:
        """The sandbox's request statistics (``sb.stats()``)."""
        return dict(self.request("GET", "/stats"))

    def reset_stats(self) -> None:
        """Zero the statistics."""
        self.request("DELETE", "/stats")

    @property
    def violations(self) -> list[str]:
        """Contract and policy violations seen so far (``sb.violations``)."""
        return list(self.request("GET", "/violations")["violations"])

    def clear_violations(self) -> None:
        """Forget the violations recorded so far."""
        self.request("DELETE", "/violations")

    def close(self) -> None:
        """Close the HTTP client if this object made it."""
        if self._own:
            self._http.close()

    def __enter__(self) -> Control:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def _json_safe(value: Any) -> Any:
    """Mapping keys as strings (``{500: 1.0}`` -> ``{"500": 1.0}``), recursively."""
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    return value


class RemoteRule:
    """A fault rule in a remote sandbox (what ``ctl.faults(...)`` returns).

    ``data`` is the rule as the sandbox answered it when it was made; ``matched``,
    ``injected`` and ``exhausted`` are read fresh on each access.
    """

    def __init__(self, control: Control, data: dict[str, Any]) -> None:
        self._control = control
        self.data = data
        self.id: int = data["id"]
        self.route: str = data.get("route", "*")

    def __repr__(self) -> str:
        return f"RemoteRule({self.id}, {self.route!r})"

    def state(self) -> dict[str, Any]:
        """The rule as the sandbox sees it now (``ControlError`` 404 once it is gone)."""
        return dict(self._control.request("GET", f"/faults/{self.id}"))

    @property
    def matched(self) -> int:
        """Requests the rule has seen."""
        return int(self.state()["matched"])

    @property
    def injected(self) -> Counter[str | int]:
        """What it did, as ``FaultRule.injected`` counts it (statuses as ints)."""
        raw = self.state()["injected"]
        return Counter({int(k) if k.isdigit() else k: v for k, v in raw.items()})

    @property
    def exhausted(self) -> bool:
        """True once ``count`` requests have been seen."""
        return bool(self.state()["exhausted"])

    def clear(self) -> None:
        """Remove this rule (no error if it is already gone)."""
        try:
            self._control.request("DELETE", f"/faults/{self.id}")
        except ControlError as exc:
            if exc.status != 404:
                raise


class RemoteFaults:
    """``ctl.faults``: call it like ``sb.faults`` to add a rule; ``rules``; ``clear()``."""

    def __init__(self, control: Control) -> None:
        self._control = control

    def __call__(self, route: str = "*", **options: Any) -> RemoteRule:
        """Add a rule: the keyword arguments of ``sb.faults(...)``, sent as JSON."""
        body = _json_safe({"route": route, **options})
        return RemoteRule(self._control, self._control.request("POST", "/faults", json=body))

    @property
    def rules(self) -> list[RemoteRule]:
        """The active rules, oldest first (rules added in-process too)."""
        found = self._control.request("GET", "/faults")["rules"]
        return [RemoteRule(self._control, r) for r in found]

    def clear(self) -> None:
        """Remove every rule."""
        self._control.request("DELETE", "/faults")


class RemoteClock:
    """``ctl.clock``: the sandbox's time; ``advance`` moves a manual clock."""

    def __init__(self, control: Control) -> None:
        self._control = control

    def time(self) -> float:
        """The sandbox's now, in seconds since the epoch."""
        return float(self._control.request("GET", "/clock")["time"])

    @property
    def manual(self) -> bool:
        """Whether the clock can be moved (the sandbox was built with a ``ManualClock``)."""
        return bool(self._control.request("GET", "/clock")["manual"])

    def advance(self, seconds: float) -> float:
        """Move the clock forward; the new time. ``ControlError`` 409 on the wall clock."""
        answer = self._control.request("POST", "/clock", json={"advance_s": seconds})
        return float(answer["time"])


class RemoteCapacity:
    """``ctl.capacity``: per-cloud GPU stock overrides, as ``sb.capacity``."""

    def __init__(self, control: Control) -> None:
        self._control = control

    def set(self, cloud: str, gpu: str, available: int) -> None:
        """Let ``cloud`` place ``available`` more GPUs of ``gpu`` (0: it has none)."""
        self._control.request(
            "POST", "/capacity", json={"cloud": cloud, "gpu": gpu, "available": available}
        )

    def snapshot(self) -> dict[str, dict[str, int]]:
        """Every override now: ``{cloud: {canonical GPU: GPUs left}}``."""
        return dict(self._control.request("GET", "/capacity"))

    def get(self, cloud: str, gpu: str) -> int | None:
        """GPUs left for ``gpu`` on ``cloud`` (``None``: no override). ``gpu`` is canonical."""
        left = self.snapshot().get(cloud, {}).get(gpu)
        return int(left) if left is not None else None

    def clear(self, cloud: str | None = None, gpu: str | None = None) -> None:
        """Drop overrides: all, one cloud's, or one GPU's on one cloud."""
        params = {k: v for k, v in {"cloud": cloud, "gpu": gpu}.items() if v is not None}
        self._control.request("DELETE", "/capacity", params=params)
