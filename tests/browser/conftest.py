"""Browser end-to-end tests: JupyterLab in Debian's Chromium, driven by Playwright.

Package fixtures, shared by every scenario (starting them takes ~10 s) and ended right
after the last one, so nothing of theirs reaches the tests collected afterwards
(Playwright's sync API keeps an asyncio loop marked running in this thread while it
is started, which breaks any later ``asyncio.run``):

* ``box``: one sandbox (every emulated cloud) on loopback in this process (attached
  during each browser test only).
* ``lab``: ``jupyter lab`` on a free loopback port with a random token, serving a
  temporary copy of ``notebooks/`` and ``tests/browser/notebooks/``. Its kernels get
  ``ATLAS_NB_SANDBOX=<box.url>`` and private Jupyter, IPython and atlas_nb dirs, so
  nothing is read from or written to the user's own. Stopped with ``POST
  /api/shutdown`` (kernels get a real shutdown request; the process group is
  terminated if the server does not exit); a kernel still alive afterwards fails the
  run. If this process dies without its teardown, the server gets SIGTERM (``setpriv
  --pdeathsig``) and still shuts its kernels down.
* ``browser``: Chromium at ``/usr/bin/chromium`` (never a Playwright download) with a
  fresh user-data dir.

Per test, ``open_notebook(path)`` opens a notebook in a new page; afterwards the page
is closed, its kernel shut down, and any pod still live in the sandbox terminated, so
every scenario starts from an empty sandbox. A failed test leaves
``build/screenshots/FAILED-<test>.png``.

The tests carry ``@pytest.mark.browser`` and skip (with the reason) when Chromium or
Playwright is missing, unless ``ATLAS_NB_BROWSER_TESTS=required`` (set by ``.ci/run``),
which turns the skip into a failure so CI can never pass without running them.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from atlas_nb import sandbox as sandbox_link
from atlas_nb.providers import facts, names

CHROMIUM = Path(os.environ.get("ATLAS_NB_CHROMIUM", "/usr/bin/chromium"))  # Debian's
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]
VIEWPORT = {"width": 1440, "height": 960}
REPO = Path(__file__).resolve().parents[2]
SCENARIOS = Path(__file__).resolve().parent / "notebooks"

# JupyterLab settings for a quiet, deterministic UI: no news or update pop-ups, no
# extension manager calling PyPI, and every cell kept in the DOM (JupyterLab 4 otherwise
# renders only the cells in view, and the tests inspect all of them).
LAB_SETTINGS = {
    "@jupyterlab/apputils-extension/notification.jupyterlab-settings":
        '{"fetchNews": "false", "checkForUpdates": false}',
    "@jupyterlab/extensionmanager-extension/plugin.jupyterlab-settings": '{"enabled": false}',
    "@jupyterlab/notebook-extension/tracker.jupyterlab-settings": '{"windowingMode": "none"}',
}


def pytest_configure(config: pytest.Config) -> None:
    # Until pyproject's [tool.pytest.ini_options] markers lists it (--strict-markers).
    config.addinivalue_line(
        "markers", "browser: end-to-end in JupyterLab + Chromium; skipped without "
                   "/usr/bin/chromium or playwright (required in CI)")


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]
                              ) -> Iterator[pytest.TestReport]:
    report: pytest.TestReport = yield
    if report.when == "call":
        item.stash[_CALL_REPORT] = report
    return report


_CALL_REPORT = pytest.StashKey[pytest.TestReport]()


def _missing() -> str | None:
    """Why the browser tests cannot run here, or ``None``."""
    if not CHROMIUM.exists():
        return f"{CHROMIUM} not found (Debian: apt-get install chromium)"
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "playwright is not installed (pip install playwright; never `playwright install`)"
    try:
        import jupyterlab  # noqa: F401
    except ImportError:
        return "jupyterlab is not installed"
    return None


@pytest.fixture(scope="package")
def _browser_available() -> None:
    reason = _missing()
    if reason is None:
        return
    if os.environ.get("ATLAS_NB_BROWSER_TESTS") == "required":
        pytest.fail(f"browser tests are required here but cannot run: {reason}")
    pytest.skip(reason)


# -- the sandbox ---------------------------------------------------------------------------
@pytest.fixture(scope="package")
def box(_browser_available: None) -> Iterator[Any]:
    """The sandbox every kernel of the ``lab`` talks to.

    Not attached for its whole life: ``_attached_to_box`` points this process at it
    during each browser test only.
    """
    with sandbox_link.start(provision_delay_s=0.0, start_delay_s=0.0, validate=False,
                            attach=False) as sb:
        yield sb


@pytest.fixture(autouse=True)
def _attached_to_box(box: Any) -> Iterator[None]:
    """This process's providers use ``box`` during each browser test (and only then)."""
    sandbox_link.attach(box.url)
    yield
    sandbox_link.detach(box.url)


