"""The shipped conformance suite, run against the mock and against a user's own provider.

Three parts:

* the whole suite against ``MockProvider`` (by name, and a slow-provisioning subclass
  by class), which declares every capability we test, so every positive path runs;
* the whole suite against ``UserCloud``, a duck-typed class with no atlas_nb base, no
  serverless and no stop/start (by class and by instance): a user's own provider plugs
  in unchanged, and the ``Unsupported`` paths run;
* proof that the suite can fail: each contract check run against a provider that
  breaks exactly that contract, plus one nested pytest run of a subclass to check the
  fixtures, the skips and the teardown as a third party would see them.
"""

from __future__ import annotations

import contextlib
import inspect
import sys
import threading
import uuid
from collections.abc import Callable, Iterator
from typing import Any, ClassVar

import pytest

import atlas_nb as atlas
from atlas_nb.providers import resolve
from atlas_nb.providers.mock import MockProvider
from atlas_nb.testing import ConformanceOptions, ProviderConformance
from atlas_nb.testing.spawned import Spawned

pytest_plugins = ("pytester",)

SUITE_TESTS = sorted(n for n in dir(ProviderConformance) if n.startswith("test_"))


# -- a user's own provider: no base class, no serverless, no stop/start ------------------
class UserCloud:
    """What a user might write for their own cloud: plain methods, state in a dict.

    State lives on the class so ``provider=UserCloud`` (a fresh instance per call)
    and ``provider=UserCloud()`` see the same machines. A machine is provisioning on
    spawn and running from its second poll on.
    """

    name = "usercloud"
    pods: ClassVar[dict[str, dict[str, Any]]] = {}

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls.pods = {}  # each broken variant below keeps its own machines

    def capabilities(self) -> frozenset[str]:
        return frozenset({"http_proxy"})

    def spawn_compute(self, request: atlas.ComputeRequest) -> atlas.Compute:
        cid = f"uc-{uuid.uuid4().hex[:10]}"
        self.pods[cid] = {"name": request.name, "ports": request.ports, "gpu": request.gpu,
                          "env": dict(request.env), "status": "provisioning", "polls": 0}
        return self._compute(cid)

    def _compute(self, cid: str) -> atlas.Compute:
        pod = self.pods[cid]
        running = pod["status"] == "running"
        ports = tuple(
            p.model_copy(update={"url": f"https://{cid}-{p.internal}.usercloud.test"})
            if running else p
            for p in pod["ports"]
        )
        return atlas.Compute(id=cid, provider=self.name, status=pod["status"], name=pod["name"],
                             ports=ports, gpu_type=pod["gpu"], gpu_count=1, cost_per_hour=1.5,
                             raw={"id": cid, "state": pod["status"]})

    def get_compute(self, compute_id: str) -> atlas.Compute:
        pod = self.pods.get(compute_id)
        if pod is None:
            raise atlas.NotFound(f"no machine {compute_id}", provider=self.name)
        if pod["status"] == "provisioning":
            pod["polls"] += 1
            if pod["polls"] >= 2:
                pod["status"] = "running"
        return self._compute(compute_id)

    def list_compute(self, *, status: str | None = None, name: str | None = None,
                     gpu: str | None = None, region: str | None = None) -> list[atlas.Compute]:
        every = [self._compute(cid) for cid in self.pods]
        return [c for c in every
                if (status is None or c.status == status)
                and (name is None or (c.name or "").startswith(name))]

    def terminate(self, compute_id: str) -> None:
        if compute_id in self.pods:
            self.pods[compute_id]["status"] = "terminated"

    def list_gpu_types(self) -> list[atlas.GpuType]:
        return [
            atlas.GpuType(provider=self.name, id="A10G", canonical="a10", price_per_hour=1.01),
            atlas.GpuType(provider=self.name, id="tpu-lite", canonical=None, price_per_hour=None),
        ]

    @classmethod
    def pod_env(cls, compute_id: str) -> dict[str, str]:
        """What the machine's container sees."""
        return dict(cls.pods[compute_id]["env"])


