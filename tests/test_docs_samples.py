"""Every code sample in README.md and in the docs pages (``docs/*.md``; the API reference in
``docs/api/`` has none) runs.

* A ```` ```python ```` block runs in a fresh interpreter with isolated config and data dirs
  and no provider key or sandbox in its environment, so no real key or sandbox leaks in.
* The ```` ```ipython ```` blocks of a page (``%atlas`` magics and the Python around them)
  run in order, one cell each, in one real ipykernel driven by nbclient, as a notebook of
  that page would run: ``atlas_nb.demo.execute_notebook`` with ``kernel_env``, against
  a sandbox started here (the page's ``%atlas sandbox on`` attaches to it). Every cell must
  succeed, and once the kernel has shut down the page must have left no compute running.

A block right after the HTML comment ``<!-- not-run: reason -->`` is skipped, with the
reason; keep that for samples that need a real cloud key.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
_BLOCK = re.compile(
    r"(<!-- not-run: (?P<why>[^>]*) -->\s*\n)?^```(?P<lang>python|ipython)\n(?P<code>.*?)^```",
    re.S | re.M,
)


@dataclass(frozen=True)
class Sample:
    """One fenced code block of a page."""

    page: str  # relative to the repo root
    line: int  # where its code starts, from 1
    lang: str
    code: str
    why: str | None  # the not-run reason, if any

    @property
    def id(self) -> str:
        return f"{self.page}:{self.line}"


def _samples() -> list[Sample]:
    found = []
    for path in PAGES:
        text = path.read_text(encoding="utf-8")
        for m in _BLOCK.finditer(text):
            line = text.count("\n", 0, m.start("code")) + 1
            found.append(Sample(str(path.relative_to(ROOT)), line, m["lang"], m["code"], m["why"]))
    return found


SAMPLES = _samples()
PYTHON = [s for s in SAMPLES if s.lang == "python"]
IPYTHON = [s for s in SAMPLES if s.lang == "ipython"]
MAGIC_PAGES = sorted({s.page for s in IPYTHON if not s.why})


def test_the_docs_have_samples() -> None:
    # The README held 23 Python and 7 IPython samples before the docs split; none was lost.
    assert len(PYTHON) >= 23 and len(IPYTHON) >= 7
    assert any(s.page == "README.md" and not s.why for s in PYTHON), "the quick start runs"
    assert any(s.page == "README.md" and not s.why for s in IPYTHON), "so does its notebook part"


# -- python blocks --------------------------------------------------------------------------
@pytest.mark.parametrize("sample", PYTHON, ids=[s.id for s in PYTHON])
def test_sample_runs(sample: Sample, tmp_path: Path) -> None:
    if sample.why:
        pytest.skip(f"{sample.id}: {sample.why}")
    secret = ("_API_KEY", "_API_TOKEN", "_ACCESS_TOKEN")
    env = {k: v for k, v in os.environ.items()
           if not k.endswith(secret) and k != "ATLAS_NB_SANDBOX"}
    env.update(ATLAS_NB_CONFIG=str(tmp_path / "config.yaml"),
               ATLAS_NB_DATA_DIR=str(tmp_path / "data"), HOME=str(tmp_path), PYTHONPATH=str(ROOT))
    proc = subprocess.run([sys.executable, "-c", sample.code], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, f"sample at {sample.id} failed:\n{proc.stderr[-3000:]}"


# -- ipython blocks, through a real kernel ----------------------------------------------------
@dataclass
class PageRun:
    """A page's IPython samples, executed as one notebook, and what they left behind."""

    reports: dict[int, Any]  # sample line -> the CellReport of its cell
    left: list[str] = field(default_factory=list)
    violations: list[str] = field(default_factory=list)


def _run_page(page: str, sb: Any, home: Path) -> PageRun:
    import nbformat

    from atlas_nb import sandbox
    from atlas_nb.demo import execute_notebook, kernel_env, live_computes

    samples = [s for s in IPYTHON if s.page == page and not s.why]
    nb = nbformat.v4.new_notebook()  # type: ignore[no-untyped-call]
    new_cell = nbformat.v4.new_code_cell
    nb.cells = [new_cell(s.code.rstrip("\n")) for s in samples]  # type: ignore[no-untyped-call]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3",
                                 "language": "python"}
    path = home / (Path(page).stem + ".ipynb")
    nbformat.write(nb, path)  # type: ignore[no-untyped-call]
    before = len(sb.violations)
    _, reports = execute_notebook(path, env=kernel_env(sb.url, home), timeout_s=120)
    run = PageRun({s.line: r for s, r in zip(samples, reports, strict=True)})
    sandbox.attach(sb.url)  # process-wide, but nothing else runs until it is detached
    try:
        run.left = [f"{c.provider}:{c.id}" for c in live_computes()]
    finally:
        sandbox.detach(sb.url)
    run.violations = list(sb.violations[before:])
    return run


@pytest.fixture(scope="module")
def magic_runs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """Runs each page's notebook the first time a test asks for it (tests may run in any
    order), all on one sandbox."""
    from atlas_nb import sandbox

    runs: dict[str, PageRun] = {}
    with sandbox.start(attach=False) as sb:
        def get(page: str) -> PageRun:
            if page not in runs:
                runs[page] = _run_page(page, sb, tmp_path_factory.mktemp("kernel"))
            return runs[page]

        yield get


@pytest.mark.parametrize("sample", IPYTHON, ids=[s.id for s in IPYTHON])
def test_magic_sample_runs_in_a_kernel(sample: Sample, magic_runs: Any) -> None:
    if sample.why:
        pytest.skip(f"{sample.id}: {sample.why}")
    report = magic_runs(sample.page).reports[sample.line]
    assert not report.failed, f"sample at {sample.id} failed in the kernel: {report.error}"


@pytest.mark.parametrize("page", MAGIC_PAGES)
def test_magic_samples_leave_nothing_running(page: str, magic_runs: Any) -> None:
    run = magic_runs(page)
    assert run.left == [], "the kernel's shutdown ends what the page's samples spawned"
    assert run.violations == [], "every request and response matched the provider specs"
