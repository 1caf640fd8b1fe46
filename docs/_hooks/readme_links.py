"""mkdocs hook: put the README into the docs' home page, and make links that leave ``docs/``
work on the site.

``docs/index.md`` holds the marker ``<!-- include: README.md -->``; this hook replaces it
with the repo's README. The README's links are relative to the repo root, so in the site
``docs/img/x.png`` becomes ``img/x.png``; a link to any other repo file (a notebook,
``LICENSE``) points at ``repo_url`` when mkdocs.yml sets one, and otherwise becomes the
plain path in code. So ``mkdocs build --strict`` never fails on a link the README rightly
has, and the home page never drifts from the README.

The other pages are written to read well on GitHub too, so they reach outside ``docs/``
with ``../`` links: ``../README.md#install`` becomes the home page (``index.md#install``),
and any other repo file is handled as the README's are.
"""

from __future__ import annotations

import posixpath
import re
from pathlib import Path
from typing import Any

from mkdocs.exceptions import PluginError

MARKER = "<!-- include: README.md -->"
_LINK = re.compile(
    r"(?P<bang>!?)\[(?P<text>[^\]]*)\]\((?P<target>[^)\s]+)(?P<title>\s+\"[^\"]*\")?\)"
)
_ABSOLUTE = re.compile(r"^(?:[a-z][a-z0-9+.-]*:|/|#)", re.IGNORECASE)


def _repo_file(match: re.Match[str], path: str, repo_url: str | None) -> str:
    """A link to ``path``, a repo file outside the site: on GitHub, or as plain text."""
    title = match["title"] or ""
    if repo_url:
        url = f"{repo_url.rstrip('/')}/{'raw' if match['bang'] else 'blob'}/HEAD/{path}"
        return f"{match['bang']}[{match['text']}]({url}{title})"
    if match["bang"]:
        return match["text"]
    return f"{match['text']} (`{path}`)"


def _rewrite(match: re.Match[str], repo_url: str | None) -> str:
    target = match["target"]
    if _ABSOLUTE.match(target):
        return match[0]
    target = target.removeprefix("./")
    title = match["title"] or ""
    if target.startswith("docs/"):
        return f"{match['bang']}[{match['text']}]({target.removeprefix('docs/')}{title})"
    return _repo_file(match, target, repo_url)


def rewrite_links(markdown: str, repo_url: str | None) -> str:
    """The README's repo-relative links, made to work from the site's home page."""
    return _LINK.sub(lambda m: _rewrite(m, repo_url), markdown)


def _rewrite_from_page(match: re.Match[str], page_uri: str, repo_url: str | None) -> str:
    target = match["target"]
    if _ABSOLUTE.match(target):
        return match[0]
    path, hash_, fragment = target.partition("#")
    page_dir = posixpath.dirname(page_uri)
    in_repo = posixpath.normpath(posixpath.join("docs", page_dir, path))
    if in_repo == "docs" or in_repo.startswith("docs/"):
        return match[0]  # a page or image of the site: mkdocs checks it
    if in_repo == "README.md":  # the README is the site's home page
        home = posixpath.relpath("index.md", page_dir or ".")
        return f"{match['bang']}[{match['text']}]({home}{hash_}{fragment}{match['title'] or ''})"
    return _repo_file(match, in_repo, repo_url)


def rewrite_page_links(markdown: str, page_uri: str, repo_url: str | None) -> str:
    """A docs page's links that leave ``docs/`` (``../README.md``, ``../notebooks/a.ipynb``),
    made to work on the site; ``page_uri`` is the page's path inside ``docs/``."""
    return _LINK.sub(lambda m: _rewrite_from_page(m, page_uri, repo_url), markdown)


def on_page_markdown(markdown: str, page: Any, config: Any, files: Any) -> str:
    """Replace the marker with the README; fix the links that leave ``docs/`` elsewhere."""
    if MARKER not in markdown:
        return rewrite_page_links(markdown, page.file.src_uri, config.get("repo_url"))
    readme = Path(config["config_file_path"]).parent / "README.md"
    try:
        text = readme.read_text(encoding="utf-8")
    except OSError as exc:
        raise PluginError(f"{page.file.src_uri} includes {readme}, which cannot be read: {exc}"
                          ) from None
    return markdown.replace(MARKER, rewrite_links(text, config.get("repo_url")))
