"""The Binder setup: pinned requirements whose widget packages match, a ``postBuild`` that
installs atlas_nb and loads the extension (run for real in a fresh venv), and a ``start``
that makes a live sandbox the default and execs the server command."""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import tomllib
import venv
from importlib import metadata
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.utils import canonicalize_name
from packaging.version import Version

from atlas_nb.cli.init import CONFIG_TEMPLATE, EXTENSION_LINE

REPO = Path(__file__).resolve().parents[1]
BINDER = REPO / "binder"
# ipywidgets major -> the jupyterlab_widgets / widgetsnbextension majors built for it.
WIDGET_LINES = {8: {"jupyterlab-widgets": 3, "widgetsnbextension": 4},
                7: {"jupyterlab-widgets": 1, "widgetsnbextension": 3}}


def _pins() -> dict[str, Version]:
    pins: dict[str, Version] = {}
    for raw in (BINDER / "requirements.txt").read_text(encoding="utf-8").splitlines():
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        m = re.fullmatch(r"([A-Za-z0-9_.\-]+)==([0-9][0-9A-Za-z.+\-]*)", line)
        assert m, f"binder/requirements.txt: {line!r} is not pinned as name==version"
        name = canonicalize_name(m.group(1))
        assert name not in pins, f"{name} is pinned twice"
        pins[name] = Version(m.group(2))
    return pins


def _project() -> dict[str, list[str]]:
    project = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    extras = project["optional-dependencies"]
    return {"core": project["dependencies"], "notebook": extras["notebook"],
            "sandbox": extras["sandbox"]}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# -- requirements.txt -------------------------------------------------------------------
def test_pins_cover_atlas_nb_and_its_notebook_and_sandbox_extras() -> None:
    pins = _pins()
    for group, reqs in _project().items():
        for text in reqs:
            req = Requirement(text)
            name = canonicalize_name(req.name)
            assert name in pins, f"{req.name} ({group}) is not pinned in binder/requirements.txt"
            assert req.specifier.contains(pins[name]), (
                f"binder pins {name}=={pins[name]}, outside atlas_nb's {req} ({group})")
    for needed in ("jupyterlab", "ipykernel", "jupyterlab-widgets"):
        assert needed in pins, f"binder/requirements.txt must pin {needed}"


def test_widget_packages_match_ipywidgets() -> None:
    pins = _pins()
    ipywidgets = pins["ipywidgets"]
    lines = WIDGET_LINES.get(ipywidgets.major)
    assert lines, f"ipywidgets {ipywidgets}: no known jupyterlab_widgets line"
    for name, major in lines.items():
        assert name in pins, f"pin {name} next to ipywidgets (pip would pick any version)"
        assert pins[name].major == major, (
            f"ipywidgets {ipywidgets} needs {name} {major}.x, binder pins {pins[name]}")
    # The same minor release line for every 8.x pin: ipywidgets 8.1.N requires ~=3.0.M.
    if ipywidgets.major == 8:
        assert pins["jupyterlab-widgets"].minor == 0
        assert pins["widgetsnbextension"].minor == 0


def test_widget_pins_satisfy_the_pinned_ipywidgets_own_requirements() -> None:
    pins = _pins()
    installed = Version(metadata.version("ipywidgets"))
    if installed != pins["ipywidgets"]:
        pytest.skip(f"ipywidgets {installed} is installed, binder pins {pins['ipywidgets']}: "
                    "its metadata is not at hand to compare")
    wanted = {canonicalize_name(Requirement(r).name): Requirement(r).specifier
              for r in metadata.requires("ipywidgets") or [] if "extra ==" not in r}
    for name in ("jupyterlab-widgets", "widgetsnbextension"):
        spec: SpecifierSet = wanted[name]
        assert spec.contains(pins[name]), (
            f"ipywidgets {installed} requires {name}{spec}; binder pins {pins[name]}")


def test_binder_python_is_one_atlas_nb_supports() -> None:
    runtime = (BINDER / "runtime.txt").read_text(encoding="utf-8").strip()
    m = re.fullmatch(r"python-(\d+\.\d+)", runtime)
    assert m, f"binder/runtime.txt: {runtime!r}"
    project = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    assert SpecifierSet(project["requires-python"]).contains(Version(m.group(1)))


# -- postBuild --------------------------------------------------------------------------
@pytest.mark.parametrize("script", ["postBuild", "start"])
def test_scripts_are_executable_bash_with_errexit(script: str) -> None:
    path = BINDER / script
    assert os.access(path, os.X_OK), f"binder/{script} must be executable (chmod +x)"
    lines = path.read_text(encoding="utf-8").splitlines()
    assert lines[0] == "#!/usr/bin/env bash"
    assert "set -euo pipefail" in lines


