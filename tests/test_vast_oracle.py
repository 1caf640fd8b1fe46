"""vast-cli (the official ``vastai`` CLI, pinned in ``oracles/vastai.txt``) drives the sandbox.

Whatever vast-cli sends, the sandbox must accept as Vast does, and whatever it reads must be
there. The CLI runs from its own virtualenv (``make oracles``) as a subprocess pointed at
the sandbox's Vast base URL, the way vastai 1.9.1 is configured:

* ``--url``: the server URL that ``VastClient._build_url`` prefixes to ``/api/v0/...``
  (vastai/api/client.py), so the sandbox's ``{sb.url}/vast/rest``;
* ``--api-key``: sent as ``Authorization: Bearer <key>``;
* ``--raw``: JSON on stdout instead of tables.

Covered: search offers with filters, create instance, show instance(s), stop, start,
label, logs (asked for on the API, fetched from the ``result_url`` bucket) and destroy.
Every exchange is checked against the vendored spec plus the sandbox's errata, and the
sandbox must end with no violation.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import atlas_nb as atlas
from atlas_nb.providers.vast import Vast
from atlas_nb.sandbox import sandbox_key, start
from atlas_nb.sandbox.server import Sandbox
from oracles import oracle_bin

pytest.importorskip("openapi_core", reason="contract validation needs openapi-core")

KEY = sandbox_key("vast")
INSTANCE_FIELDS = ("id", "machine_id", "actual_status", "num_gpus", "gpu_name", "gpu_util",
                   "cpu_cores_effective", "cpu_ram", "disk_space", "ssh_host", "ssh_port",
                   "dph_total", "image_uuid", "inet_up", "inet_down", "reliability2", "label",
                   "duration", "uptime_mins", "start_date", "extra_env")
"""What vast-cli's ``show instance(s)`` reads of a row (vastai/cli/display.py
``instance_fields``, vastai/api/instances.py ``show_instance``)."""


@pytest.fixture(scope="module")
def sb() -> Iterator[Sandbox]:
    with start(clouds=["vast"], validate=True, attach=False, provision_delay_s=0,
               start_delay_s=0) as box:
        yield box
        assert box.violations == [], "\n".join(box.violations)


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("vast-home")  # vast-cli keeps its config under $HOME


def vastai(sb: Sandbox, home: Path, *args: str) -> str:
    """Run vast-cli (``--raw``) against the sandbox; its stdout (the command must exit 0)."""
    argv = [str(oracle_bin("vastai", "vastai")), "--url", f"{sb.url}/vast/rest",
            "--api-key", KEY, "--raw", *args]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=120, check=False,
                          env={"HOME": str(home), "PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"})
    assert done.returncode == 0, f"{args}: {done.stdout}\n{done.stderr}"
    return done.stdout


def as_json(text: str) -> Any:
    return json.loads(text)


def test_search_offers_with_filters(sb: Sandbox, home: Path) -> None:
    offers = as_json(vastai(sb, home, "search", "offers",
                            "gpu_ram>=20 num_gpus=1 rentable=true reliability>0.9",
                            "--order", "dph_total", "--limit", "5"))
    assert len(offers) == 5
    assert all(o["num_gpus"] == 1 and o["gpu_ram"] >= 20_000 and o["rentable"]
               and o["reliability"] > 0.9 for o in offers)
    prices = [o["dph_total"] for o in offers]
    assert prices == sorted(prices)
    for key in ("id", "gpu_name", "dph_total", "cpu_ram", "disk_space", "min_bid",
                "geolocation", "verification"):
        assert all(key in o for o in offers), key
    names = as_json(vastai(sb, home, "search", "offers", "gpu_name=RTX_4090 num_gpus=1",
                           "--limit", "3"))
    assert names and {o["gpu_name"] for o in names} == {"RTX 4090"}


def test_an_instance_from_create_to_destroy(sb: Sandbox, home: Path) -> None:
    offer = as_json(vastai(sb, home, "search", "offers", "gpu_name=RTX_4090 num_gpus=1",
                           "--order", "dph_total", "--limit", "1"))[0]
    made = as_json(vastai(sb, home, "create", "instance", str(offer["id"]),
                          "--image", "vastai/base:latest", "--disk", "20",
                          "--label", "oracle", "--env", "-e MODE=test -p 8000:8000"))
    assert made["success"] is True
    iid = made["new_contract"]
    assert int(iid) in sb.vast.instances

    row = as_json(vastai(sb, home, "show", "instance", str(iid)))
    for key in INSTANCE_FIELDS:
        assert key in row, key
    assert (row["id"], row["actual_status"], row["label"]) == (iid, "running", "oracle")
    assert row["extra_env"]["MODE"] == "test"  # the CLI reshapes the [name, value] pairs
    assert row["ports"]["8000/tcp"][0]["HostPort"].isdigit()
    listed = as_json(vastai(sb, home, "show", "instances"))
    assert [r["id"] for r in listed] == [iid]

    assert "stopping" in vastai(sb, home, "stop", "instance", str(iid))
    stopped = as_json(vastai(sb, home, "show", "instance", str(iid)))
    assert (stopped["actual_status"], stopped["intended_status"]) == ("stopped", "stopped")
    ours = Vast(base_url=f"{sb.url}/vast/rest", api_key=KEY).get_compute(str(iid))
    assert ours.status == "stopped"
    assert ours.cost_per_hour == pytest.approx(stopped["storage_total_cost"])

    assert "starting" in vastai(sb, home, "start", "instance", str(iid))
    assert as_json(vastai(sb, home, "show", "instance", str(iid)))["actual_status"] == "running"

    assert "newlabel" in vastai(sb, home, "label", "instance", str(iid), "newlabel")
    assert sb.vast.instances[int(iid)]["label"] == "newlabel"

    logs = vastai(sb, home, "logs", str(iid), "--tail", "10")
    assert "vastai/base:latest" in logs and "MODE" not in logs
    daemon = vastai(sb, home, "logs", str(iid), "--daemon-logs")
    assert "daemon:" in daemon

    vastai(sb, home, "destroy", "instance", str(iid), "-y")
    assert int(iid) not in sb.vast.instances
    assert as_json(vastai(sb, home, "show", "instances")) == []


def test_what_atlas_rents_vast_cli_reads_at_the_same_price(sb: Sandbox, home: Path) -> None:
    vast = Vast(base_url=f"{sb.url}/vast/rest", api_key=KEY, sleep=lambda _: None)
    c = vast.spawn_compute(atlas.ComputeRequest(gpu="rtx_4090", image="me/srv:1",
                                                ports=[(8000, "http")], name="atlas-oracle"))
    try:
        row = as_json(vastai(sb, home, "show", "instance", c.id))
        assert row["label"] == "atlas-oracle" and row["actual_status"] == "running"
        assert c.cost_per_hour == pytest.approx(row["dph_total"])  # vast-cli's $/hr
        assert row["extra_env"]["ATLAS_PORTS"] == "8000/http"
    finally:
        vast.terminate(c.id)
