"""The README is a landing page that leads to every docs page, its links and the docs'
links resolve, and the docs' tables match the code.

The README keeps what atlas_nb is, install, the two commands, a quick start, the feature,
guarantee and benchmark tables, and links; everything else is a page in ``docs/`` (the
mkdocs site). "Documented" means the README or a docs page linked from it. Its code
samples, and every docs page's, are run by ``tests/test_docs_samples.py``.

The capability table (``docs/providers.md``) and the GPU table (``docs/gpus.md``) are
regenerated from the code and compared; on drift, the expected table is printed so it can be
pasted in (``python tests/test_readme.py`` prints both).
"""

from __future__ import annotations

import re
import unicodedata
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
DOCS = ROOT / "docs"
GUIDE = sorted(p for p in DOCS.glob("*.md") if p.name != "index.md")  # not docs/api/*
MAX_README_LINES = 300
_LINK = re.compile(r"!?\[[^\]]*\]\((?P<target>[^)\s]+)(?:\s+\"[^\"]*\")?\)")
_FENCE = re.compile(r"^```.*?^```", re.S | re.M)


def _section(text: str, heading: str) -> str:
    start = text.index(f"\n## {heading}\n")
    end = text.find("\n## ", start + 1)
    return text[start:] if end == -1 else text[start:end]


def test_the_readme_is_a_landing_page() -> None:
    text = README.read_text(encoding="utf-8")
    assert len(text.splitlines()) <= MAX_README_LINES, (
        f"README.md has {len(text.splitlines())} lines; move detail into a docs/ page")
    headings = re.findall(r"^## (.+)$", text, re.M)
    assert headings == ["Install", "The two commands", "Quick start", "On real clouds", "Features",
                        "Guarantees", "Benchmarks", "Documentation"]


def test_the_two_commands_are_verbatim() -> None:
    two = _section(README.read_text(encoding="utf-8"), "The two commands")
    assert (
        "```bash\n"
        "make demo    # executes notebooks/01_quickstart.ipynb against the local sandbox; "
        "the executed copy goes to build/\n"
        "make test    # ruff + mypy --strict + the whole test suite (unit, sandbox, "
        "official clients, kernels, notebooks, browser)\n"
        "```\n"
    ) in two


def test_the_readme_links_every_docs_page() -> None:
    text = README.read_text(encoding="utf-8")
    linked = {m["target"].partition("#")[0] for m in _LINK.finditer(text)}
    missing = [f"docs/{p.name}" for p in GUIDE if f"docs/{p.name}" not in linked]
    assert missing == [], "every docs page is linked from the README's Documentation list"
    assert "docs/api/facade.md" in linked, "and so is the API reference"


def test_every_feature_row_links_its_docs_page() -> None:
    table = _section(README.read_text(encoding="utf-8"), "Features")
    rows = [r for r in table.splitlines() if r.startswith("| ") and not r.startswith("| feature")]
    assert len(rows) >= 10
    for row in rows:
        assert re.search(r"\]\(docs/[\w-]+\.md\) \|$", row), f"no docs link in: {row}"


def test_every_guarantee_names_the_tests_that_prove_it() -> None:
    """Each promise in the Guarantees table cites tests (or a benchmark) that exist, and the
    tests it cites define the test functions the row relies on."""
    table = _section(README.read_text(encoding="utf-8"), "Guarantees")
    rows = [r for r in table.splitlines() if r.startswith("| ") and not r.startswith("| promise")]
    assert len(rows) >= 12
    for row in rows:
        cited = re.findall(r"`((?:tests|bench)/[\w/]+\.py)(?:::(\w+))?`", row.rsplit(" | ", 1)[-1])
        assert cited, f"no test cited in: {row}"
        for path, func in cited:
            source = (ROOT / path).read_text(encoding="utf-8")
            assert path.startswith("bench/") or "def test" in source, path
            assert not func or f"def {func}(" in source, f"{path}::{func}"
    assert "**Not guaranteed:**" in table


def _slug(heading: str) -> str:
    """The anchor python-markdown's toc (and GitHub) gives a heading."""
    text = re.sub(r"[`*]|!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)
    text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()
    text = re.sub(r"[^\w\s-]", "", text).strip().lower()
    return re.sub(r"[-\s]+", "-", text)


def _anchors(path: Path) -> set[str]:
    text = _FENCE.sub("", path.read_text(encoding="utf-8"))
    return {_slug(h) for h in re.findall(r"^#{1,6} (.+)$", text, re.M)}


@pytest.mark.parametrize("page", [README, *GUIDE], ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_resolve(page: Path) -> None:
    """Links between the README and the docs pages (and to repo files) point at files that
    exist, and their ``#anchor`` at a heading there: on GitHub and, through the docs hook, on
    the site (where ``mkdocs build --strict`` checks the pages again)."""
    text = _FENCE.sub("", page.read_text(encoding="utf-8"))
    broken = []
    for m in _LINK.finditer(text):
        target = m["target"]
        if re.match(r"^[a-z][a-z0-9+.-]*:", target, re.I):
            continue
        path, _, anchor = target.partition("#")
        dest = (page.parent / path).resolve() if path else page
        if not dest.exists():
            broken.append(f"{target}: no such file")
        elif anchor and dest.suffix == ".md" and anchor not in _anchors(dest):
            broken.append(f"{target}: no heading with that anchor")
    assert broken == []


def capabilities_table() -> str:
    from atlas_nb import CAPABILITIES
    from atlas_nb.providers import names, provider_class

    caps = sorted(CAPABILITIES)
    lines = ["| provider | " + " | ".join(f"`{c}`" for c in caps) + " |",
             "|---|" + "---|" * len(caps)]
    for name in names():
        have = provider_class(name)().capabilities()
        lines.append(f"| `{name}` | " + " | ".join("✓" if c in have else "" for c in caps) + " |")
    return "\n".join(lines)


def gpus_table() -> str:
    """Canonical names against each provider's own GPU table (its ``wire.GPU_IDS``)."""
    from atlas_nb.facade import all_providers
    from atlas_nb.gpus import GPUS, gpu_ids

    clouds = all_providers()

    def ids(name: str, provider: str) -> str:
        table = gpu_ids(provider)
        # Where the provider writes the count into the id (Lambda), show it as N.
        shown = [pid if table.encode(pid, 7) == pid else table.encode(pid, 7).replace("7", "N", 1)
                 for pid in table.ids(name)]
        return ", ".join(f"`{v}`" for v in shown) or "—"

    lines = ["| canonical | GPU | " + " | ".join(f"`{c}`" for c in clouds) + " |",
             "|---|---|" + "---|" * len(clouds)]
    for name, s in GPUS.items():
        lines.append(f"| `{name}` | {s.display} | "
                     + " | ".join(ids(name, c) for c in clouds) + " |")
    return "\n".join(lines)


@pytest.mark.parametrize(("table", "page"), [(capabilities_table, "providers.md"),
                                             (gpus_table, "gpus.md")],
                         ids=lambda v: getattr(v, "__name__", v))
def test_tables_match_the_code(table: object, page: str) -> None:
    expected = table()  # type: ignore[operator]
    assert expected in (DOCS / page).read_text(encoding="utf-8"), (
        f"docs/{page} table out of date; replace it with:\n{expected}")


if __name__ == "__main__":
    print(capabilities_table(), gpus_table(), sep="\n\n")
