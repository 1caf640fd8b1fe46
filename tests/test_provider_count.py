"""Adding a provider in-tree takes three places: its package, its sandbox package and one
registry line. Nothing else (CONTRIBUTING.md's checklist).

A copy of the ``atlas_nb`` package gets the example provider
(``tests/fixtures/example_provider``) as ``providers/example/`` and its cloud as
``sandbox/example/``, plus one line in ``providers/__init__.py``'s ``REGISTRY``. The diff
against the original copy is asserted to be exactly that, and a fresh interpreter with the
copy first on ``sys.path`` then runs the same checks as the plugin test: the registry,
``doctor``, the all-provider catalog, the spawn panel, the magics in a real kernel and the
shipped conformance suite.
"""

from __future__ import annotations

import filecmp
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import atlas_nb

EXAMPLE = Path(__file__).parent / "fixtures" / "example_provider"
PACKAGE = Path(atlas_nb.__file__).parent
REGISTRY_LINE = '    "example": "atlas_nb.providers.example:ExampleCloud",\n'


def add_example_in_tree(package: Path) -> None:
    """The whole change a contributor makes: two packages and one registry line."""
    provider = (EXAMPLE / "example_cloud" / "__init__.py").read_text()
    provider = provider.replace(
        "SANDBOX_CLOUD: str | None = None  # this package ships its cloud by entry point instead",
        'SANDBOX_CLOUD: str | None = "atlas_nb.sandbox.example:ExampleCloudSandbox"')
    (package / "providers" / "example").mkdir()
    (package / "providers" / "example" / "__init__.py").write_text(provider)
    (package / "sandbox" / "example").mkdir()
    shutil.copy(EXAMPLE / "example_cloud" / "sandbox.py",
                package / "sandbox" / "example" / "__init__.py")
    registry = package / "providers" / "__init__.py"
    text = registry.read_text()
    anchor = '    "mock": "atlas_nb.providers.mock:MockProvider",\n'
    assert anchor in text, "REGISTRY's mock line moved; update this test's anchor"
    registry.write_text(text.replace(anchor, REGISTRY_LINE + anchor))


def changed_files(before: Path, after: Path) -> set[str]:
    """Relative paths that differ between two trees (added, removed or changed)."""
    out: set[str] = set()

    def walk(cmp: filecmp.dircmp[str], rel: str) -> None:
        for name in cmp.left_only + cmp.right_only + cmp.diff_files:
            path = Path(cmp.right if name in cmp.right_only else cmp.left) / name
            files = [p for p in path.rglob("*") if p.is_file()] if path.is_dir() else [path]
            root = Path(cmp.right if name in cmp.right_only else cmp.left)
            out.update(f"{rel}{p.relative_to(root)}" for p in files)
        for name, sub in cmp.subdirs.items():
            walk(sub, f"{rel}{name}/")

    walk(filecmp.dircmp(before, after, ignore=["__pycache__"]), "")
    return out


@pytest.mark.slow
def test_a_provider_in_tree_takes_three_places(tmp_path: Path) -> None:
    ignore = shutil.ignore_patterns("__pycache__")
    before = tmp_path / "before" / "atlas_nb"
    tree = tmp_path / "tree"
    shutil.copytree(PACKAGE, before, ignore=ignore)
    shutil.copytree(PACKAGE, tree / "atlas_nb", ignore=ignore)

    add_example_in_tree(tree / "atlas_nb")

    assert changed_files(before, tree / "atlas_nb") == {
        "providers/example/__init__.py", "sandbox/example/__init__.py", "providers/__init__.py"}
    registry_diff = set((tree / "atlas_nb/providers/__init__.py").read_text().splitlines()) ^ set(
        (before / "providers/__init__.py").read_text().splitlines())
    assert registry_diff == {REGISTRY_LINE.rstrip("\n")}

    checks = tmp_path / "plugin_checks.py"
    shutil.copy(EXAMPLE / "plugin_checks.py", checks)
    path = os.pathsep.join([str(tree), *filter(None, [os.environ.get("PYTHONPATH")])])
    env = {**os.environ, "EXAMPLE_PROVIDER_MODULE": "atlas_nb.providers.example",
           "PYTHONPATH": path}
    probe = subprocess.run([sys.executable, "-c", "import atlas_nb; print(atlas_nb.__file__)"],
                           env=env, capture_output=True, text=True, check=True, cwd=tmp_path)
    assert probe.stdout.strip() == str(tree / "atlas_nb" / "__init__.py"), "the copy must win"
    done = subprocess.run(
        [sys.executable, "-m", "pytest", str(checks), "-q", "-p", "no:cacheprovider",
         "--rootdir", str(tmp_path), "-c", os.devnull, "-W", "error",
         "-W", "ignore::DeprecationWarning", "--timeout", "240"],
        env=env, capture_output=True, text=True, timeout=280, cwd=tmp_path)
    assert done.returncode == 0, done.stdout[-6000:] + done.stderr[-3000:]
    assert " passed" in done.stdout and "failed" not in done.stdout