class SlowMock(MockProvider):
    """The mock, but machines take a moment to come up: the suite must poll, not assume."""

    provision_delay_s = 0.05


FAST = dict(ready_timeout_s=5.0, poll_s=0.01)


# -- the suite, for real -----------------------------------------------------------------
class TestMockByName(ProviderConformance):
    @pytest.fixture
    def provider(self) -> Any:
        return "mock"

    @pytest.fixture
    def options(self) -> ConformanceOptions:
        return ConformanceOptions(endpoint="echo", pod_env=MockProvider.pod_env, **FAST)


class TestSlowMockByClass(TestMockByName):
    @pytest.fixture
    def provider(self) -> Any:
        return SlowMock


class TestUserCloudByClass(ProviderConformance):
    @pytest.fixture
    def provider(self) -> Any:
        return UserCloud

    @pytest.fixture
    def options(self) -> ConformanceOptions:
        return ConformanceOptions(pod_env=UserCloud.pod_env, **FAST)


class TestUserCloudByInstance(TestUserCloudByClass):
    @pytest.fixture
    def provider(self) -> Any:
        return UserCloud()


# -- the suite can fail: one provider per broken contract --------------------------------
class UnknownCapability(UserCloud):
    def capabilities(self) -> frozenset[str]:
        return frozenset({"http_proxy", "teleport"})


class CapabilitiesAsSet(UserCloud):
    def capabilities(self) -> frozenset[str]:
        return {"http_proxy"}  # type: ignore[return-value]


class ClaimsStopStart(UserCloud):
    def capabilities(self) -> frozenset[str]:
        return frozenset({"stop_start"})


class Unlisted(UserCloud):
    def list_compute(self, **filters: Any) -> list[atlas.Compute]:
        return []


class IgnoresNameFilter(UserCloud):
    def list_compute(self, **filters: Any) -> list[atlas.Compute]:
        stray = atlas.Compute(id="someone-elses", provider=self.name, name="prod-db")
        return [*super().list_compute(), stray]


class DropsName(UserCloud):
    def _compute(self, cid: str) -> atlas.Compute:
        return super()._compute(cid).model_copy(update={"name": None})


class TerminateTwiceFails(UserCloud):
    def terminate(self, compute_id: str) -> None:
        if self.pods[compute_id]["status"] == "terminated":
            raise atlas.NotFound(f"{compute_id} is gone", provider=self.name)
        super().terminate(compute_id)


class TerminateIgnored(UserCloud):
    def terminate(self, compute_id: str) -> None:
        pass


class KeyErrorOnUnknown(UserCloud):
    def get_compute(self, compute_id: str) -> atlas.Compute:
        self.pods[compute_id]  # a raw KeyError, as a careless provider would raise
        return super().get_compute(compute_id)


class NeverReady(UserCloud):
    def get_compute(self, compute_id: str) -> atlas.Compute:
        return self._compute(compute_id)


class FtpUrls(UserCloud):
    def _compute(self, cid: str) -> atlas.Compute:
        c = super()._compute(cid)
        ports = tuple(p.model_copy(update={"url": p.url and "ftp://x"}) for p in c.ports)
        return c.model_copy(update={"ports": ports})


class LeaksTokenInRaw(UserCloud):
    def _compute(self, cid: str) -> atlas.Compute:
        c = super()._compute(cid)
        return c.model_copy(update={"raw": {**c.raw, "vars": self.pods[cid]["env"]}})


class DropsEnv(UserCloud):
    def spawn_compute(self, request: atlas.ComputeRequest) -> atlas.Compute:
        return super().spawn_compute(request.model_copy(update={"env": {}}))


class StopDoesNothing(MockProvider):
    def stop(self, compute_id: str) -> atlas.Compute:
        return self.get_compute(compute_id)


