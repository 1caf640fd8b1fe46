"""Chaos: 50 seeded cycles of processes spawning tracked pods on the sandbox while terminates
fail, creates and listings get 5xx or lose their answers, and processes are SIGKILLed or
SIGTERMed at random points. At the end: 0 leaked pods, and the bystander pods (names
without the prefix, or with it but not made by an orchestrator) were never touched.

Each cycle is one child process (five run at a time, ~1 s each). The children share this
test's ledger and config (the autouse fixture's env) and reap each other's leftovers; the
test process reaps every few cycles under the same faults, then once more without them.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from typing import Any

import pytest

import atlas_nb as atlas
from atlas_nb import config
from atlas_nb.orchestrator import Orchestrator
from atlas_nb.orchestrator.naming import owned_pattern

pytestmark = pytest.mark.slow

SEED = 20261127
CYCLES = 50
PARALLEL = 5
MODES = ("exit", "stop", "idle", "kill", "kill", "sigterm")

CHILD = textwrap.dedent("""
    import random, sys, time
    from atlas_nb._http import RetryPolicy
    from atlas_nb.errors import AtlasError
    from atlas_nb.orchestrator import Orchestrator
    from atlas_nb.providers.runpod import RunPod
    mode, seed = sys.argv[1], int(sys.argv[2])
    # Quick HTTP retries keep a cycle short; the orchestrator's own policy comes from config.
    fast = RunPod(retry=RetryPolicy(attempts=3, backoff_base=0.02, backoff_max=0.1))
    orch = Orchestrator(providers={"runpod": fast})
    rng = random.Random(seed)
    ids = []
    for i in range(rng.randint(1, 3)):
        try:
            c = orch.spawn(provider="runpod", gpu="rtx_4090", image="img:1", name=f"c{seed}",
                           idle_ttl_ms=40 if mode == "idle" else 0)
            ids.append(c.id)
            print("spawned", c.id, flush=True)
        except AtlasError as exc:
            print("spawn failed:", exc, flush=True)
    if mode == "stop" and ids:
        try:
            orch.stop_tracked(ids[0])
        except AtlasError as exc:
            print("stop failed:", exc, flush=True)
    if mode == "idle":
        deadline = time.monotonic() + 5
        while orch.tracked() and time.monotonic() < deadline:
            time.sleep(0.02)
    if mode in ("kill", "sigterm"):
        time.sleep(30)  # the test kills us first
""")


def owned_live(sb: Any) -> list[dict[str, Any]]:
    match = owned_pattern("atlas-").match
    return [p for p in sb.runpod.live_pods() if match(p.get("name") or "")]


@pytest.fixture(scope="module")
def sb() -> Iterator[Any]:
    with atlas.sandbox.start(clouds=["runpod"], validate=False, seed=SEED,
                             provision_delay_s=0.0, start_delay_s=0.0) as sandbox:
        yield sandbox


def run_cycle(rng: random.Random, cycle: int, env: dict[str, str]) -> tuple[subprocess.Popen[
        bytes], str, float]:
    mode = rng.choice(MODES)
    proc = subprocess.Popen([sys.executable, "-c", CHILD, mode, str(cycle)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    return proc, mode, time.monotonic() + rng.uniform(0.05, 1.4)


def finish(proc: subprocess.Popen[bytes], mode: str, kill_at: float) -> int:
    if mode in ("kill", "sigterm"):
        time.sleep(max(0.0, kill_at - time.monotonic()))
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL if mode == "kill" else signal.SIGTERM)
    try:
        proc.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        raise
    return proc.returncode


def test_chaos_ends_with_zero_leaks_and_bystanders_untouched(sb: Any) -> None:
    config.config_path().write_text(
        "orchestrator:\n  heartbeat_interval_s: 0.02\n  terminate_attempts: 3\n"
        "  terminate_backoff_s: 0.02\n  reap_interval_s: 3600\n"
    )
    bystanders = [atlas.spawn_compute(provider="runpod", gpu="rtx_4090", image="img:1",
                                      name=name).id
                  for name in ("prod-db", "user-keep-1", "atlas-demo", "atlas-0b0b0b0b-x")]
    bystanders.append(atlas.spawn_compute(provider="runpod", image="img:1").id)  # atlas-<hex>
    before = {pid: list(sb.runpod.store.get(pid).events) for pid in bystanders}
    faults = [
        sb.faults("runpod/rest:DELETE /v2/pods/*", error_rate={500: 0.3, 503: 0.1}),
        sb.faults("runpod/rest:POST /v2/pods", error_rate={502: 0.1}, lost_response_rate=0.1),
        sb.faults("runpod/rest:GET /v2/pods", error_rate={500: 0.15}),
    ]
    env = {**os.environ, "ATLAS_NB_SANDBOX": sb.url}
    reaper = Orchestrator(background=False, kernel_hooks=False, terminate_backoff_s=0.01)
    rng = random.Random(SEED)
    modes: dict[str, int] = {}
    codes: dict[int, int] = {}
    started = time.monotonic()
    for first in range(0, CYCLES, PARALLEL):
        batch = [run_cycle(rng, c, env) for c in range(first, min(first + PARALLEL, CYCLES))]
        for proc, mode, kill_at in batch:
            code = finish(proc, mode, kill_at)
            codes[code] = codes.get(code, 0) + 1
            modes[mode] = modes.get(mode, 0) + 1
        if first % (3 * PARALLEL) == 0:
            reaper.reap_now()  # under the same faults, while other sessions come and go
    chaos_s = time.monotonic() - started
    injected = sum(sum(rule.injected.values()) for rule in faults)
    for rule in faults:
        rule.clear()
    for _ in range(5):
        report = reaper.reap_now()
        assert all("unknown to the ledger" not in a.reason for a in report), report.lines()
        if not owned_live(sb):
            break
    leaked = owned_live(sb)
    assert leaked == [], f"leaked {len(leaked)} pods: {[p['name'] for p in leaked]}"
    for pid in bystanders:  # still there, never stopped, no new event of any kind
        pod = sb.runpod.store.get(pid)
        assert (pod.phase, pod.last_change) == ("BOOT", "Rented by User"), pid
        assert pod.events == before[pid], pid
    # The ledger agrees: everything created is closed; what stays open never got an id.
    entries = reaper.ledger.entries()
    assert entries and all(e.state == "terminated" or e.compute_id is None for e in entries)
    reaped = [e for e in entries if (e.reason or "").startswith("reaped: owner dead")]
    # The run really was chaotic: every mode ran, faults fired, kills left work for reapers.
    assert set(modes) == set(MODES), modes
    assert injected > 20 and reaped, (injected, len(reaped))
    assert -signal.SIGKILL in codes and 0 in codes, codes
    print(f"chaos: {CYCLES} cycles in {chaos_s:.1f}s, modes {modes}, exit codes {codes}, "
          f"{injected} faults injected, {len(entries)} ledger entries, {len(reaped)} reaped "
          "from dead owners")
