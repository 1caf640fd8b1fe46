"""runpod-python (the official client, pinned in ``oracles/runpod.txt``) drives the sandbox.

Whatever runpod-python sends, the sandbox must accept as RunPod does, and whatever it reads
must be there: the serverless runtime (``runpod.Endpoint(id)``: ``run``, ``run_sync``,
``status``, ``output``, ``stream``, ``cancel``, ``health``) and the GraphQL reads
(``get_gpus``, ``get_gpu``, ``get_pods``, ``get_pod``). The client runs in its own
virtualenv (``make oracles``), as a subprocess pointed at the sandbox the way
runpod-python is configured (runpod-python 1.12.0):

* ``RUNPOD_ENDPOINT_BASE_URL``: read once at import into ``runpod.endpoint_url_base``
  (runpod/__init__.py), which ``RunPodClient`` joins as ``{base}/{endpoint}/{op}``
  (runpod/endpoint/runner.py);
* ``RUNPOD_API_BASE_URL``: read at each GraphQL call, posted to ``{base}/graphql``
  (runpod/api/graphql.py);
* ``runpod.api_key``: sent as ``Authorization: Bearer <key>`` on both.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from atlas_nb.sandbox import sandbox_key, start
from atlas_nb.sandbox.server import Sandbox
from oracles import oracle_bin

KEY = sandbox_key("runpod")
RTX_4090 = "NVIDIA GeForce RTX 4090"

SCRIPT = textwrap.dedent('''
    import json, sys
    import runpod

    runpod.api_key = sys.argv[1]
    pod_id = sys.argv[2]
    out = {"endpoint_url_base": runpod.endpoint_url_base}

    echo = runpod.Endpoint("echo")
    out["run_sync"] = echo.run_sync({"prompt": "hi"}, timeout=60)
    job = echo.run({"input": {"prompt": "async"}})
    out["run_id"] = job.job_id
    out["first_status"] = job.status()
    out["output"] = job.output(timeout=60)
    out["final_status"] = job.status()
    out["health"] = echo.health()

    streamed = runpod.Endpoint("stream").run({"text": "alpha beta gamma", "delay_s": 0.01})
    out["stream"] = list(streamed.stream())

    slow = runpod.Endpoint("slow").run({"seconds": 60})
    out["cancel"] = slow.cancel()
    out["cancelled_status"] = slow.status()

    failed = runpod.Endpoint("fail").run({"message": "boom"})
    out["failed_output"] = failed.output(timeout=60)
    out["failed_status"] = failed.status()

    out["gpus"] = runpod.get_gpus()
    out["gpu"] = runpod.get_gpu(sys.argv[3], 2)
    try:
        runpod.get_gpu("NVIDIA Nonexistent 1GB")
    except ValueError as exc:
        out["gpu_missing"] = str(exc)
    out["pods"] = runpod.get_pods()
    out["pod"] = runpod.get_pod(pod_id)
    out["pod_missing"] = runpod.get_pod("nopod0000000")
    print(json.dumps(out))
''')


@pytest.fixture(scope="module")
def sb() -> Iterator[Sandbox]:
    with start(clouds=["runpod"], provision_delay_s=0, start_delay_s=0) as box:
        yield box
        assert box.violations == [], "\n".join(box.violations)


@pytest.fixture(scope="module")
def pod(sb: Sandbox) -> str:
    """A pod made straight on the sandbox's REST v2 API (the oracle checks the sandbox, not
    our provider): its id."""
    body = {"name": "oracle-pod", "image": "runpod/base:0.1", "gpu": {"id": RTX_4090, "count": 1},
            "ports": ["8888/http", "22/tcp"], "disk": 10,
            "mounts": {"persistent": {"size": 20, "path": "/workspace"}}}
    with sb.client(headers={"Authorization": f"Bearer {KEY}"}) as client:
        answer = client.post(f"{sb.url}/runpod/rest/v2/pods", json=body)
    assert answer.status_code == 201, answer.text
    return str(answer.json()["id"])


@pytest.fixture(scope="module")
def seen(sb: Sandbox, pod: str, tmp_path_factory: pytest.TempPathFactory
         ) -> dict[str, Any]:
    """What runpod-python read from the sandbox, as its script printed it."""
    home = tmp_path_factory.mktemp("runpod-home")  # no ~/.runpod/config.toml of the user's
    script = Path(home) / "oracle.py"
    script.write_text(SCRIPT)
    env = {"PATH": os.environ.get("PATH", ""), "HOME": str(home),
           "RUNPOD_ENDPOINT_BASE_URL": f"{sb.url}/runpod/serverless/v2",
           "RUNPOD_API_BASE_URL": f"{sb.url}/runpod/graphql"}
    done = subprocess.run([str(oracle_bin("runpod")), str(script), KEY, pod, RTX_4090],
                          env=env, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr[-3000:]
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def test_it_talks_to_the_sandbox(sb: Sandbox, seen: dict[str, Any]) -> None:
    assert seen["endpoint_url_base"] == f"{sb.url}/runpod/serverless/v2"


def test_run_sync_returns_the_output(seen: dict[str, Any]) -> None:
    assert seen["run_sync"] == {"echo": {"prompt": "hi"}}


def test_run_status_and_output(sb: Sandbox, seen: dict[str, Any]) -> None:
    assert seen["first_status"] in {"IN_QUEUE", "IN_PROGRESS", "COMPLETED"}
    assert seen["output"] == {"echo": {"prompt": "async"}}
    assert seen["final_status"] == "COMPLETED"
    assert sb.runpod.job("echo", seen["run_id"])["status"] == "COMPLETED"


def test_health_has_job_and_worker_counts(seen: dict[str, Any]) -> None:
    assert {"completed", "failed", "inProgress", "inQueue", "retried"} <= set(
        seen["health"]["jobs"])
    assert {"idle", "running"} <= set(seen["health"]["workers"])


def test_stream_yields_every_chunk(seen: dict[str, Any]) -> None:
    assert seen["stream"] == ["alpha", "beta", "gamma"]


def test_cancel(seen: dict[str, Any]) -> None:
    assert seen["cancel"]["status"] == "CANCELLED"
    assert seen["cancelled_status"] == "CANCELLED"


def test_a_failed_job_reads_failed(seen: dict[str, Any]) -> None:
    assert seen["failed_status"] == "FAILED" and seen["failed_output"] is None


def test_get_gpus_lists_the_catalog(seen: dict[str, Any]) -> None:
    gpus = {g["id"]: g for g in seen["gpus"]}
    assert gpus[RTX_4090]["displayName"] and gpus[RTX_4090]["memoryInGb"] == 24
    assert all(set(g) == {"id", "displayName", "memoryInGb"} for g in seen["gpus"])


def test_get_gpu_reads_every_field_it_asks_for(seen: dict[str, Any]) -> None:
    gpu = seen["gpu"]
    assert gpu["id"] == RTX_4090 and gpu["manufacturer"]
    assert gpu["communityPrice"] > 0 and gpu["maxGpuCount"] >= 2
    assert gpu["lowestPrice"]["uninterruptablePrice"] > 0
    assert gpu["lowestPrice"]["minimumBidPrice"] > 0
    for field in ("cudaCores", "oneMonthPrice", "threeMonthPrice", "oneWeekPrice",
                  "secureCloud", "communityCloud", "securePrice", "secureSpotPrice",
                  "communitySpotPrice"):
        assert field in gpu
    assert "No GPU found" in seen["gpu_missing"]


def test_get_pods_and_get_pod_read_the_pod(seen: dict[str, Any], pod: str) -> None:
    listed = {p["id"]: p for p in seen["pods"]}
    got = seen["pod"]
    assert listed[pod] == got
    assert got["name"] == "oracle-pod" and got["imageName"] == "runpod/base:0.1"
    assert got["gpuCount"] == 1 and got["machine"]["gpuDisplayName"]
    assert got["desiredStatus"] == "RUNNING" and got["podType"] == "RESERVED"
    assert got["volumeInGb"] == 20 and got["volumeMountPath"] == "/workspace"
    assert set(got["ports"].split(",")) == {"8888/http", "22/tcp"}
    assert {"dockerId", "port", "dockerArgs", "env", "costPerHr", "containerDiskInGb",
            "lastStatusChange", "machineId", "memoryInGb", "uptimeSeconds",
            "vcpuCount"} <= set(got)
    tcp = [p for p in got["runtime"]["ports"] if p["type"] == "tcp"]
    assert tcp and tcp[0]["privatePort"] == 22 and tcp[0]["isIpPublic"] is True
    assert seen["pod_missing"] is None


if __name__ == "__main__":  # pragma: no cover
    sys.exit(pytest.main([__file__, "-q"]))