class StopWithoutCapability(MockProvider):
    CAPABILITIES = MockProvider.CAPABILITIES - {"stop_start"}


class JobsWithoutCapability(MockProvider):
    CAPABILITIES = MockProvider.CAPABILITIES - {"serverless"}


class JobNoOutput(MockProvider):
    def get_job(self, job_id: str, *, endpoint: str) -> atlas.Job:
        return super().get_job(job_id, endpoint=endpoint).model_copy(update={"output": None})

    def run_job(self, request: atlas.JobRequest) -> atlas.Job:
        return super().run_job(request).model_copy(update={"output": None})


class CancelIgnored(MockProvider):
    def cancel_job(self, job_id: str, *, endpoint: str) -> atlas.Job:
        return atlas.Job(id=job_id, endpoint=endpoint, provider=self.name, status="cancelled")


class UnknownJobIsInQueue(MockProvider):
    def get_job(self, job_id: str, *, endpoint: str) -> atlas.Job:
        if not job_id.startswith("job-"):
            return atlas.Job(id=job_id, endpoint=endpoint, provider=self.name)
        return super().get_job(job_id, endpoint=endpoint)


class EmptyStream(MockProvider):
    def stream_job(self, job_id: str, *, endpoint: str) -> Iterator[Any]:
        return iter(())


RELEASE = threading.Event()


class EndlessStream(MockProvider):
    def stream_job(self, job_id: str, *, endpoint: str) -> Iterator[Any]:
        yield {"token": 0}
        RELEASE.wait(10)  # "forever", until the test releases it


class BadCanonical(UserCloud):
    def list_gpu_types(self) -> list[atlas.GpuType]:
        return [atlas.GpuType(provider=self.name, id="H100", canonical="h100-ish",
                              price_per_hour=2.0)]


class NegativePrice(UserCloud):
    def list_gpu_types(self) -> list[atlas.GpuType]:
        return [atlas.GpuType(provider=self.name, id="A10G", canonical="a10",
                              price_per_hour=1.0, spot_price_per_hour=-0.1)]


class WrongCatalogProvider(UserCloud):
    def list_gpu_types(self) -> list[atlas.GpuType]:
        return [atlas.GpuType(provider="runpod", id="A10G", canonical="a10", price_per_hour=1.0)]


MOCK_OPTIONS = dict(endpoint="echo", pod_env=MockProvider.pod_env)
SHORT = dict(ready_timeout_s=0.3, poll_s=0.01)

