"""Contract checks: every request received and every response sent, against the spec.

Uses ``openapi-core`` (a dev/test dependency). Building an ``OpenAPI`` object for a
large spec takes most of a second, so it is built once per spec per process and
shared. A check returns readable lines; the sandbox collects them in
``sb.violations``. Beyond what openapi-core checks, query parameters the operation
does not declare are reported too: the real API silently ignores them, so a
client relying on one (``GET /v2/pods?name=...``) has a bug the sandbox should show.

Two allowances, both explicit: a trailing slash the spec's path lacks is accepted
(Vast's CLI calls ``/api/v0/asks/{id}/`` for the spec's ``/api/v0/asks/{id}``), and
a cloud may declare *errata* (``Api.errata``): ``(JSON pointer, replacement)`` pairs
applied to a copy of its spec where the published document contradicts the wire.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from .schemas import load_spec

__all__ = ["Contract", "HttpExchange", "available"]

_METHODS = ("get", "put", "post", "delete", "patch", "head", "options")


def available() -> bool:
    """Whether openapi-core is installed (contract checks need it)."""
    try:
        import openapi_core  # noqa: F401
    except ImportError:
        return False
    return True


@functools.cache
def _document(name: str, errata: str = "[]") -> dict[str, Any]:
    """The spec ``name`` with ``errata`` (JSON ``[[pointer, value], ...]``) applied to a copy."""
    fixes = json.loads(errata)
    if not fixes:
        return load_spec(name)
    doc = copy.deepcopy(load_spec(name))
    for pointer, value in fixes:
        parts = [p.replace("~1", "/").replace("~0", "~") for p in pointer.lstrip("/").split("/")]
        node: Any = doc
        for part in parts[:-1]:
            node = node[part]  # a pointer whose parent is missing is a bug: fail loudly
        node[parts[-1]] = value
    return doc


@functools.cache
def _openapi(name: str, errata: str = "[]") -> Any:
    from openapi_core import Config, OpenAPI

    def problem_json(raw: bytes | str) -> Any:
        return json.loads(raw)

    config = Config(extra_media_type_deserializers={"application/problem+json": problem_json})
    return OpenAPI.from_dict(_document(name, errata), config=config)


@dataclass
class HttpExchange:
    """One request (and, once answered, its response) in the shape openapi-core reads."""

    method: str
    path: str
    query: Sequence[tuple[str, str]] = ()
    headers: Mapping[str, str] = field(default_factory=dict)
    body: bytes = b""
    status: int = 0
    response_headers: Mapping[str, str] = field(default_factory=dict)
    response_body: bytes = b""


class _Request:
    def __init__(self, host_url: str, ex: HttpExchange) -> None:
        from openapi_core.datatypes import RequestParameters
        from werkzeug.datastructures import Headers, ImmutableMultiDict

        self.host_url = host_url
        self.path = ex.path
        self.method = ex.method.lower()
        self.body: bytes | None = ex.body or None
        self.content_type = ex.headers.get("content-type", "application/json").lower()
        self.parameters = RequestParameters(
            query=ImmutableMultiDict(list(ex.query)),
            header=Headers(list(ex.headers.items())),
            cookie=ImmutableMultiDict(),
        )


class _Response:
    def __init__(self, ex: HttpExchange) -> None:
        from werkzeug.datastructures import Headers

        self.status_code = ex.status
        self.headers = Headers(list(ex.response_headers.items()))
        self.content_type = ex.response_headers.get("content-type", "").lower()
        self.data: bytes | None = ex.response_body or None


def _describe(exc: BaseException) -> list[str]:
    """openapi-core errors as readable lines (schema errors with their JSON paths)."""
    cause: BaseException | None = exc
    while cause is not None:
        schema_errors = getattr(cause, "schema_errors", None)
        if schema_errors:
            return [f"{e.json_path}: {e.message}" for e in schema_errors]
        cause = cause.__cause__
    text = str(exc) or type(exc).__name__
    if exc.__cause__ is not None and str(exc.__cause__):
        text = f"{text} ({exc.__cause__})"
    return [text]


class Contract:
    """Checks one API's traffic against its vendored spec (``"runpod/rest-v2-openapi.json"``)."""

    def __init__(self, spec: str, errata: Sequence[tuple[str, Any]] = ()) -> None:
        self.spec = spec
        self._errata = json.dumps([[pointer, value] for pointer, value in errata])
        doc = _document(spec, self._errata)
        server = (doc.get("servers") or [{"url": "https://api.invalid"}])[0]["url"]
        parts = urlsplit(server)
        self._host_url = f"{parts.scheme}://{parts.netloc}"
        prefix = parts.path.rstrip("/")
        self._ops: dict[str, dict[str, Any]] = {}
        literal: list[tuple[str, re.Pattern[str], str]] = []
        templated: list[tuple[str, re.Pattern[str], str]] = []
        for template, item in (doc.get("paths") or {}).items():
            full = prefix + template
            regex = re.compile("^" + re.sub(r"\\\{[^/]+?\\\}", "[^/]+", re.escape(full)) + "$")
            (templated if "{" in template else literal).append((full, regex, template))
            self._ops[full] = item
        # Literal paths win over templated ones (/v2/registries/delegations vs /{id}).
        self._matchers = literal + templated
        self._doc = doc

    def prepare(self) -> None:
        """Build the (slow) openapi-core object now instead of on the first request."""
        _openapi(self.spec, self._errata)

    def _match(self, path: str) -> str | None:
        for full, regex, _template in self._matchers:
            if regex.match(path):
                return full
        return None

    def _spec_path(self, path: str) -> str:
        """``path`` as the spec writes it: a trailing slash the spec lacks is dropped."""
        if len(path) > 1 and path.endswith("/") and self._match(path) is None:
            return path.rstrip("/")
        return path

    def template(self, path: str) -> str | None:
        """The spec path template that ``path`` matches (``/v2/pods/{id}``), or ``None``."""
        return self._match(self._spec_path(path))

    def _declared_query(self, template: str, method: str) -> set[str] | None:
        item = self._ops.get(template) or {}
        op = item.get(method.lower())
        if not isinstance(op, dict):
            return None
        names: set[str] = set()
        for param in [*item.get("parameters", []), *op.get("parameters", [])]:
            if "$ref" in param:
                param = self._resolve(param["$ref"])
            if param.get("in") == "query":
                names.add(param["name"])
        return names

    def _resolve(self, ref: str) -> dict[str, Any]:
        node: Any = self._doc
        for part in ref.lstrip("#/").split("/"):
            node = node[part]
        return node if isinstance(node, dict) else {}

    def check_request(self, ex: HttpExchange) -> list[str]:
        """Problems with the request, one line each (empty: it matches the spec)."""
        template = self.template(ex.path)
        if template is None:
            return [f"{ex.method} {ex.path} is not an operation of {self.spec}"]
        problems: list[str] = []
        declared = self._declared_query(template, ex.method)
        if declared is None:
            return [f"{ex.method} is not allowed on {template} in {self.spec}"]
        for name in dict(ex.query):
            if name not in declared:
                problems.append(
                    f"query parameter {name!r} is not declared for {ex.method} {template} "
                    "(the real API ignores it)"
                )
        ex = dataclasses.replace(ex, path=self._spec_path(ex.path))
        for exc in _openapi(self.spec, self._errata).iter_request_errors(
            _Request(self._host_url, ex)
        ):
            problems.extend(_describe(exc))
        return problems

    def check_response(self, ex: HttpExchange) -> list[str]:
        """Problems with the response to ``ex``'s request, one line each."""
        if self.template(ex.path) is None:
            return []  # already reported on the request side
        ex = dataclasses.replace(ex, path=self._spec_path(ex.path))
        errors = _openapi(self.spec, self._errata).iter_response_errors(
            _Request(self._host_url, ex), _Response(ex)
        )
        return [line for exc in errors for line in _describe(exc)]
