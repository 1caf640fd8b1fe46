"""Issue 14, Vast items 5-8: what the real cloud does, in the provider and the sandbox alike.

Statuses (every ``actual_status`` Vast documents), cost (``dph_total`` while the GPU bills,
storage alone while stopped), requests (``owner=me``, ``client_id: "me"``, memory x1000)
and a read right after a rent that answers ``{"instances": null}``. In-process sandbox,
contract validation on, no sleeping (``sleep=`` records).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

import atlas_nb as atlas
from atlas_nb.models import COMPUTE_STATUSES
from atlas_nb.providers.vast import READ_ATTEMPTS, Vast, wire
from atlas_nb.sandbox import sandbox_key, start
from atlas_nb.sandbox.server import Sandbox

pytest.importorskip("openapi_core", reason="contract validation needs openapi-core")

KEY = sandbox_key("vast")
DOCUMENTED = (None, "loading", "running", "stopped", "frozen", "exited", "rebooting",
              "unknown", "offline")
"""The ``actual_status`` table of https://docs.vast.ai/cli/reference/show-instances.md."""


@pytest.fixture
def sb() -> Iterator[Sandbox]:
    with start(clouds=["vast"], start_server=False, validate=True, provision_delay_s=0,
               start_delay_s=0) as box:
        yield box
        assert box.violations == [], "\n".join(box.violations)


@pytest.fixture
def sent(sb: Sandbox) -> list[httpx.Request]:
    return []


@pytest.fixture
def sleeps() -> list[float]:
    return []


@pytest.fixture
def vast(sb: Sandbox, sent: list[httpx.Request], sleeps: list[float]) -> Iterator[Vast]:
    with sb.client(event_hooks={"request": [sent.append]}) as http:
        yield Vast(http=http, sleep=sleeps.append)


def spawn(vast: Vast, **fields: Any) -> atlas.Compute:
    return vast.spawn_compute(atlas.ComputeRequest(**{"gpu": "rtx_4090", "image": "me/srv:1",
                                                      **fields}))


# -- item 5: statuses -----------------------------------------------------------------------
@pytest.mark.parametrize("value", DOCUMENTED)
def test_every_documented_actual_status_is_mapped(value: str | None) -> None:
    assert value in wire.STATUS and wire.STATUS[value] in COMPUTE_STATUSES


@pytest.mark.parametrize(("actual", "status"), [
    ("stopped", "stopped"), ("frozen", "stopped"), ("exited", "stopped"),
    ("rebooting", "provisioning"), ("restarting", "provisioning"), ("unknown", "unknown"),
])
def test_the_states_skypilot_and_the_docs_name(actual: str, status: str) -> None:
    assert wire.status_from_wire({"actual_status": actual}) == status


def test_stop_ends_in_stopped_and_list_finds_it(sb: Sandbox, vast: Vast) -> None:
    c = spawn(vast)
    stopped = vast.stop(c.id)
    assert stopped.status == "stopped"
    assert (stopped.raw["actual_status"], stopped.raw["intended_status"]) == ("stopped",
                                                                                "stopped")
    assert [x.id for x in vast.list_compute(status="stopped")] == [c.id]
    assert vast.list_compute(status="running") == []


def test_an_outbid_instance_exits_with_its_intended_status_kept(sb: Sandbox, vast: Vast) -> None:
    c = spawn(vast, spot=True)
    sb.vast.outbid(c.id)
    row = sb.vast.instances[int(c.id)]
    assert (row["actual_status"], row["intended_status"], row["cur_state"]) == (
        "exited", "running", "stopped")
    got = vast.get_compute(c.id)
    assert got.status == "stopped"
    assert got.cost_per_hour == pytest.approx(row["storage_total_cost"])  # its GPU is gone


# -- item 6: cost ---------------------------------------------------------------------------
def test_cost_is_dph_total_running_storage_stopped_and_frozen_still_bills(
        sb: Sandbox, vast: Vast) -> None:
    c = spawn(vast)
    row = sb.vast.instances[int(c.id)]
    assert c.cost_per_hour == pytest.approx(row["dph_total"])
    assert row["storage_total_cost"] < row["dph_total"]
    stopped = vast.stop(c.id)
    assert stopped.cost_per_hour == pytest.approx(row["storage_total_cost"])
    vast.start(c.id)
    sb.vast.freeze(c.id)
    frozen = vast.get_compute(c.id)
    assert frozen.status == "stopped" and frozen.raw["actual_status"] == "frozen"
    assert frozen.cost_per_hour == pytest.approx(row["dph_total"])  # the GPU still bills


def test_cost_is_not_instance_total_hour_in_the_specs_running_example() -> None:
    # components/schemas/Instance's examples: a running instance, dph_total 1.002 and an
    # `instance` block whose totalHour is the disk alone (0.002).
    row = {"actual_status": "running", "dph_total": 1.0020740740740741,
           "storage_total_cost": 0.002074074074074074,
           "instance": {"gpuCostPerHour": 0, "diskHour": 0.002074074074074074,
                        "totalHour": 0.002074074074074074}}
    assert wire.cost_from_wire(row) == pytest.approx(1.00207, abs=1e-5)
    assert wire.cost_from_wire({**row, "actual_status": "stopped"}) == pytest.approx(0.00207,
                                                                                     abs=1e-5)


# -- item 7: requests -----------------------------------------------------------------------
def test_reads_send_owner_me_and_create_sends_client_id_me(
        sb: Sandbox, vast: Vast, sent: list[httpx.Request]) -> None:
    c = spawn(vast)
    vast.list_compute()
    vast.get_compute(c.id)
    reads = [r for r in sent if r.method == "GET" and "/instances" in r.url.path]
    assert reads and all(r.url.params.get("owner") == "me" for r in reads)
    create = next(r for r in sent if r.method == "PUT" and "/asks/" in r.url.path)
    assert json.loads(create.content)["client_id"] == "me"


def test_memory_filters_use_vast_clis_x1000() -> None:
    q = wire.search_query(atlas.ComputeRequest(gpu="rtx_4090", image="x", memory_gb=64),
                          spot=False)
    assert q["cpu_ram"] == {"gte": 64_000}


# -- item 8: a read right after a rent ------------------------------------------------------
def test_a_null_read_right_after_a_rent_is_retried(sb: Sandbox, vast: Vast,
                                                   sleeps: list[float]) -> None:
    sb.vast.routes.show_lag = 2
    c = spawn(vast, name="lagged")
    assert list(sb.vast.instances) == [int(c.id)]
    assert c.name == "lagged" and c.raw.get("actual_status") == "running"
    assert len(sleeps) == 2 and all(0 < s <= 8 for s in sleeps)


def test_the_new_instance_never_escapes_untracked(sb: Sandbox, vast: Vast,
                                                  sleeps: list[float]) -> None:
    sb.vast.routes.show_lag = READ_ATTEMPTS + 5
    c = spawn(vast, name="unread", ports=[(8000, "http")])
    assert list(sb.vast.instances) == [int(c.id)]  # the id Vast gave, not an error
    assert (c.status, c.name, c.gpu_type) == ("provisioning", "unread", "rtx_4090")
    assert c.cost_per_hour > 0 and [p.internal for p in c.ports] == [8000]
    assert len(sleeps) == READ_ATTEMPTS - 1
    vast.terminate(c.id)
    assert sb.vast.instances == {}
