"""Every ``atlas-nb`` command's exit code, as a real process (issue 13, item 12).

0: everything asked for was done. 1: an operational failure (a file that cannot be written
or used, a port in use, a provider that does not answer). 2: a usage error (an unknown
command or flag, a bad flag value). A failure or usage error is one line on stderr that
names what went wrong and how to fix it; stdout never carries the error.

Each process gets its own config file, data dir, IPython dir and home, and no keys or
sandbox from the environment, so nothing here touches the real machine's setup.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from atlas_nb.cli.exit_codes import FAILURE, OK, USAGE

_ROOT = Path(__file__).resolve().parent.parent
_KEYS = ("RUNPOD_API_KEY", "FLY_API_TOKEN", "FLY_ACCESS_TOKEN", "LAMBDA_LABS_API_KEY",
         "LAMBDA_API_KEY", "VAST_API_KEY", "ATLAS_NB_SANDBOX")


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    out = {k: v for k, v in os.environ.items() if k not in _KEYS and not k.startswith("ATLAS_NB_")}
    out.update(HOME=str(tmp_path / "home"), IPYTHONDIR=str(tmp_path / "ipython"),
               ATLAS_NB_CONFIG=str(tmp_path / "config" / "config.yaml"),
               ATLAS_NB_DATA_DIR=str(tmp_path / "data"), PYTHONPATH=str(_ROOT))
    return out


def _run(env: dict[str, str], *argv: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "atlas_nb.cli", *argv], env=env, cwd=_ROOT,
                          capture_output=True, text=True, timeout=timeout)


def _one_line(err: str) -> str:
    """The single stderr line (no traceback, no usage block)."""
    assert "Traceback" not in err, err
    assert err.endswith("\n") and err.count("\n") == 1, f"not one line:\n{err}"
    return err.strip()


def _usage(run: subprocess.CompletedProcess[str], prog: str) -> str:
    assert run.returncode == USAGE, (run.returncode, run.stdout, run.stderr)
    assert run.stdout == ""
    line = _one_line(run.stderr)
    assert line.startswith(f"{prog}: error: "), line
    assert f"`{prog} --help`" in line, "the fix: where the right usage is"
    return line


def _failure(run: subprocess.CompletedProcess[str], prog: str) -> str:
    assert run.returncode == FAILURE, (run.returncode, run.stdout, run.stderr)
    line = _one_line(run.stderr)
    assert line.startswith(f"{prog}: "), line
    assert line not in run.stdout
    return line


# -- atlas-nb itself ---------------------------------------------------------------------
def test_version_and_help_are_ok(env: dict[str, str]) -> None:
    for argv in (["--version"], ["--help"], ["init", "--help"]):
        run = _run(env, *argv)
        assert run.returncode == OK and run.stderr == "" and run.stdout, argv


@pytest.mark.parametrize("argv", [[], ["nosuch"], ["--bogus"]])
def test_no_or_an_unknown_command_is_a_usage_error(env: dict[str, str], argv: list[str]) -> None:
    line = _usage(_run(env, *argv), "atlas-nb")
    if argv == ["nosuch"]:
        assert "invalid choice: 'nosuch'" in line


# -- init --------------------------------------------------------------------------------
def test_init(env: dict[str, str], tmp_path: Path) -> None:
    ok = _run(env, "init")
    assert ok.returncode == OK and ok.stderr == "", ok.stderr
    assert "written with commented defaults" in ok.stdout

    line = _usage(_run(env, "init", "--bogus"), "atlas-nb init")
    assert "unrecognized arguments: --bogus" in line
    _usage(_run(env, "init", "extra"), "atlas-nb init")

    blocker = tmp_path / "a-file"
    blocker.write_text("")
    failed = _run({**env, "ATLAS_NB_DATA_DIR": str(blocker)}, "init")
    line = _failure(failed, "atlas-nb init")
    assert "not a directory" in line and "ATLAS_NB_DATA_DIR" in line  # what, and the fix
    assert "config" in failed.stdout  # the steps done before the failure are still shown


# -- upgrade -----------------------------------------------------------------------------
def test_upgrade(env: dict[str, str]) -> None:
    assert _run(env, "init").returncode == OK
    ok = _run(env, "upgrade")
    assert ok.returncode == OK and ok.stderr == "" and "up to date" in ok.stdout

    _usage(_run(env, "upgrade", "--dry-run", "--force"), "atlas-nb upgrade")

    Path(env["ATLAS_NB_CONFIG"]).write_text("schema_version: 999\n")
    line = _failure(_run(env, "upgrade"), "atlas-nb upgrade")
    assert "newer than this atlas_nb" in line and "upgrade atlas_nb" in line

    Path(env["ATLAS_NB_CONFIG"]).write_text("- a list\n")
    line = _failure(_run(env, "upgrade"), "atlas-nb upgrade")
    assert "mapping" in line and "atlas-nb upgrade` again" in line


# -- doctor ------------------------------------------------------------------------------
def test_doctor(env: dict[str, str]) -> None:
    ok = _run(env, "doctor")
    assert ok.returncode == OK and ok.stderr == "" and "checks:" in ok.stdout

    _usage(_run(env, "doctor", "--bogus"), "atlas-nb doctor")

    config = Path(env["ATLAS_NB_CONFIG"])
    config.parent.mkdir(parents=True)
    config.write_text("default_provider: [not, a, name\n")
    lenient = _run(env, "doctor")  # reports the problem, asked for no verdict
    assert lenient.returncode == OK and "[error] config" in lenient.stdout
    strict = _run(env, "doctor", "--strict")
    line = _failure(strict, "atlas-nb doctor")
    assert "[error] config" in strict.stdout  # the report stays on stdout
    assert "config" in line and "--strict" in line


# -- sandbox -----------------------------------------------------------------------------
@pytest.mark.parametrize(("flags", "says"), [
    (["--port", "99999"], "0-65535"),
    (["--port", "-1"], "0-65535"),
    (["--port", "http"], "0-65535"),
    (["--provision-delay", "-3"], "not negative"),
    (["--start-delay", "nan"], "not negative"),
])
def test_sandbox_bad_flags_are_usage_errors(env: dict[str, str], flags: list[str],
                                            says: str) -> None:
    assert says in _usage(_run(env, "sandbox", *flags, timeout=30), "atlas-nb sandbox")


@pytest.fixture
def busy_port() -> Iterator[int]:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        yield busy.getsockname()[1]


def test_sandbox_port_in_use_is_a_failure(env: dict[str, str], busy_port: int) -> None:
    line = _failure(_run(env, "sandbox", "--port", str(busy_port), timeout=60),
                    "atlas-nb sandbox")
    assert "cannot listen" in line and "--port 0" in line


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT, signal.SIGHUP],
                         ids=lambda s: signal.Signals(s).name)
def test_sandbox_stopped_by_a_signal_is_ok(env: dict[str, str], signum: int) -> None:
    proc = subprocess.Popen([sys.executable, "-m", "atlas_nb.cli", "sandbox"], env=env,
                            cwd=_ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            if line.startswith("Press Ctrl-C"):
                break
        proc.send_signal(signum)  # a closed terminal (SIGHUP) stops it like Ctrl-C
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == OK, err
    assert "sandbox stopped" in out and err == ""


def test_python_dash_m_atlas_nb_sandbox_shares_the_codes(env: dict[str, str]) -> None:
    run = subprocess.run([sys.executable, "-m", "atlas_nb.sandbox", "--port", "70000"], env=env,
                         cwd=_ROOT, capture_output=True, text=True, timeout=30)
    _usage(run, "atlas-nb sandbox")


# -- reap (its handler belongs to the reaper's owner; the codes are checked here too) ------
def test_reap(env: dict[str, str]) -> None:
    ok = _run(env, "reap")  # an empty ledger: nothing to do
    assert ok.returncode == OK and ok.stderr == ""

    _usage(_run(env, "reap", "--bogus"), "atlas-nb reap")

    # A provider that does not answer: a listing failed, which is operational.
    dead = _run({**env, "ATLAS_NB_SANDBOX": "http://127.0.0.1:9"}, "reap", "--provider", "runpod")
    assert dead.returncode == FAILURE, (dead.stdout, dead.stderr)
    assert "error: runpod: " in _one_line(dead.stderr) and "error:" not in dead.stdout


def test_reap_an_unknown_provider_is_a_usage_error(env: dict[str, str]) -> None:
    run = _run(env, "reap", "--provider", "nosuch")
    assert run.returncode == USAGE, (run.stdout, run.stderr)
    assert "nosuch" in _one_line(run.stderr)