def test_postbuild_stops_at_the_first_failure(tmp_path: Path) -> None:
    """``set -e``: when the install fails, ``atlas-nb init`` never runs."""
    (tmp_path / "binder").mkdir()
    shutil.copy(BINDER / "postBuild", tmp_path / "binder" / "postBuild")  # no project there
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
           "IPYTHONDIR": str(tmp_path / "ipython"), "PIP_NO_INDEX": "1"}
    run = subprocess.run(["bash", str(tmp_path / "binder" / "postBuild")], env=env,
                         capture_output=True, text=True, timeout=120)
    assert run.returncode != 0
    assert not Path(os.environ["ATLAS_NB_CONFIG"]).exists()
    assert not (tmp_path / "ipython").exists()


@pytest.mark.slow
def test_postbuild_in_a_fresh_venv(tmp_path: Path) -> None:
    """A venv without site packages gets only atlas_nb's core pins (what ``atlas-nb``
    imports), then runs ``postBuild`` as Binder would, from another directory."""
    env_dir = tmp_path / "venv"
    venv.create(env_dir, with_pip=True, system_site_packages=False)
    bin_dir = env_dir / "bin"
    pins = _pins()
    core = [f"{Requirement(r).name}=={pins[canonicalize_name(Requirement(r).name)]}"
            for r in _project()["core"]]
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
           "VIRTUAL_ENV": str(env_dir), "IPYTHONDIR": str(tmp_path / "ipython"),
           "PIP_DISABLE_PIP_VERSION_CHECK": "1"}
    env.pop("PYTHONPATH", None)
    deps = subprocess.run([str(bin_dir / "python"), "-m", "pip", "install", "-q", *core],
                          env=env, capture_output=True, text=True, timeout=600)
    assert deps.returncode == 0, deps.stderr

    run = subprocess.run(["bash", str(BINDER / "postBuild")], cwd=tmp_path, env=env,
                         capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stdout + run.stderr
    assert (bin_dir / "atlas-nb").exists()
    where = subprocess.run([str(bin_dir / "python"), "-c",
                            "import atlas_nb; print(atlas_nb.__file__)"],
                           env=env, capture_output=True, text=True, timeout=60)
    assert Path(where.stdout.strip()).parent == REPO / "atlas_nb", "not the editable checkout"
    assert Path(os.environ["ATLAS_NB_CONFIG"]).read_text(encoding="utf-8") == CONFIG_TEMPLATE
    profile = tmp_path / "ipython" / "profile_default"
    for name in ("ipython_config.py", "ipython_kernel_config.py"):
        assert EXTENSION_LINE in (profile / name).read_text(encoding="utf-8"), name
    assert "registered the atlas_nb extension" in run.stdout


# -- start ------------------------------------------------------------------------------
def test_start_runs_a_sandbox_and_execs_the_command(tmp_path: Path) -> None:
    port = _free_port()
    probe = (
        "import os, atlas_nb as atlas\n"
        "print('pid', os.getpid())\n"
        "print('sandbox', os.environ['ATLAS_NB_SANDBOX'])\n"
        "c = atlas.spawn_compute(provider='runpod', gpu='rtx_4090', image='i:1', name='binder')\n"
        "print('listed', [x.id for x in atlas.list_compute(provider='runpod')] == [c.id])\n"
        "atlas.terminate(c.id, provider='runpod')\n"
    )
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
           "ATLAS_NB_SANDBOX_PORT": str(port), "ATLAS_NB_SANDBOX_LOG": str(tmp_path / "sb.log")}
    env.pop("ATLAS_NB_SANDBOX", None)
    # Its own session, so the sandbox it leaves behind is ours to stop by process group.
    proc = subprocess.Popen([str(BINDER / "start"), sys.executable, "-c", probe], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, out + err
        lines = dict(line.split(" ", 1) for line in out.splitlines())
        assert lines["pid"] == str(proc.pid), "start must exec the command, not run it"
        assert lines["sandbox"] == f"http://127.0.0.1:{port}"
        assert lines["listed"] == "True", out
        assert "listening on" in (tmp_path / "sb.log").read_text(encoding="utf-8")
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:  # the sandbox exits on SIGTERM: its port frees up
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) != 0:
                break
        time.sleep(0.1)
    else:
        pytest.fail(f"the sandbox on port {port} still runs after SIGTERM")
