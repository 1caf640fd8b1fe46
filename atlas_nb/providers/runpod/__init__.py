"""RunPod: pods over REST v2, spot pods and spot prices over GraphQL, serverless jobs
over the runtime API. Wire translation lives in ``wire``, jobs in ``serverless``.

>>> import atlas_nb as atlas
>>> c = atlas.spawn_compute(provider="runpod", gpu="rtx_4090", image="me/srv:1",
...                         ports=[(8000, "http")])                    # doctest: +SKIP
>>> atlas.wait_ready(c.id, provider="runpod").url                     # doctest: +SKIP
'https://<pod id>-8000.proxy.runpod.net'
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any, ClassVar

from ...errors import (
    AtlasError,
    NotFound,
    ProviderError,
    TransportError,
    Unsupported,
    ValidationError,
)
from ...gpus import GpuIds
from ...models import Compute, ComputeRequest, GpuType, Job, JobRequest
from ..base import BaseProvider, CreateRetry, Lookup, filter_computes, job_ref
from . import serverless, wire

__all__ = ["RunPod"]

CREATE_ATTEMPTS = 3
"""Creates tried per spawn; each retry only after a lookup proved the last one created nothing."""


class RunPod(BaseProvider):
    """The RunPod provider (``provider="runpod"``). Key: ``RUNPOD_API_KEY``.

    * On-demand pods: REST v2 ``POST /v2/pods``; spot pods (``spot=True``): GraphQL
      ``podRentInterruptable`` with ``bidPerGpu = max_price_per_hour / gpu_count`` or,
      without a cap, the catalog's minimum bid.
    * A create is never replayed blindly: after a lost answer or a 5xx the pod is looked
      up by its name and the ``ATLAS_REQUEST_ID`` env marker before another try.
    * HTTP ports get ``https://{id}-{port}.proxy.runpod.net``; TCP ports get
      ``tcp://ip:port`` once the pod runs; ``public_ip`` is a public TCP mapping's address.
    * ``cloud_type="any"`` on demand takes the cheaper of secure and community cloud that
      has stock (the v2 API would read an omitted cloud as secure); ``Compute.cloud_type``
      says which one the pod got.
    * ``start`` resumes a spot pod with ``podBidResume`` at the bid it was created with.
    * ``provider_opts`` is merged last into the create body (nested dicts merge).
    """

    name: ClassVar[str] = "runpod"
    key_env: ClassVar[tuple[str, ...]] = ("RUNPOD_API_KEY",)
    gpu_ids: ClassVar[GpuIds | None] = wire.GPU_IDS
    error_message = staticmethod(wire.error_message)
    sandbox_cloud: ClassVar[str | None] = "atlas_nb.sandbox.runpod:RunPodCloud"
    apis: ClassVar[dict[str, str]] = {
        "rest": "https://api.runpod.io",
        "graphql": "https://api.runpod.io",
        "serverless": "https://api.runpod.ai",
    }
    CAPABILITIES: ClassVar[frozenset[str]] = frozenset(
        {"spot", "serverless", "network_volumes", "http_proxy", "raw_tcp", "stop_start",
         "webhooks"}
    )
    key_hint: ClassVar[str] = "pass api_key=, set RUNPOD_API_KEY, or add it to the config file"
    shareable: ClassVar[bool] = True  # no per-call state: the facade may reuse one instance

    # -- computes ---------------------------------------------------------------------
    def spawn_compute(self, request: ComputeRequest) -> Compute:
        name = request.name or f"atlas-{secrets.token_hex(6)}"
        marker = secrets.token_hex(12)
        if request.spot:
            data = wire.spot_input(request, name=name, marker=marker,
                                   bid_per_gpu=self._bid(request))
            payload = {"query": wire.RENT_SPOT_MUTATION, "variables": {"input": data}}
            return self._create("graphql", "/graphql", payload, self._spot_created,
                                name, marker, request.name is None)
        body = wire.create_body(request, name=name, marker=marker)  # validates first
        cloud = self._pick_cloud(request)
        if cloud is not None:
            body = {**body, "cloud": cloud}
        if request.max_price_per_hour is not None:
            self._check_price(request, request.max_price_per_hour, body.get("cloud", "SECURE"))
        return self._create("rest", "/v2/pods", body, self._pod_created,
                            name, marker, request.name is None)

    def get_compute(self, compute_id: str) -> Compute:
        body = self.client("rest").request("GET", self._pod_path(compute_id))
        return wire.compute_from_wire(body)

    def list_compute(
        self, *, status: str | None = None, name: str | None = None, gpu: str | None = None,
        region: str | None = None,
    ) -> list[Compute]:
        return filter_computes(lambda: map(wire.compute_from_wire, self._pods()),
                               status=status, name=name, gpu=gpu, region=region)

    def stop(self, compute_id: str) -> Compute:
        return self._action(compute_id, "stop", reached=("stopped",))

    def start(self, compute_id: str) -> Compute:
        """Start a stopped pod. A spot pod cannot be started on demand ("Cannot resume a
        spot pod as an on demand pod.", runpod/runpodctl issue #156), and REST v2 has no bid
        field: GraphQL says whether it is one, and ``podBidResume`` resumes it at its
        creation bid (``wire.resume_bid``), from this process or any other."""
        self._pod_path(compute_id)  # validate the id before any call
        pod = wire.graphql_pod(self._graphql(wire.SPOT_POD_QUERY,
                                             {"input": {"podId": compute_id}}))
        if pod is None:
            raise NotFound(f"pod {compute_id} not found", provider=self.name)
        if pod.get("podType") != "INTERRUPTABLE":
            return self._action(compute_id, "start", reached=("provisioning", "running"))
        if pod.get("desiredStatus") == "RUNNING":
            return self.get_compute(compute_id)  # already started: start is idempotent
        bid = wire.resume_bid(pod)
        if bid is None:
            raise Unsupported(
                f"RunPod shows no bid for spot pod {compute_id}", provider=self.name,
                hint="terminate it and spawn again with max_price_per_hour=",
            )
        count = pod.get("gpuCount")
        resume = {"podId": compute_id, "bidPerGpu": bid,
                  "gpuCount": count if type(count) is int and count > 0 else 1}
        try:  # a mutation: never replayed blindly; a lost answer is settled by a read
            self._graphql(wire.BID_RESUME_MUTATION, {"input": resume}, idempotent=False)
        except (ProviderError, TransportError):
            again = wire.graphql_pod(self._graphql(wire.SPOT_POD_QUERY,
                                                   {"input": {"podId": compute_id}}))
            if again is None or again.get("desiredStatus") != "RUNNING":
                raise
        return self.get_compute(compute_id)

    def terminate(self, compute_id: str) -> None:
        try:
            self.client("rest").request("DELETE", self._pod_path(compute_id))
        except NotFound:
            return None  # already gone: terminate is idempotent
        return None

    # -- jobs -------------------------------------------------------------------------
    def run_job(self, request: JobRequest) -> Job:
        return serverless.run(self.client("serverless"), request, sleep=self._sleep)

    def get_job(self, job_id: Job | str, *, endpoint: str | None = None) -> Job:
        return serverless.get(self.client("serverless"), *job_ref(job_id, endpoint))

    def cancel_job(self, job_id: Job | str, *, endpoint: str | None = None) -> Job:
        return serverless.cancel(self.client("serverless"), *job_ref(job_id, endpoint))

    def stream_job(self, job_id: Job | str, *, endpoint: str | None = None,
                   timeout_s: float | None = None) -> Iterator[Any]:
        jid, ep = job_ref(job_id, endpoint)
        return serverless.stream(self.client("serverless"), jid, ep, sleep=self._sleep,
                                 timeout_s=timeout_s)

    # -- the account ------------------------------------------------------------------
    def account_fingerprint(self) -> str:
        """The key's RunPod user id (GraphQL ``myself { id }``, as runpod-python's
        ``get_user`` asks), as ``runpod:account:{id}@{host}``; cached per key."""

        def user_id() -> str:
            found = wire.user_id_from_wire(self._graphql(wire.MYSELF_QUERY))
            if found is None:
                raise ProviderError("RunPod's myself query answered without an id",
                                    provider=self.name)
            return found

        return self.cached_account_id("graphql", user_id)

    # -- catalog ----------------------------------------------------------------------
    def list_gpu_types(self) -> list[GpuType]:
        # On-demand prices (REST v2) and spot prices (GraphQL) are independent: fetch both at once.
        with ThreadPoolExecutor(max_workers=1) as pool:
            spot = pool.submit(self._spot_catalog)
            catalog = self.client("rest").request(
                "GET", "/v2/catalog/gpus", params={"include": "AVAILABILITY", "product": "POD"}
            )
            return wire.gpu_types_from_wire(catalog, spot.result())

    # -- internals --------------------------------------------------------------------
    @staticmethod
    def _pod_path(compute_id: str) -> str:
        if not compute_id or not isinstance(compute_id, str):
            raise ValidationError("compute id must be a non-empty string")
        return f"/v2/pods/{wire.segment(compute_id)}"

    def _graphql(self, query: str, variables: dict[str, Any] | None = None, *,
                 idempotent: bool = True) -> Any:
        payload: dict[str, Any] = {"query": query}
        if variables:
            payload["variables"] = variables
        body = self.client("graphql").request("POST", "/graphql", json=payload,
                                              idempotent=idempotent)
        return self._graphql_data(body)

    def _graphql_data(self, body: Any) -> Any:
        try:
            return wire.graphql_data(body)
        except wire.GraphQLFailure as failure:
            raise ProviderError(failure.message, provider=self.name, raw=failure.raw) from None

    def _spot_catalog(self) -> list[Any]:
        types = self._graphql(wire.GPU_TYPES_QUERY).get("gpuTypes")
        return types if isinstance(types, list) else []

    def _bid(self, request: ComputeRequest) -> float:
        if request.max_price_per_hour is not None:
            return request.max_price_per_hour / request.gpu_count
        if request.gpu is None:
            raise ValidationError("RunPod spot pods need a GPU; pass gpu=... or spot=False")
        gid = wire.GPU_IDS.provider_id(request.gpu)
        bid = wire.spot_bid(self._spot_catalog(), gid)
        if bid is None:
            raise Unsupported(
                f"RunPod quotes no spot price for {request.gpu} ({gid})", provider=self.name,
                hint="pass max_price_per_hour= to bid, or spawn on demand (spot=False)",
            )
        return bid

    def _pick_cloud(self, request: ComputeRequest) -> str | None:
        """``SECURE``/``COMMUNITY`` for an on-demand GPU pod with ``cloud_type="any"``: the
        cheaper with stock in the live catalog, asked per cloud (``cloud`` and ``count``
        scope ``include=AVAILABILITY``; specs/runpod/rest-v2-openapi.json). ``None`` when
        the request names a cloud, sets one in ``provider_opts``, or is a CPU pod."""
        if (request.cloud_type != "any" or request.gpu is None
                or "cloud" in request.provider_opts):
            return None
        path = f"/v2/catalog/gpus/{wire.segment(wire.GPU_IDS.provider_id(request.gpu))}"
        rest = self.client("rest")
        offers: dict[str, Any] = {}
        for cloud in ("SECURE", "COMMUNITY"):
            offers[cloud] = rest.request("GET", path, params={
                "include": "AVAILABILITY", "product": "POD", "cloud": cloud,
                "count": str(request.gpu_count)})
            if cloud == "SECURE" and not wire.community_may_win(offers[cloud]):
                break  # secure is in stock and no dearer than community: one call is enough
        return wire.pick_cloud(offers)

    def _check_price(self, request: ComputeRequest, cap: float, cloud_id: str) -> None:
        """On-demand pods take no bid: refuse one the catalog prices above the cap."""
        if request.gpu is None:
            raise ValidationError("max_price_per_hour applies to RunPod GPU pods; drop it")
        cloud = str(cloud_id).lower()
        unit = wire.catalog_price(
            self.client("rest").request("GET", "/v2/catalog/gpus"),
            wire.GPU_IDS.provider_id(request.gpu), cloud,
        )
        if unit is None:
            raise Unsupported(f"RunPod lists no {cloud} price for {request.gpu}",
                              provider=self.name)
        if unit * request.gpu_count > cap:
            raise ValidationError(
                f"{request.gpu_count}x {request.gpu} costs ${unit * request.gpu_count:.2f}/h "
                f"on RunPod {cloud} cloud, above max_price_per_hour={cap:g}; raise it or "
                "pass spot=True to bid"
            )

    def _pod_created(self, body: Any) -> Compute | None:
        return wire.compute_from_wire(body) if isinstance(body, dict) and body.get("id") else None

    def _spot_created(self, body: Any) -> Compute | None:
        rented = self._graphql_data(body).get("podRentInterruptable")
        pod_id = rented.get("id") if isinstance(rented, dict) else None
        if not pod_id:
            return None
        try:
            return self.get_compute(str(pod_id))
        except AtlasError as exc:  # the pod exists: say which, so it is not left billing
            exc.hint = (f"spot pod {pod_id} was created but could not be read: "
                        f"get_compute({str(pod_id)!r}) later, or terminate it")
            raise

    def _create(
        self, api: str, path: str, payload: dict[str, Any],
        parse: Callable[[Any], Compute | None], name: str, marker: str, name_is_ours: bool,
    ) -> Compute:
        """``create_once``: before a retry the pod is looked up by name + env marker."""

        def ours(pod: Mapping[str, Any]) -> Compute | None:
            mine = wire.is_our_create(pod, name=name, marker=marker, name_is_ours=name_is_ours)
            return wire.compute_from_wire(pod) if mine else None

        return self.create_once(
            self.client(api), "POST", path, payload, parse=parse,
            lookup=Lookup(self._pods, ours, name), retry=CreateRetry(CREATE_ATTEMPTS),
            id_name="a pod id",
            not_made=f"no pod named {name!r} was created",
        )

    def _pods(self) -> list[Mapping[str, Any]]:
        return wire.pods_from_wire(self.client("rest").request("GET", "/v2/pods"))

    def _action(self, compute_id: str, action: str, *, reached: tuple[str, ...]) -> Compute:
        path = f"{self._pod_path(compute_id)}/action"
        try:
            body = self.client("rest").request(
                "POST", path, json={"action": action}, idempotent=True
            )
        except ProviderError as exc:
            if exc.status != 409:
                raise
            # A replayed action, or one already done: fine if the pod is where we wanted it.
            current = self.get_compute(compute_id)
            if current.status in reached:
                return current
            raise ProviderError(
                f"cannot {action} pod {compute_id} while it is {current.status}",
                provider=self.name, status=409, raw=exc.raw,
            ) from None
        if isinstance(body, dict) and body.get("id"):
            return wire.compute_from_wire(body)
        return self.get_compute(compute_id)



