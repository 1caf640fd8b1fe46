"""Forks: orchestrator state belongs to the process that created it (issue 13, item 1).

A forked child (``os.fork`` or a ``multiprocessing`` worker, fork or spawn start method)
that uses the orchestrator must never terminate, reap or mark its parent's computes; its
own spawns are its own and end with it. Each scenario is a script run in a subprocess
against a sandbox in yet another process: the script's parent spawns two pods, a child
spawns one and ends (exit, SIGTERM), then the parent waits for the test to look.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest
from sandbox_process import SandboxProcess, run_script

from atlas_nb import config
from atlas_nb.orchestrator.ledger import FILENAME, Ledger

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def sbp() -> Iterator[SandboxProcess]:
    with SandboxProcess() as sandbox:
        yield sandbox


def env_for(sbp: SandboxProcess) -> dict[str, str]:
    return {**os.environ, "ATLAS_NB_SANDBOX": sbp.url, "PYTHONWARNINGS": "ignore"}


def states(ids: set[str]) -> dict[str, str]:
    return {e.compute_id: e.state for e in Ledger(config.data_dir() / FILENAME).entries()
            if e.compute_id in ids}


_FORK = textwrap.dedent("""
    import os, signal, sys, time
    import atlas_nb.orchestrator as orch
    mode = sys.argv[1]
    parent = [orch.spawn(provider="runpod", gpu="rtx_4090", image="img:1", name="p").id
              for _ in range(2)]
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: spawns its own pod, then ends by exit or SIGTERM
        os.close(r)
        mine = orch.spawn(provider="runpod", gpu="rtx_4090", image="img:1", name="c").id
        os.write(w, mine.encode())
        os.close(w)
        if mode == "sigterm":
            time.sleep(60)
        sys.exit(0)  # a normal exit: atexit runs in the child
    os.close(w)
    child = os.read(r, 100).decode()
    if mode == "sigterm":
        os.kill(pid, signal.SIGTERM)
    _, status = os.waitpid(pid, 0)
    print(",".join(parent), child, status, flush=True)
    print(",".join(sorted(t.id for t in orch.tracked())), flush=True)
    sys.stdin.readline()  # the test looks at the sandbox, then lets us exit
""")


@pytest.mark.parametrize("mode", ["exit", "sigterm"])
def test_forked_child_never_ends_its_parents_computes(sbp: SandboxProcess, mode: str) -> None:
    proc = subprocess.Popen([sys.executable, "-c", _FORK, mode], env=env_for(sbp), text=True,
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdin is not None and proc.stdout is not None
    line = proc.stdout.readline().split()
    assert len(line) == 3, proc.communicate(timeout=60)
    parent, child = set(line[0].split(",")), line[1]
    tracked = set(proc.stdout.readline().strip().split(","))
    try:
        assert parent <= sbp.live_ids()  # the child's end spared the parent's pods
        assert states(parent) == dict.fromkeys(parent, "live")  # and their ledger rows
        assert tracked == parent  # the parent still tracks them
        sbp.wait_gone({child})  # the child's own pod ended with it
    finally:
        proc.communicate("\n", timeout=60)
    assert proc.returncode == 0
    sbp.wait_gone(parent)  # the parent's exit ends its own


_MP = textwrap.dedent("""
    import multiprocessing as mp
    import sys

    import atlas_nb.orchestrator as orch


    def work(q):
        q.put(orch.spawn(provider="runpod", gpu="rtx_4090", image="img:1", name="w").id)


    if __name__ == "__main__":
        parent = [orch.spawn(provider="runpod", gpu="rtx_4090", image="img:1", name="p").id
                  for _ in range(2)]
        ctx = mp.get_context(sys.argv[1])
        q = ctx.Queue()
        workers = [ctx.Process(target=work, args=(q,)) for _ in range(2)]
        for p in workers:
            p.start()
        children = [q.get(timeout=60) for _ in workers]
        for p in workers:
            p.join(60)
        print(",".join(parent), ",".join(children), [p.exitcode for p in workers], flush=True)
        print(",".join(sorted(t.id for t in orch.tracked())), flush=True)
        sys.stdin.readline()
