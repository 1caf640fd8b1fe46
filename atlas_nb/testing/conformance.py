"""``ProviderConformance``: the provider contract as a pytest class to subclass."""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import math
import secrets
from collections.abc import Iterator
from typing import Any

import pytest

import atlas_nb as atlas
from atlas_nb import auth
from atlas_nb.gpus import GPUS
from atlas_nb.models import COMPUTE_STATUSES, JOB_STATUSES
from atlas_nb.providers import resolve

from .options import ConformanceOptions
from .polling import drain, wait_for
from .spawned import Spawned

__all__ = ["ProviderConformance"]

JOB_INPUT: dict[str, Any] = {"prompt": "atlas_nb conformance"}
"""What the job tests send; an echo endpoint is enough."""

_MIN_TOKEN_BYTES = 32


class ProviderConformance:
    """The atlas_nb provider contract, as tests. Subclass it and define ``provider``.

    ::

        from atlas_nb.testing import ProviderConformance, ConformanceOptions

        class TestMyProvider(ProviderConformance):
            @pytest.fixture
            def provider(self):            # a registered name, a class or an instance
                return MyProvider()

            @pytest.fixture
            def options(self):             # optional; see ConformanceOptions
                return ConformanceOptions(spawn={"gpu": "a10", "image": "me/srv:1",
                                                 "ports": [(8000, "http")]})

    Every call goes through the public facade (``atlas_nb.spawn_compute(provider=...)``
    and friends), exactly as a user's notebook would. The contract:

    1. **Capabilities** are a ``frozenset`` of known names (a subset of
       ``atlas_nb.CAPABILITIES``), and the methods a declared capability needs exist.
    2. **Round trip.** ``spawn_compute`` returns a ``Compute`` of this provider;
       ``get_compute`` finds it by id; ``list_compute`` lists it, and so does
       ``list_compute(name=prefix)``, whose every entry has that prefix.
    3. **terminate is idempotent**: twice in a row raises nothing; afterwards
       ``get_compute`` shows ``terminated`` or raises ``NotFound``.
    4. **Unknown ids** raise ``NotFound`` from ``get_compute``.
    5. **wait_ready** returns the compute ``running`` with a URL on every HTTP port.
    6. **Bearer auth** (``auth="bearer"``): a token of at least 32 bytes and its
       SHA-256 hash, which ``atlas_nb.auth.token_valid`` accepts; the token reaches the
       pod env as ``ATLAS_PRESHARED_KEY`` (checked through ``options.pod_env``) but
       never appears in ``raw`` or ``repr`` of what spawn, get or list return.
    7. **stop/start** work where ``stop_start`` is declared (``stopped``, then
       ``running`` again) and raise ``Unsupported`` where it is not.
    8. **Jobs** where ``serverless`` is declared (needs ``options.endpoint``): async run
       then ``get_job`` until ``completed`` with output; sync run; cancel;
       ``get_job`` takes the ``Job`` or id + endpoint, ``NotFound`` for an unknown id;
       ``stream_job`` yields at least one chunk and ends. Without ``serverless`` every
       job call raises ``Unsupported``.
    9. **Catalog** (``list_gpu_types``, skipped if ``Unsupported``): entries of this
       provider, canonical names from ``atlas_nb.gpus.GPUS`` or ``None``, prices
       non-negative floats, at least one on-demand price.

    Every compute a test spawns is terminated in fixture teardown, also when the test
    fails; a compute that could not be terminated makes teardown fail loudly. Waits poll
    with a deadline (``options.ready_timeout_s``, ``options.poll_s``), never fixed sleeps.
    """

    # -- fixtures a subclass provides or overrides ---------------------------------------
    @pytest.fixture
    def provider(self) -> Any:
        """Override: what ``provider=`` gets (a name, a ``Provider`` class or instance)."""
        pytest.fail(
            f"{type(self).__name__} must define a `provider` fixture returning a provider "
            "name, class or instance (see atlas_nb.testing.ProviderConformance)"
        )

    @pytest.fixture
    def options(self) -> ConformanceOptions:
        """Override to tune what is spawned, the job endpoint, pod env access, timeouts."""
        return ConformanceOptions()

    @pytest.fixture
    def spawned(self, provider: Any, options: ConformanceOptions) -> Iterator[Spawned]:
        """Spawns on behalf of a test; terminates everything it spawned at teardown."""
        tracker = Spawned(provider, options)
        try:
            yield tracker
        finally:
            tracker.close()

    @pytest.fixture
    def provider_name(self, provider: Any) -> str:
        """The ``name`` of the provider under test (what models carry in ``.provider``)."""
        name: Any = resolve(provider).name  # a user's class may get this wrong: check it
        assert isinstance(name, str), f"provider name must be a str: {name!r}"
        assert name, f"provider name must be a non-empty str: {name!r}"
        return name

    @pytest.fixture
    def caps(self, provider: Any) -> frozenset[str]:
        """The provider's declared capabilities."""
        return atlas.capabilities(provider)

    # -- 1. capabilities ------------------------------------------------------------------
    def test_capabilities_are_known_names(self, provider: Any, caps: frozenset[str]) -> None:
        own = resolve(provider).capabilities()
        assert isinstance(own, frozenset), (
            f"capabilities() must return a frozenset, got {type(own).__name__}"
        )
        assert own == caps
        unknown = sorted(str(c) for c in caps - atlas.CAPABILITIES)
        assert not unknown, (
            f"unknown capability names {unknown}; use names from atlas_nb.CAPABILITIES: "
            f"{sorted(atlas.CAPABILITIES)}"
        )
        instance = resolve(provider)
        needs = {"stop_start": ("stop", "start"),
                 "serverless": ("run_job", "get_job", "cancel_job", "stream_job")}
        for cap, methods in needs.items():
            if cap not in caps:
                continue
            missing = [m for m in methods if not callable(getattr(instance, m, None))]
            assert not missing, f"declares {cap!r} but lacks {missing}"

    # -- 2-4. lifecycle -------------------------------------------------------------------
    def test_spawn_get_list_round_trip(
        self, provider: Any, options: ConformanceOptions, spawned: Spawned, provider_name: str
    ) -> None:
        c = spawned.spawn()
        assert isinstance(c, atlas.Compute), f"spawn_compute returned {type(c).__name__}"
        assert c.id, "a spawned compute needs a non-empty id"
        assert c.provider == provider_name
        assert c.status in COMPUTE_STATUSES
        assert (c.name or "").startswith(spawned.prefix), (
            f"the requested name {spawned.prefix}-1 did not round-trip: {c.name!r}"
        )

        got = atlas.get_compute(c.id, provider=provider)
        assert (got.id, got.provider) == (c.id, provider_name)

        def ids(**filters: Any) -> list[str]:
            return [x.id for x in atlas.list_compute(provider=provider, **filters)]

        # Some clouds list a new resource a moment after creating it: poll, don't sleep.
        wait_for(ids, lambda found: c.id in found, what=f"list_compute() to show {c.id}",
                 timeout_s=options.ready_timeout_s, poll_s=options.poll_s)
        named = atlas.list_compute(provider=provider, name=spawned.prefix)
        assert c.id in [x.id for x in named], (
            f"list_compute(name={spawned.prefix!r}) misses {c.id}: {[x.name for x in named]}"
        )
        strays = [x.name for x in named if not (x.name or "").startswith(spawned.prefix)]
        assert not strays, f"list_compute(name=prefix) returned other names: {strays}"
        assert c.id not in ids(name=f"{spawned.prefix}-no-such-name")

    def test_terminate_is_idempotent(
        self, provider: Any, options: ConformanceOptions, spawned: Spawned
    ) -> None:
        c = spawned.spawn()
        atlas.terminate(c.id, provider=provider)
        atlas.terminate(c.id, provider=provider)  # second time: no error
        self._wait_gone(provider, c.id, options)
        atlas.terminate(c.id, provider=provider)  # and once it is gone for good

    def test_unknown_id_raises_not_found(self, provider: Any) -> None:
        missing = f"atlas-conformance-missing-{secrets.token_hex(6)}"
        with pytest.raises(atlas.NotFound):
            atlas.get_compute(missing, provider=provider)

    def test_wait_ready_gives_running_compute_with_urls(
        self, provider: Any, options: ConformanceOptions, spawned: Spawned
    ) -> None:
        c = spawned.spawn()
        ready = self._wait_ready(provider, c.id, options)
        assert ready.id == c.id
        assert ready.status == "running", f"wait_ready returned status {ready.status!r}"
        wanted = {p.internal for p in c.ports if p.protocol == "http"}
        http = [p for p in ready.ports if p.protocol == "http"]
        assert wanted <= {p.internal for p in http}, (
            f"requested HTTP ports {sorted(wanted)}, ready compute has {ready.ports}"
        )
        for p in http:
            assert p.url and p.url.startswith(("http://", "https://")), (
                f"HTTP port {p.internal} has no http(s) URL once ready: {p.url!r}"
            )

    # -- 6. bearer auth -------------------------------------------------------------------
    def test_bearer_token_minted_and_kept_out_of_raw_and_repr(
        self, provider: Any, spawned: Spawned
    ) -> None:
        c = spawned.spawn(auth="bearer")
        assert c.auth is not None and c.auth.scheme == "bearer", f"auth handle: {c.auth!r}"
        assert c.auth.token, "spawn_compute returned a bearer auth handle without its token"
        token, token_hash = c.auth.token, c.auth.hash
        assert _token_bytes(token) >= _MIN_TOKEN_BYTES, (
            f"bearer token too short: {_token_bytes(token)} bytes, need {_MIN_TOKEN_BYTES}"
        )
        assert token_hash == hashlib.sha256(token.encode()).hexdigest()
        assert auth.token_valid(token, token_hash)
        assert not auth.token_valid(token + "x", token_hash)

        seen = [("spawn_compute", c), ("get_compute", atlas.get_compute(c.id, provider=provider))]
        seen += [("list_compute", x) for x in atlas.list_compute(provider=provider)
                 if x.id == c.id]
        for where, compute in seen:
            assert token not in json.dumps(compute.raw, default=str), (
                f"the bearer token leaks into {where}(...).raw; strip it "
                "(atlas_nb.providers.strip_secrets)"
            )
            for text in (repr(compute), str(compute), repr(compute.auth)):
                assert token not in text, f"the bearer token leaks into the repr of {where}"

    def test_bearer_token_reaches_pod_env(
        self, options: ConformanceOptions, spawned: Spawned
    ) -> None:
        if options.pod_env is None:
            pytest.skip("ConformanceOptions.pod_env is None: cannot read a pod's env to check "
                        "that the bearer token reached it")
        c = spawned.spawn(auth="bearer")
        assert c.auth is not None
        assert c.auth.env_var == auth.ENV_VAR
        env = options.pod_env(c.id)
        assert env.get(auth.ENV_VAR) == c.auth.token, (
            f"the pod env has no {auth.ENV_VAR} equal to the minted token "
            f"(env names: {sorted(env)})"
        )

    # -- 7. stop / start ------------------------------------------------------------------
    def test_stop_start_or_unsupported(
        self, provider: Any, options: ConformanceOptions, spawned: Spawned, caps: frozenset[str]
    ) -> None:
        c = spawned.spawn()
        if "stop_start" not in caps:
            with pytest.raises(atlas.Unsupported):
                atlas.stop(c.id, provider=provider)
            with pytest.raises(atlas.Unsupported):
                atlas.start(c.id, provider=provider)
            return
        self._wait_ready(provider, c.id, options)
        stopped = atlas.stop(c.id, provider=provider)
        assert stopped.id == c.id
        wait_for(lambda: atlas.get_compute(c.id, provider=provider).status,
                 lambda status: status == "stopped", what=f"{c.id} to be stopped",
                 timeout_s=options.ready_timeout_s, poll_s=options.poll_s)
        started = atlas.start(c.id, provider=provider)
        assert started.id == c.id
        again = self._wait_ready(provider, c.id, options)
        assert again.status == "running"

    # -- 8. serverless jobs ---------------------------------------------------------------
    def test_job_async_lifecycle(
        self, provider: Any, options: ConformanceOptions, spawned: Spawned,
        caps: frozenset[str], provider_name: str,
    ) -> None:
        endpoint = self._endpoint(caps, options)
        if endpoint is None:
            with pytest.raises(atlas.Unsupported):
                atlas.run_job(provider=provider, endpoint="conformance", input=JOB_INPUT)
            return
        job = spawned.run_job(endpoint, input=JOB_INPUT, mode="async")
        assert isinstance(job, atlas.Job), f"run_job returned {type(job).__name__}"
        assert job.id and job.endpoint == endpoint and job.provider == provider_name
        assert job.status in JOB_STATUSES
        final = self._wait_job(provider, job, options)
        assert final.id == job.id
        assert final.status == "completed", f"job ended {final.status}: {final.error}"
        assert final.output is not None, "a completed job carries its output"

    def test_job_sync(
        self, provider: Any, options: ConformanceOptions, spawned: Spawned, caps: frozenset[str]
    ) -> None:
        endpoint = self._endpoint(caps, options)
        timeout_ms = int(options.ready_timeout_s * 1000)
        if endpoint is None:
            with pytest.raises(atlas.Unsupported):
                atlas.run_job(provider=provider, endpoint="conformance", input=JOB_INPUT,
                              mode="sync", timeout_ms=timeout_ms)
            return
        job = spawned.run_job(endpoint, input=JOB_INPUT, mode="sync", timeout_ms=timeout_ms)
        assert job.status == "completed", f"a sync run returned {job.status}: {job.error}"
        assert job.output is not None, "a completed sync job carries its output"

    def test_cancel_job(
        self, provider: Any, options: ConformanceOptions, spawned: Spawned, caps: frozenset[str]
    ) -> None:
        endpoint = self._endpoint(caps, options)
        if endpoint is None:
            with pytest.raises(atlas.Unsupported):
                atlas.cancel_job("conformance-job", endpoint="conformance", provider=provider)
            return
        job = spawned.run_job(endpoint, input=JOB_INPUT, mode="async")
        answer = atlas.cancel_job(job, provider=provider)
        assert answer.id == job.id and answer.status in JOB_STATUSES
        final = self._wait_job(provider, job, options)
        # A fast job may finish before the cancel lands; a cancelled one must stay cancelled.
        allowed = {"cancelled"} if answer.status == "cancelled" else {"cancelled", "completed"}
        assert final.status in allowed, f"after cancel the job is {final.status}"

    def test_get_job_accepts_job_or_id_and_endpoint(
        self, provider: Any, spawned: Spawned, options: ConformanceOptions, caps: frozenset[str]
    ) -> None:
        endpoint = self._endpoint(caps, options)
        if endpoint is None:
            with pytest.raises(atlas.Unsupported):
                atlas.get_job("conformance-job", endpoint="conformance", provider=provider)
            return
        job = spawned.run_job(endpoint, input=JOB_INPUT, mode="async")
        by_job = atlas.get_job(job, provider=provider)
        by_id = atlas.get_job(job.id, endpoint=endpoint, provider=provider)
        assert (by_job.id, by_job.endpoint) == (job.id, endpoint)
        assert (by_id.id, by_id.endpoint) == (job.id, endpoint)
        with pytest.raises(atlas.NotFound):
            atlas.get_job(f"missing-{secrets.token_hex(6)}", endpoint=endpoint,
                          provider=provider)

    def test_stream_job(
        self, provider: Any, spawned: Spawned, options: ConformanceOptions, caps: frozenset[str]
    ) -> None:
        endpoint = self._endpoint(caps, options)
        if endpoint is None:
            with pytest.raises(atlas.Unsupported):
                # A generator-based provider raises only once iterated: iterate.
                list(atlas.stream_job("conformance-job", endpoint="conformance",
                                      provider=provider))
            return
        job = spawned.run_job(endpoint, input=JOB_INPUT, mode="async")
        chunks = drain(atlas.stream_job(job, provider=provider), options.ready_timeout_s)
        assert len(chunks) >= 1, "stream_job ended without yielding a chunk"

    # -- 9. catalog -----------------------------------------------------------------------
    def test_gpu_catalog(self, provider: Any, provider_name: str) -> None:
        try:
            catalog = atlas.list_gpu_types(provider=provider)
        except atlas.Unsupported:
            pytest.skip("the provider has no GPU catalog (list_gpu_types is Unsupported)")
        assert catalog, "list_gpu_types() returned no entries"
        for g in catalog:
            assert isinstance(g, atlas.GpuType), f"catalog entry is a {type(g).__name__}"
            assert g.provider == provider_name, f"{g.id}: provider {g.provider!r}"
            assert g.id, f"catalog entry without an id: {g!r}"
            assert g.canonical is None or g.canonical in GPUS, (
                f"{g.id}: canonical {g.canonical!r} is not in atlas_nb.gpus.GPUS; use None "
                "for GPUs atlas_nb does not know"
            )
            assert g.gpu_count >= 1, f"{g.id}: gpu_count {g.gpu_count}"
            for label, price in (("price_per_hour", g.price_per_hour),
                                 ("spot_price_per_hour", g.spot_price_per_hour)):
                assert price is None or (math.isfinite(price) and price >= 0), (
                    f"{g.id}: {label} must be a non-negative float USD/h, got {price!r}"
                )
        assert any(g.price_per_hour is not None for g in catalog), "no entry has a price"

    # -- helpers --------------------------------------------------------------------------
    @staticmethod
    def _endpoint(caps: frozenset[str], options: ConformanceOptions) -> str | None:
        """The endpoint to test jobs on, ``None`` to test ``Unsupported``, or skip."""
        if "serverless" not in caps:
            return None
        if options.endpoint is None:
            pytest.skip("the provider declares 'serverless' but ConformanceOptions.endpoint "
                        "is None: pass an endpoint id to test jobs")
        return options.endpoint

    @staticmethod
    def _wait_ready(provider: Any, compute_id: str, options: ConformanceOptions) -> atlas.Compute:
        return atlas.wait_ready(compute_id, provider=provider, timeout_s=options.ready_timeout_s,
                                poll_s=options.poll_s)

    @staticmethod
    def _wait_job(provider: Any, job: atlas.Job, options: ConformanceOptions) -> atlas.Job:
        return wait_for(lambda: atlas.get_job(job, provider=provider), lambda j: j.done,
                        what=f"job {job.id} to finish", timeout_s=options.ready_timeout_s,
                        poll_s=options.poll_s)

    @staticmethod
    def _wait_gone(provider: Any, compute_id: str, options: ConformanceOptions) -> None:
        def status() -> str:
            try:
                return atlas.get_compute(compute_id, provider=provider).status
            except atlas.NotFound:
                return "not found"

        wait_for(status, lambda s: s in ("terminated", "not found"),
                 what=f"{compute_id} to be terminated or gone after terminate()",
                 timeout_s=options.ready_timeout_s, poll_s=options.poll_s)


def _token_bytes(token: str) -> int:
    """The larger of the token's base64-decoded length and its string length."""
    try:
        decoded = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
    except (binascii.Error, ValueError):
        return len(token)
    return max(len(decoded), len(token))
