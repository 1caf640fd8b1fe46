"""``atlas-nb sandbox`` as a real process: prints its URL and keys, answers, exits on signals."""

from __future__ import annotations

import os
import queue
import re
import signal
import socket
import subprocess
import sys
import threading
from pathlib import Path

import httpx
import pytest

from atlas_nb.cli import build_parser, main


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _command() -> list[str]:
    script = Path(sys.executable).with_name("atlas-nb")
    return [str(script)] if script.exists() else [sys.executable, "-m", "atlas_nb.cli"]


def _lines(proc: subprocess.Popen[str]) -> queue.Queue[str]:
    lines: queue.Queue[str] = queue.Queue()

    def pump() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.put(line)

    threading.Thread(target=pump, daemon=True).start()
    return lines


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_cli_sandbox_serves_until_signalled(sig: signal.Signals) -> None:
    port = _free_port()
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    env.pop("ATLAS_NB_SANDBOX", None)
    proc = subprocess.Popen(
        [*_command(), "sandbox", "--port", str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
    )
    try:
        lines, seen = _lines(proc), []
        while not any("ATLAS_NB_SANDBOX=" in line for line in seen):
            seen.append(lines.get(timeout=30))
        text = "".join(seen)
        url = re.search(r"ATLAS_NB_SANDBOX=(\S+)", text).group(1)  # type: ignore[union-attr]
        assert url == f"http://127.0.0.1:{port}"
        assert f"listening on {url}" in text and "sandbox-runpod-key" in text
        r = httpx.get(
            f"{url}/runpod/rest/v2/pods", headers={"Authorization": "Bearer sandbox-runpod-key"}
        )
        assert r.json() == {"pods": []}
        proc.send_signal(sig)
        assert proc.wait(timeout=20) == 0
        rest = "".join(iter(lambda: lines.get(timeout=5), "sandbox stopped\n"))
        assert "Traceback" not in rest
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    with socket.socket() as s:  # the port is free again
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("127.0.0.1", port))


def test_cli_reports_a_port_in_use(capsys: pytest.CaptureFixture[str]) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        code = main(["sandbox", "--port", str(busy.getsockname()[1])])
    assert code == 1
    assert "cannot listen" in capsys.readouterr().err


def test_parser_has_the_sandbox_command_and_help(capsys: pytest.CaptureFixture[str]) -> None:
    parser = build_parser()
    args = parser.parse_args(["sandbox", "--port", "8765", "--host", "127.0.0.1", "--validate"])
    assert (args.command, args.port, args.host, args.validate) == (
        "sandbox",
        8765,
        "127.0.0.1",
        True,
    )
    with pytest.raises(SystemExit):
        main(["sandbox", "--help"])
    assert "ATLAS_NB_SANDBOX" in capsys.readouterr().out
    assert main([]) == 2  # no command: help, and a usage exit code


def test_python_dash_m_atlas_nb_sandbox_is_the_same_command() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "atlas_nb.sandbox", "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    assert "usage: atlas-nb sandbox" in out
