"""The docs site builds with ``mkdocs build --strict`` (every griffe or link warning is an
error): the API reference renders every documented module, every guide page in ``docs/`` is
in the nav, the README's repo-relative links survive the inclusion into the docs' home page,
and the guide pages' links out of ``docs/`` (``../README.md``, ``../notebooks/...``) work on
the site."""

from __future__ import annotations

import importlib.util
import re
import shutil
import subprocess
import sys
from pathlib import Path
from types import ModuleType, SimpleNamespace

import pytest

pytest.importorskip("mkdocs", reason="the docs build needs mkdocs (pip install mkdocs)")
pytest.importorskip("mkdocstrings_handlers.python",
                    reason="the docs build needs mkdocstrings[python]")

REPO = Path(__file__).resolve().parents[1]
PAGES = {  # docs/api/<page>.md -> the module it must render
    "facade": "atlas_nb.facade", "models": "atlas_nb.models", "errors": "atlas_nb.errors",
    "gpus": "atlas_nb.gpus", "config": "atlas_nb.config", "auth": "atlas_nb.auth",
    "pod_auth": "atlas_nb.pod_auth", "telemetry": "atlas_nb.telemetry",
    "providers": "atlas_nb.providers.base", "testing": "atlas_nb.testing",
    "sandbox": "atlas_nb.sandbox", "orchestrator": "atlas_nb.orchestrator",
    "fly": "atlas_nb.fly", "notebook": "atlas_nb.notebook",
}


def _build(config_file: Path, site: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "-f", str(config_file),
         "-d", str(site)],
        cwd=config_file.parent, capture_output=True, text=True, timeout=120,
    )


