"""The one error tree of atlas_nb.

Every failure the package raises is an ``AtlasError``; httpx exceptions never escape.

* AtlasError                .kind .provider .status .message .raw
  + Unauthorized            401: the key is missing, wrong or revoked
  + Forbidden               403: the key lacks a scope or the account is inactive
  + NotFound                404: no such pod, job, endpoint or app
  + RateLimited             429: slow down; ``.retry_after`` seconds when the provider says
  + Timeout                 a wait or a request ran past its deadline (also HTTP 408)
  + Unsupported             the provider does not offer this operation or GPU
  + ValidationError         bad input, caught before anything was sent (or a 400/422)
  + ProviderError           any other 4xx/5xx answer from the provider
  + TransportError          the request never got an HTTP answer (DNS, refused, reset)
  + UnknownError            anything else, e.g. an unexpected 2xx body
* SignatureError            (in ``atlas_nb.auth``) a signed URL failed verification

``error_from_response`` is the only place an HTTP status becomes a class.
In a notebook an ``AtlasError`` renders as one or two lines, not a traceback
(IPython's ``_render_traceback_`` hook); set ``ATLAS_NB_DEBUG=1`` for the full traceback.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import Any, ClassVar

__all__ = [
    "AtlasError",
    "Forbidden",
    "NotFound",
    "ProviderError",
    "RateLimited",
    "Timeout",
    "TransportError",
    "Unauthorized",
    "UnknownError",
    "Unsupported",
    "ValidationError",
    "error_from_response",
    "parse_retry_after",
]


class AtlasError(Exception):
    """Base of every atlas_nb error.

    Attributes:
        kind: a short machine-readable name (``"not_found"``, ``"rate_limited"``, ...).
        provider: the provider name the error came from, or ``None``.
        status: the HTTP status, when there was one.
        message: one human-readable line.
        raw: the provider's error payload (secrets are never put here).
        hint: an optional second line that says how to fix it.
    """

    kind: ClassVar[str] = "unknown"

    def __init__(
        self,
        message: str,
        *,
        provider: str | None = None,
        status: int | None = None,
        raw: Any = None,
        hint: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.provider = provider
        self.status = status
        self.raw = raw
        self.hint = hint

    def __str__(self) -> str:
        where = f"[{self.provider}] " if self.provider else ""
        code = f" (HTTP {self.status})" if self.status else ""
        if self.message == code.strip(" ()"):  # the status is the whole message: say it once
            code = ""
        return f"{where}{self.message}{code}"

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(message={self.message!r}, provider={self.provider!r}, "
            f"status={self.status!r})"
        )

    def _render_traceback_(self) -> list[str]:
        """IPython hook: show one or two lines instead of a traceback."""
        if os.environ.get("ATLAS_NB_DEBUG", "") not in ("", "0", "false"):
            import traceback

            return traceback.format_exception(type(self), self, self.__traceback__)
        red, reset = "\x1b[31m", "\x1b[0m"
        lines = [f"{red}{type(self).__name__}{reset}: {self}"]
        if self.hint:
            lines.append(f"  hint: {self.hint}")
        return lines


class Unauthorized(AtlasError):
    """401: the API key is missing, wrong or revoked."""

    kind = "unauthorized"


class Forbidden(AtlasError):
    """403: the key is valid but may not do this."""

    kind = "forbidden"


class NotFound(AtlasError):
    """404: the resource does not exist (or no longer does)."""

    kind = "not_found"


class RateLimited(AtlasError):
    """429: too many requests. ``retry_after`` is in seconds when the provider sent it."""

    kind = "rate_limited"

    def __init__(self, message: str, *, retry_after: float | None = None, **kw: Any) -> None:
        super().__init__(message, **kw)
        self.retry_after = retry_after


class Timeout(AtlasError):
    """A wait or request passed its deadline (also HTTP 408)."""

    kind = "timeout"


class Unsupported(AtlasError):
    """The provider does not offer this operation, GPU or option."""

    kind = "unsupported"


class ValidationError(AtlasError, ValueError):
    """Bad input. The message names the field and how to fix it."""

    kind = "validation"


class ProviderError(AtlasError):
    """Any other error answer (4xx/5xx) from the provider."""

    kind = "provider"


class TransportError(AtlasError):
    """No HTTP answer: connection refused or reset, DNS failure, read timeout."""

    kind = "transport"


class UnknownError(AtlasError):
    """Something the provider did that fits no other kind."""

    kind = "unknown"


_BY_STATUS: dict[int, type[AtlasError]] = {
    400: ValidationError,
    401: Unauthorized,
    403: Forbidden,
    404: NotFound,
    408: Timeout,
    410: NotFound,
    422: ValidationError,
    429: RateLimited,
}


def parse_retry_after(value: str | None, *, now: float | None = None) -> float | None:
    """Parse a ``Retry-After`` header in either its seconds or its HTTP-date form."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    import email.utils  # only needed for the rare HTTP-date form; keeps import time low

    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    now = time.time() if now is None else now
    return max(0.0, when.timestamp() - now)


def _message_from_body(body: Any) -> str | None:
    """Pull a human message out of the generic error envelopes (a provider's own format,
    such as Lambda's nested ``error`` or GraphQL's ``errors``, is read by its
    ``error_message``, which ``error_from_response`` tries first)."""
    if isinstance(body, str):
        text = body.strip()
        return text[:500] or None
    if not isinstance(body, dict):
        return None
    for key in ("detail", "msg", "message", "error", "title"):  # problem+json and the like
        val = body.get(key)
        if isinstance(val, str) and val:
            return val
    return None


def _header(headers: Any, name: str) -> str | None:
    """One header from ``httpx.Headers`` or a plain dict (whose keys are case-sensitive)."""
    if not headers:
        return None
    if isinstance(headers, dict):
        return next((str(v) for k, v in headers.items() if str(k).lower() == name), None)
    value = headers.get(name)
    return str(value) if value is not None else None


def error_from_response(
    status: int,
    body: Any,
    *,
    provider: str | None = None,
    headers: Any = None,
    message_of: Callable[[Any], str | None] | None = None,
) -> AtlasError:
    """Map an HTTP status and its decoded body to the matching ``AtlasError``.

    ``message_of`` reads the provider's own error format (its ``error_message``) before
    the generic envelopes.
    """
    cls = _BY_STATUS.get(status)
    if cls is None:
        cls = ProviderError if 400 <= status < 600 else UnknownError
    message = message_of(body) if message_of is not None else None
    message = message or _message_from_body(body) or f"HTTP {status}"
    if cls is RateLimited:
        retry_after = parse_retry_after(_header(headers, "retry-after"))
        return RateLimited(
            message, retry_after=retry_after, provider=provider, status=status, raw=body
        )
    hint = None
    if cls is Unauthorized and provider:
        hint = f"check the {provider} API key: pass api_key=, set it in the config file or env"
    return cls(message, provider=provider, status=status, raw=body, hint=hint)
