"""mkdocs hook: put the README into the docs' home page, with its links fixed for the site.

``docs/index.md`` holds the marker ``<!-- include: README.md -->``; this hook replaces it
with the repo's README. The README's links are relative to the repo root, so in the site
``docs/img/x.png`` becomes ``img/x.png``; a link to any other repo file (a notebook,
``LICENSE``) points at ``repo_url`` when mkdocs.yml sets one, and otherwise becomes the
plain path in code. So ``mkdocs build --strict`` never fails on a link the README rightly
has, and the home page never drifts from the README.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from mkdocs.exceptions import PluginError

MARKER = "<!-- include: README.md -->"
_LINK = re.compile(
    r"(?P<bang>!?)\[(?P<text>[^\]]*)\]\((?P<target>[^)\s]+)(?P<title>\s+\"[^\"]*\")?\)"
)
_ABSOLUTE = re.compile(r"^(?:[a-z][a-z0-9+.-]*:|/|#)", re.IGNORECASE)


def _rewrite(match: re.Match[str], repo_url: str | None) -> str:
    target = match["target"]
    if _ABSOLUTE.match(target):
        return match[0]
    target = target.removeprefix("./")
    title = match["title"] or ""
    if target.startswith("docs/"):
        return f"{match['bang']}[{match['text']}]({target.removeprefix('docs/')}{title})"
    if repo_url:
        url = f"{repo_url.rstrip('/')}/{'raw' if match['bang'] else 'blob'}/HEAD/{target}"
        return f"{match['bang']}[{match['text']}]({url}{title})"
    if match["bang"]:
        return match["text"]
    return f"{match['text']} (`{target}`)"


def rewrite_links(markdown: str, repo_url: str | None) -> str:
    """The README's repo-relative links, made to work from the site's home page."""
    return _LINK.sub(lambda m: _rewrite(m, repo_url), markdown)


def on_page_markdown(markdown: str, page: Any, config: Any, files: Any) -> str:
    """Replace the marker with the README (only pages that carry the marker)."""
    if MARKER not in markdown:
        return markdown
    readme = Path(config["config_file_path"]).parent / "README.md"
    try:
        text = readme.read_text(encoding="utf-8")
    except OSError as exc:
        raise PluginError(f"{page.file.src_uri} includes {readme}, which cannot be read: {exc}"
                          ) from None
    return markdown.replace(MARKER, rewrite_links(text, config.get("repo_url")))