""")


@pytest.mark.parametrize("method", ["fork", "spawn"])
def test_multiprocessing_workers_own_their_spawns(sbp: SandboxProcess, tmp_path: Path,
                                                   method: str) -> None:
    script = tmp_path / "mp_script.py"
    script.write_text(_MP)
    proc = subprocess.Popen([sys.executable, str(script), method], env=env_for(sbp), text=True,
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdin is not None and proc.stdout is not None
    line = proc.stdout.readline().split(" ", 2)
    assert len(line) == 3, proc.communicate(timeout=60)
    parent, children = set(line[0].split(",")), set(line[1].split(","))
    tracked = set(proc.stdout.readline().strip().split(","))
    try:
        assert line[2].strip() == "[0, 0]"
        assert parent <= sbp.live_ids()
        assert states(parent) == dict.fromkeys(parent, "live")
        assert tracked == parent
        sbp.wait_gone(children)  # each worker's pod ended with its worker
    finally:
        proc.communicate("\n", timeout=60)
    assert proc.returncode == 0
    sbp.wait_gone(parent)


_ORPHAN = textwrap.dedent("""
    import os, sys, time
    import atlas_nb.orchestrator as orch
    parent = orch.spawn(provider="runpod", gpu="rtx_4090", image="img:1", name="p").id
    r, w = os.pipe()
    if os.fork() == 0:
        os.close(r)
        mine = orch.spawn(provider="runpod", gpu="rtx_4090", image="img:1", name="c").id
        os.write(w, mine.encode())
        os.close(w)
        time.sleep(120)  # the test ends us
        sys.exit(0)
    os.close(w)
    print(parent, os.read(r, 100).decode(), flush=True)
    time.sleep(120)  # the test kills us with SIGKILL
""")


def test_recovery_after_the_parents_kill9_spares_the_live_child(sbp: SandboxProcess) -> None:
    env = env_for(sbp)
    proc = subprocess.Popen([sys.executable, "-c", _ORPHAN], env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            start_new_session=True)
    assert proc.stdout is not None
    parent, child = proc.stdout.readline().split()
    try:
        proc.kill()  # kill -9 the parent only: its child lives on
        proc.wait(30)
        reap = run_script("from atlas_nb.cli import main; raise SystemExit(main(['reap']))", env)
        assert reap.returncode == 0, reap.stdout + reap.stderr
        assert parent not in sbp.live_ids()  # the dead parent's pod was reaped
        assert child in sbp.live_ids()  # the live child's was not
    finally:
        os.killpg(proc.pid, signal.SIGTERM)  # the child's SIGTERM cleanup ends its pod
    sbp.wait_gone({child})


_HOLD_AND_FORK = """
import importlib, os, sys, threading, time
module = importlib.import_module(sys.argv[1])
lock = eval(sys.argv[2], vars(module))  # a module-level lock, or one reached from there
held, done = threading.Event(), threading.Event()
def hold():  # a background thread (a reaper's request, its telemetry) inside the lock
    with lock:
        held.set()
        done.wait()
threading.Thread(target=hold, daemon=True).start()
held.wait()
pid = os.fork()
if pid == 0:
    if sys.argv[3] == "exit":
        sys.exit(0)  # a normal exit: the inherited atexit handlers run in the child
    with lock:  # the child's own first use
        os._exit(0)
deadline = time.monotonic() + 20
while time.monotonic() < deadline:
    if os.waitpid(pid, os.WNOHANG)[0]:
        done.set()
        sys.exit(0)
    time.sleep(0.05)
os.kill(pid, 9)
done.set()
sys.exit(f"the forked child hung on {sys.argv[1]}.{sys.argv[2]}")
"""


@pytest.mark.parametrize("module, name, child", [
    ("atlas_nb.telemetry", "_lock", "use"), ("atlas_nb.config", "_lock", "use"),
    ("atlas_nb.providers", "_lock", "use"),
    ("atlas_nb.providers.base", "_ACCOUNT_IDS_LOCK", "use"),
    ("atlas_nb.orchestrator", "_lock", "use"), ("atlas_nb.fly.tokens", "_default_lock", "use"),
    ("atlas_nb._http", "_shared_lock", "use"),
    # A request in flight owns the pooled client's lock: the child's exit must not close
    # (and so wait on) the parent's pool.
    ("atlas_nb._http", "client_for(None)._transport._pool._optional_thread_lock", "exit"),
])
def test_a_lock_held_by_another_thread_at_fork_never_hangs_the_child(
        module: str, name: str, child: str) -> None:
    run = subprocess.run([sys.executable, "-c", _HOLD_AND_FORK, module, name, child],
                         capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