# -- JupyterLab ------------------------------------------------------------------------------
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Lab:
    """A running ``jupyter lab``: its URL, token, REST API and served directory."""

    def __init__(self, url: str, token: str, root: Path, home: Path, log: Path) -> None:
        self.url = url
        self.token = token
        self.root = root
        self.runtime = home / "jupyter-runtime"
        self.data_dir = home / "atlas-data"  # the kernels' ATLAS_NB_DATA_DIR (the ledger)
        self.log = log
        self.http = httpx.Client(base_url=url, headers={"Authorization": f"token {token}"},
                                 timeout=30.0)

    def doc_url(self, path: str) -> str:
        """The single-document view of ``path`` (relative to the served root)."""
        return f"{self.url}/doc/tree/{path}?token={self.token}"

    def log_tail(self, lines: int = 40) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])

    def shutdown_sessions(self, path: str | None = None) -> None:
        """Shut down the kernels of ``path`` (default: every session); waits for each."""
        for session in self.http.get("/api/sessions").json():
            if path is None or session["path"] == path:
                self.http.delete(f"/api/sessions/{session['id']}")

    def kernel_pids(self) -> list[int]:
        """Processes still running a kernel of this server (their connection file lives
        in this server's private runtime dir)."""
        pids = []
        for proc in Path("/proc").iterdir():
            if not proc.name.isdigit():
                continue
            with contextlib.suppress(OSError):
                if str(self.runtime).encode() in (proc / "cmdline").read_bytes():
                    pids.append(int(proc.name))
        return pids


def _lab_env(home: Path, sandbox_url: str) -> dict[str, str]:
    """The server's (and so its kernels') environment: private dirs, the sandbox, no keys."""
    keys = {var for name in names() for var in facts(name).key_env}
    env = {k: v for k, v in os.environ.items()
           if k not in keys and not k.startswith(("ATLAS_NB_", "JUPYTER", "IPYTHON"))}
    dirs = {
        "HOME": home, "IPYTHONDIR": home / "ipython",
        "JUPYTER_CONFIG_DIR": home / "jupyter-config", "JUPYTER_DATA_DIR": home / "jupyter-data",
        "JUPYTER_RUNTIME_DIR": home / "jupyter-runtime",
        "JUPYTERLAB_SETTINGS_DIR": home / "lab-settings",
        "JUPYTERLAB_WORKSPACES_DIR": home / "lab-workspaces",
        "ATLAS_NB_DATA_DIR": home / "atlas-data", "ATLAS_NB_CONFIG": home / "atlas.yaml",
        "XDG_CONFIG_HOME": home / "xdg-config", "XDG_DATA_HOME": home / "xdg-data",
        "XDG_CACHE_HOME": home / "xdg-cache", "XDG_STATE_HOME": home / "xdg-state",
        "MPLCONFIGDIR": home / "matplotlib",
    }
    env.update({k: str(v) for k, v in dirs.items()})
    env.update(
        ATLAS_NB_SANDBOX=sandbox_url,
        JUPYTER_PLATFORM_DIRS="1",
        # The kernel spec says "python": make it this interpreter (the test venv).
        PATH=os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")]),
        PYTHONUNBUFFERED="1",
    )
    return env


def _served_tree(root: Path) -> None:
    """``root/notebooks`` (the demos, as shipped) and ``root/scenarios`` (ours)."""
    ignore = shutil.ignore_patterns(".ipynb_checkpoints", "__pycache__")
    if (REPO / "notebooks").is_dir():
        shutil.copytree(REPO / "notebooks", root / "notebooks", ignore=ignore)
    shutil.copytree(SCENARIOS, root / "scenarios", ignore=ignore)


def _wait_answering(lab: Lab, proc: subprocess.Popen[bytes], timeout_s: float = 90.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"jupyter lab exited with {proc.returncode}:\n{lab.log_tail()}")
        with contextlib.suppress(httpx.HTTPError):
            if lab.http.get("/api/status", timeout=2.0).status_code == 200:
                return
        time.sleep(0.2)
    raise RuntimeError(f"jupyter lab did not answer within {timeout_s:g} s:\n{lab.log_tail()}")


def _stop(lab: Lab, proc: subprocess.Popen[bytes]) -> list[int]:
    """Shut the server down cleanly; returns the kernels that survived it (killed)."""
    with contextlib.suppress(httpx.HTTPError):
        # Shuts every kernel down with a shutdown request (the kernel hooks run), then exits.
        lab.http.post("/api/shutdown", timeout=30.0)
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        for sig, wait in ((signal.SIGTERM, 10), (signal.SIGKILL, 5)):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, sig)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=wait)
                break
    lab.http.close()
    leftovers = lab.kernel_pids()
    for pid in leftovers:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    return leftovers