def _anchors(html: str) -> set[str]:
    return set(re.findall(r'id="(atlas_nb[\w.]*)"', html))


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The real docs, built once for this module."""
    out = tmp_path_factory.mktemp("docs") / "site"
    run = _build(REPO / "mkdocs.yml", out)
    assert run.returncode == 0, f"mkdocs build --strict failed:\n{run.stdout}\n{run.stderr}"
    return out


def test_api_reference_builds_strict_and_renders_every_module(site: Path) -> None:
    for page, module in PAGES.items():
        html = (site / "api" / page / "index.html").read_text(encoding="utf-8")
        anchors = _anchors(html)
        assert module in anchors, f"api/{page}: {module} was not rendered"
        assert any(a.startswith(module + ".") for a in anchors), (
            f"api/{page}: no member of {module} was rendered")
    facade = _anchors((site / "api/facade/index.html").read_text(encoding="utf-8"))
    assert {"atlas_nb.facade.spawn_compute", "atlas_nb.facade.terminate"} <= facade


def test_every_api_page_is_in_the_nav() -> None:
    nav = (REPO / "mkdocs.yml").read_text(encoding="utf-8")
    pages = {p.stem for p in (REPO / "docs/api").glob("*.md")}
    assert pages == set(PAGES)
    for page in pages:
        assert f"api/{page}.md" in nav, f"docs/api/{page}.md is not in mkdocs.yml's nav"


def test_every_guide_page_is_in_the_nav() -> None:
    nav = (REPO / "mkdocs.yml").read_text(encoding="utf-8")
    pages = sorted(p.name for p in (REPO / "docs").glob("*.md"))
    assert len(pages) > 10, "the README's detail lives in docs/*.md"
    missing = [p for p in pages if not re.search(rf":\s+{re.escape(p)}\s*$", nav, re.M)]
    assert missing == [], "every docs page is in mkdocs.yml's nav"


def test_the_site_carries_the_readme_and_links_out_of_docs(site: Path) -> None:
    home = (site / "index.html").read_text(encoding="utf-8")
    assert "<h2 id=\"the-two-commands\">" in home, "the home page is the README"
    assert 'href="computes/"' in home, "the README's docs/computes.md link, fixed for the site"
    setup = (site / "setup/index.html").read_text(encoding="utf-8")
    assert 'href="../#the-two-commands"' in setup, "../README.md#... is the home page"
    notebook = (site / "notebook/index.html").read_text(encoding="utf-8")
    assert "<code>notebooks/01_quickstart.ipynb</code>" in notebook
    assert 'src="../img/dashboard.png"' in notebook


def test_readme_with_repo_links_builds_strict(tmp_path: Path) -> None:
    """A README like the real one (badges, repo files, a docs image) keeps the build green."""
    site_src = tmp_path / "repo"
    shutil.copytree(REPO / "docs", site_src / "docs")
    shutil.copy(REPO / "mkdocs.yml", site_src / "mkdocs.yml")
    (site_src / "atlas_nb").symlink_to(REPO / "atlas_nb")
    (site_src / "docs/img").mkdir(exist_ok=True)
    (site_src / "docs/img/dashboard.png").write_bytes(b"\x89PNG\r\n\x1a\n")
    (site_src / "README.md").write_text(
        "# atlas_nb\n\n"
        "[![Binder](https://mybinder.org/badge_logo.svg)](https://mybinder.org/v2/gh/o/r/HEAD)\n\n"
        "Open [the quickstart](notebooks/01_quickstart.ipynb), read [LICENSE](LICENSE),\n"
        "see [Install](#install) and ![the dashboard](docs/img/dashboard.png).\n\n"
        "## Install\n\n```bash\npip install atlas_nb\n```\n",
        encoding="utf-8",
    )
    run = _build(site_src / "mkdocs.yml", tmp_path / "site")
    assert run.returncode == 0, f"mkdocs build --strict failed:\n{run.stdout}\n{run.stderr}"
    html = (tmp_path / "site/index.html").read_text(encoding="utf-8")
    assert 'src="img/dashboard.png"' in html
    assert "<code>notebooks/01_quickstart.ipynb</code>" in html
    assert 'href="#install"' in html
    assert 'href="https://mybinder.org/v2/gh/o/r/HEAD"' in html


def _hook() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "readme_links", REPO / "docs/_hooks/readme_links.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize(("repo_url", "markdown", "expected"), [
    (None, "[nb](notebooks/a.ipynb)", "nb (`notebooks/a.ipynb`)"),
    (None, "![shot](build/x.png)", "shot"),
    (None, '![shot](docs/img/x.png "Dashboard")', '![shot](img/x.png "Dashboard")'),
    (None, "[a](#anchor) [b](https://x.io/y) [c](mailto:a@b.c)",
     "[a](#anchor) [b](https://x.io/y) [c](mailto:a@b.c)"),
    ("https://github.com/o/r/", "[nb](./notebooks/a.ipynb)",
     "[nb](https://github.com/o/r/blob/HEAD/notebooks/a.ipynb)"),
    ("https://github.com/o/r", "![s](build/s.png)", "![s](https://github.com/o/r/raw/HEAD/build/s.png)"),
])
def test_readme_link_rewrites(repo_url: str | None, markdown: str, expected: str) -> None:
    assert _hook().rewrite_links(markdown, repo_url) == expected


@pytest.mark.parametrize(("repo_url", "page", "markdown", "expected"), [
    (None, "setup.md", "[home](../README.md#install)", "[home](index.md#install)"),
    (None, "setup.md", "[home](../README.md)", "[home](index.md)"),
    (None, "api/x.md", "[home](../../README.md#a)", "[home](../index.md#a)"),
    (None, "notebook.md", "[nb](../notebooks/a.ipynb)", "nb (`notebooks/a.ipynb`)"),
    (None, "notebook.md", "![shot](../build/x.png)", "shot"),
    ("https://github.com/o/r", "notebook.md", "[nb](../notebooks/a.ipynb)",
     "[nb](https://github.com/o/r/blob/HEAD/notebooks/a.ipynb)"),
    (None, "fly.md", "[a](auth.md#x) [b](img/x.png) [c](#y) [d](https://x.io/y)",
     "[a](auth.md#x) [b](img/x.png) [c](#y) [d](https://x.io/y)"),
    (None, "api/x.md", "[a](../fly.md)", "[a](../fly.md)"),
])
def test_page_link_rewrites(repo_url: str | None, page: str, markdown: str,
                            expected: str) -> None:
    assert _hook().rewrite_page_links(markdown, page, repo_url) == expected


def test_only_the_marked_page_gets_the_readme(tmp_path: Path) -> None:
    (tmp_path / "README.md").write_text("# Title\n\n[nb](notebooks/a.ipynb)\n")
    cfg = {"repo_url": None, "config_file_path": str(tmp_path / "mkdocs.yml")}
    page = SimpleNamespace(file=SimpleNamespace(src_uri="index.md"))
    hook = _hook()
    out = hook.on_page_markdown(f"{hook.MARKER}\n\nafter", page, cfg, None)
    assert out == "# Title\n\nnb (`notebooks/a.ipynb`)\n\n\nafter"
    other = "[nb](notebooks/a.ipynb)"
    assert hook.on_page_markdown(other, page, cfg, None) == other