# (suite test, broken provider, what it raises, message pattern, extra options)
BROKEN: list[tuple[str, type[Any], type[BaseException], str, dict[str, Any]]] = [
    ("test_capabilities_are_known_names", UnknownCapability, AssertionError, "teleport", {}),
    ("test_capabilities_are_known_names", CapabilitiesAsSet, AssertionError, "frozenset", {}),
    ("test_capabilities_are_known_names", ClaimsStopStart, AssertionError, "lacks", {}),
    ("test_spawn_get_list_round_trip", Unlisted, AssertionError, "list_compute", SHORT),
    ("test_spawn_get_list_round_trip", IgnoresNameFilter, AssertionError, "other names", {}),
    ("test_spawn_get_list_round_trip", DropsName, AssertionError, "round-trip", {}),
    ("test_terminate_is_idempotent", TerminateTwiceFails, atlas.NotFound, "gone", {}),
    ("test_terminate_is_idempotent", TerminateIgnored, AssertionError, "terminated", SHORT),
    ("test_unknown_id_raises_not_found", KeyErrorOnUnknown, KeyError, "missing", {}),
    ("test_wait_ready_gives_running_compute_with_urls", NeverReady, atlas.Timeout, "not ready",
     SHORT),
    ("test_wait_ready_gives_running_compute_with_urls", FtpUrls, AssertionError, "http", {}),
    ("test_bearer_token_minted_and_kept_out_of_raw_and_repr", LeaksTokenInRaw, AssertionError,
     r"get_compute\(...\).raw", {}),
    ("test_bearer_token_reaches_pod_env", DropsEnv, AssertionError, "pod env", {}),
    ("test_stop_start_or_unsupported", StopDoesNothing, AssertionError, "stopped",
     MOCK_OPTIONS | SHORT),
    ("test_stop_start_or_unsupported", StopWithoutCapability, pytest.fail.Exception,
     "DID NOT RAISE", MOCK_OPTIONS),
    ("test_job_async_lifecycle", JobNoOutput, AssertionError, "output", MOCK_OPTIONS),
    ("test_job_async_lifecycle", JobsWithoutCapability, pytest.fail.Exception,
     "DID NOT RAISE", MOCK_OPTIONS),
    ("test_job_sync", JobNoOutput, AssertionError, "output", MOCK_OPTIONS),
    ("test_cancel_job", CancelIgnored, AssertionError, "completed", MOCK_OPTIONS),
    ("test_get_job_accepts_job_or_id_and_endpoint", UnknownJobIsInQueue,
     pytest.fail.Exception, "DID NOT RAISE", MOCK_OPTIONS),
    ("test_stream_job", EmptyStream, AssertionError, "without yielding", MOCK_OPTIONS),
    ("test_stream_job", EndlessStream, AssertionError, "did not end", MOCK_OPTIONS | SHORT),
    ("test_gpu_catalog", BadCanonical, AssertionError, "h100-ish", {}),
    ("test_gpu_catalog", NegativePrice, AssertionError, "spot_price_per_hour", {}),
    ("test_gpu_catalog", WrongCatalogProvider, AssertionError, "runpod", {}),
]


def run_suite_test(name: str, provider: Any, options: ConformanceOptions) -> None:
    """Run one suite test outside pytest's runner, with the fixtures it asks for."""
    suite = ProviderConformance()
    spawned = Spawned(provider, options)
    fixtures: dict[str, Callable[[], Any]] = {
        "provider": lambda: provider,
        "options": lambda: options,
        "spawned": lambda: spawned,
        "provider_name": lambda: resolve(provider).name,
        "caps": lambda: atlas.capabilities(provider),
    }
    test = getattr(suite, name)
    try:
        test(**{arg: fixtures[arg]() for arg in inspect.signature(test).parameters})
    except BaseException:
        # Like pytest: teardown still runs, but the test's own failure is what we report.
        with contextlib.suppress(AssertionError):
            spawned.close()
        raise
    spawned.close()


@pytest.mark.parametrize(
    ("name", "broken", "raises", "match", "extra"), BROKEN,
    ids=[f"{case[0].removeprefix('test_')}-{case[1].__name__}" for case in BROKEN],
)
def test_suite_fails_a_provider_that_breaks_its_contract(
    name: str, broken: type[Any], raises: type[BaseException], match: str, extra: dict[str, Any]
) -> None:
    options = ConformanceOptions(**{"pod_env": broken.pod_env if hasattr(broken, "pod_env")
                                    else None, **FAST, **extra})
    RELEASE.clear()
    try:
        with pytest.raises(raises, match=match):
            run_suite_test(name, broken(), options)
    finally:
        RELEASE.set()
    if issubclass(broken, UserCloud) and name != "test_terminate_is_idempotent":
        # Even a failed check leaves nothing running behind it.
        assert all(p["status"] == "terminated" for p in broken.pods.values())


def test_every_suite_test_has_a_failing_case() -> None:
    assert {case[0] for case in BROKEN} == set(SUITE_TESTS)


