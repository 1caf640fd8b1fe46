"""A sandbox running in another process (``python -m atlas_nb.sandbox``), for tests where a
process is killed, forked or left to run alone: nothing of the sandbox dies with it.

    with SandboxProcess() as sb:
        env = {**os.environ, "ATLAS_NB_SANDBOX": sb.url}
        sb.control.faults("runpod/rest:DELETE /v2/pods/*", error_rate={500: 1.0})
        sb.live_ids()                 # ids of the RunPod pods not terminated
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from typing import Any

import httpx

from atlas_nb.sandbox import sandbox_key
from atlas_nb.sandbox.control import Control

__all__ = ["SandboxProcess", "run_script"]


class SandboxProcess:
    """``atlas-nb sandbox`` on a free port, with delays 0; ``url``, ``control``."""

    def __init__(self) -> None:
        self.proc: subprocess.Popen[str] | None = None
        self.url = ""
        self.control: Control

    def __enter__(self) -> SandboxProcess:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "atlas_nb.sandbox", "--provision-delay", "0",
             "--start-delay", "0"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            env={k: v for k, v in os.environ.items() if k != "ATLAS_NB_SANDBOX"})
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        assert "listening on" in line, line + self.proc.stderr.read() if self.proc.stderr else ""
        self.url = line.rsplit(" ", 1)[1].strip()
        self.control = Control(self.url)
        return self

    def __exit__(self, *exc: object) -> None:
        self.control.close()
        if self.proc is not None:
            self.proc.terminate()
            self.proc.communicate(timeout=30)

    def pods(self) -> list[dict[str, Any]]:
        """Every RunPod pod the sandbox lists (the REST API, as a client sees it)."""
        r = httpx.get(f"{self.url}/runpod/rest/v2/pods",
                      headers={"Authorization": f"Bearer {sandbox_key('runpod')}"}, timeout=10)
        r.raise_for_status()
        return list(r.json()["pods"])

    def live_ids(self) -> set[str]:
        """Ids of the pods that are not terminated."""
        return {p["id"] for p in self.pods() if p.get("status") != "TERMINATED"}

    def wait_gone(self, ids: set[str], timeout_s: float = 30.0) -> None:
        """Wait until none of ``ids`` is live (AssertionError after ``timeout_s``)."""
        deadline = time.monotonic() + timeout_s
        while ids & self.live_ids():
            assert time.monotonic() < deadline, f"still live: {sorted(ids & self.live_ids())}"
            time.sleep(0.1)


def run_script(code: str, env: dict[str, str], *args: str, timeout: float = 120
               ) -> subprocess.CompletedProcess[str]:
    """Run ``python -c code args...``; the completed process (text output)."""
    return subprocess.run([sys.executable, "-c", code, *args], env=env, capture_output=True,
                          text=True, timeout=timeout)