@pytest.fixture(scope="package")
def lab(box: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    """JupyterLab serving copies of the notebooks, its kernels attached to ``box``."""
    base = tmp_path_factory.mktemp("lab")
    root, home = base / "root", base / "home"
    _served_tree(root)
    settings = home / "lab-settings"
    for name, text in LAB_SETTINGS.items():
        (settings / name).parent.mkdir(parents=True, exist_ok=True)
        (settings / name).write_text(text)
    env = _lab_env(home, box.url)
    port, token = _free_port(), secrets.token_hex(24)
    log = base / "jupyter-lab.log"
    # If this test process dies without its teardown (SIGKILL, a CI timeout), Linux sends
    # the server SIGTERM (parent-death signal), on which it still shuts its kernels down.
    guard = ["setpriv", "--pdeathsig", "TERM", "--"] if shutil.which("setpriv") else []
    cmd = [
        *guard, sys.executable, "-m", "jupyterlab", "--no-browser", "--ip=127.0.0.1",
        f"--port={port}", "--port-retries=0", f"--IdentityProvider.token={token}",
        f"--ServerApp.root_dir={root}", "--ServerApp.terminals_enabled=False",
        "--LabApp.extension_manager=readonly", "--allow-root",
    ]
    with log.open("wb") as out:
        proc = subprocess.Popen(cmd, env=env, cwd=root, stdout=out, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True)
    instance = Lab(f"http://127.0.0.1:{port}", token, root, home, log)
    try:
        _wait_answering(instance, proc)
        yield instance
    finally:
        leftovers = _stop(instance, proc)
    assert not leftovers, f"kernels outlived jupyter lab (killed): {leftovers}"


# -- Chromium ----------------------------------------------------------------------------------
@pytest.fixture(scope="package")
def browser(_browser_available: None, tmp_path_factory: pytest.TempPathFactory
            ) -> Iterator[Any]:
    """A Chromium context with a fresh profile (Playwright's own browsers are never used)."""
    from playwright.sync_api import expect, sync_playwright

    expect.set_options(timeout=20_000)
    profile = tmp_path_factory.mktemp("chromium-profile")
    with sync_playwright() as pw:
        context = pw.chromium.launch_persistent_context(
            str(profile), executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS,
            viewport=VIEWPORT, device_scale_factor=2)
        context.set_default_timeout(30_000)
        try:
            yield context
        finally:
            context.close()


@pytest.fixture
def expect(_browser_available: None) -> Any:
    """Playwright's ``expect`` (a fixture, so that test modules never import playwright
    and skip cleanly where it is missing)."""
    from playwright.sync_api import expect

    return expect


@pytest.fixture
def screenshots(request: pytest.FixtureRequest) -> Path:
    """``build/screenshots/`` in the repo (created)."""
    path = Path(request.config.rootpath) / "build" / "screenshots"
    path.mkdir(parents=True, exist_ok=True)
    return path


def _end_live_pods(box: Any) -> None:
    import atlas_nb as atlas

    for pod in box.runpod.live_pods():
        with contextlib.suppress(Exception):
            atlas.terminate(pod["id"], provider="runpod")


@pytest.fixture
def open_notebook(lab: Lab, browser: Any, box: Any, screenshots: Path, expect: Any,
                  request: pytest.FixtureRequest) -> Iterator[Callable[[str], Any]]:
    """``open_notebook("scenarios/x.ipynb")`` -> a ``NotebookPage`` with a live kernel."""
    from .lab_driver import NotebookPage

    opened: list[NotebookPage] = []

    def open_(path: str) -> NotebookPage:
        page = browser.new_page()
        page.goto(lab.doc_url(path))
        notebook = NotebookPage(page, path, screenshots)
        notebook.wait_kernel_ready()
        # Every cell is in the DOM (no windowing), so checks over all cells see all cells.
        cells = json.loads((lab.root / path).read_text(encoding="utf-8"))["cells"]
        code = sum(cell["cell_type"] == "code" for cell in cells)
        expect(notebook.code_cells()).to_have_count(code)
        opened.append(notebook)
        return notebook

    _end_live_pods(box)
    yield open_
    report = request.node.stash.get(_CALL_REPORT, None)
    for notebook in opened:
        if report is not None and report.failed:
            with contextlib.suppress(Exception):
                notebook.screenshot(f"FAILED-{request.node.name}")
        notebook.page.close()
        lab.shutdown_sessions(notebook.path)
    _end_live_pods(box)