def test_the_harness_passes_correct_providers() -> None:
    # The failing cases above fail because of the breakage, not because of the case.
    for name in sorted({case[0] for case in BROKEN}):
        run_suite_test(name, "mock", ConformanceOptions(**MOCK_OPTIONS, **FAST))
        run_suite_test(name, UserCloud(), ConformanceOptions(pod_env=UserCloud.pod_env, **FAST))


# -- teardown ----------------------------------------------------------------------------
class LostAnswer(UserCloud):
    """The create lands, then the answer is lost on the way back."""

    def spawn_compute(self, request: atlas.ComputeRequest) -> atlas.Compute:
        super().spawn_compute(request)
        raise atlas.TransportError("connection reset", provider=self.name)


class TerminateBroken(UserCloud):
    def terminate(self, compute_id: str) -> None:
        raise atlas.ProviderError("internal error", provider=self.name, status=500)


def test_teardown_finds_a_compute_whose_spawn_answer_was_lost() -> None:
    spawned = Spawned(LostAnswer(), ConformanceOptions(**FAST))
    with pytest.raises(atlas.TransportError):
        spawned.spawn()
    [pod] = LostAnswer.pods.values()
    assert pod["status"] == "provisioning"
    spawned.close()
    assert pod["status"] == "terminated"


def test_teardown_reports_computes_it_could_not_terminate() -> None:
    spawned = Spawned(TerminateBroken(), ConformanceOptions(**FAST))
    c = spawned.spawn()
    with pytest.raises(AssertionError, match=f"{c.id}.*ProviderError"):
        spawned.close()


# -- as a third party sees it: a nested pytest run -----------------------------------------
class CloudPlugin:
    """Hands the nested run its provider (a plugin fixture, so no import tricks)."""

    @pytest.fixture
    def broken_cloud(self) -> Any:
        return Unlisted


NESTED = """
import pytest
from atlas_nb.testing import ConformanceOptions, ProviderConformance


class TestBrokenCloud(ProviderConformance):
    @pytest.fixture
    def provider(self, broken_cloud):
        return broken_cloud

    @pytest.fixture
    def options(self):
        return ConformanceOptions(ready_timeout_s=0.2, poll_s=0.01)


class TestForgotProvider(ProviderConformance):
    def test_extra(self, provider):
        pass
"""


def test_nested_run_reports_skips_failures_and_cleans_up(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_nested=NESTED)
    result = pytester.runpytest_inprocess("-p", "no:cacheprovider", "-rfs",
                                          plugins=[CloudPlugin()])
    # Against Unlisted, the round trip fails (it lists nothing) and the pod-env check is
    # skipped (no pod_env); every test of the class that forgot `provider` errors.
    result.assert_outcomes(passed=len(SUITE_TESTS) - 2, failed=1, skipped=1,
                           errors=len(SUITE_TESTS) + 1)
    for line in ("*FAILED test_nested.py::TestBrokenCloud::test_spawn_get_list_round_trip*",
                 "*SKIPPED*pod_env is None*",
                 "*TestForgotProvider must define a `provider` fixture*"):
        result.stdout.fnmatch_lines([line])
    assert Unlisted.pods, "the nested run spawned on the broken cloud"
    assert {p["status"] for p in Unlisted.pods.values()} == {"terminated"}


def test_import_atlas_nb_does_not_import_pytest() -> None:
    import subprocess

    code = ("import sys, atlas_nb\n"
            "sys.exit('pytest' in sys.modules or 'atlas_nb.testing' in sys.modules)")
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0


def test_options_check_their_values() -> None:
    with pytest.raises(ValueError, match="ready_timeout_s"):
        ConformanceOptions(ready_timeout_s=0)
    with pytest.raises(ValueError, match="name"):
        ConformanceOptions(spawn={"image": "x:1", "name": "mine"})
    defaults = ConformanceOptions()
    assert dict(defaults.spawn) == {"gpu": "h100", "image": "atlas/conformance:latest",
                                    "ports": [(8000, "http")]}
    assert defaults.endpoint is None and defaults.pod_env is None
