"""``atlas-nb doctor`` / ``%atlas doctor``: what is installed, configured, and looks wrong.

Versions are read from package metadata (nothing is imported), so a broken widget
install cannot break the doctor. Keys are reported by source, never by value.
"""

from __future__ import annotations

import html
import platform
import sys
from dataclasses import dataclass, field
from importlib import metadata
from typing import Literal

__all__ = ["Check", "Report", "diagnose", "widget_mismatch"]

Level = Literal["ok", "warn", "error", "info"]
_PACKAGES = ("atlas_nb", "ipython", "ipykernel", "ipywidgets", "jupyterlab_widgets",
             "widgetsnbextension", "jupyterlab", "notebook", "pandas", "httpx", "pydantic")
# ipywidgets major -> the jupyterlab_widgets / widgetsnbextension majors built for it.
_WIDGET_PAIRS = {7: (1, 3), 8: (3, 4)}


@dataclass(frozen=True)
class Check:
    """One line of the report."""

    level: Level
    topic: str
    message: str


@dataclass
class Report:
    """Everything the doctor found; renders as text and HTML."""

    versions: dict[str, str | None] = field(default_factory=dict)
    checks: list[Check] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """No warnings and no errors."""
        return all(c.level in ("ok", "info") for c in self.checks)

    def __str__(self) -> str:
        lines = ["atlas_nb doctor", "", "versions:"]
        lines += [f"  {name:<20} {ver or '-'}" for name, ver in self.versions.items()]
        lines += ["", "checks:"]
        lines += [f"  [{c.level:>5}] {c.topic}: {c.message}" for c in self.checks]
        return "\n".join(lines)

    def __repr__(self) -> str:
        return str(self)

    def _repr_html_(self) -> str:
        colors = {"ok": "#2a7", "info": "#555", "warn": "#c80", "error": "#c22"}
        vers = "".join(f"<tr><td>{html.escape(k)}</td><td>{html.escape(v or '-')}</td></tr>"
                       for k, v in self.versions.items())
        checks = "".join(
            f"<tr><td style='color:{colors[c.level]};font-weight:bold'>{c.level}</td>"
            f"<td>{html.escape(c.topic)}</td><td>{html.escape(c.message)}</td></tr>"
            for c in self.checks)
        return ("<div style='font-family:monospace;font-size:12px'><b>atlas_nb doctor</b>"
                f"<table>{vers}</table><table>{checks}</table></div>")


def _version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def _major(version: str | None) -> int | None:
    try:
        return int(version.split(".")[0]) if version else None
    except ValueError:
        return None


def widget_mismatch(ipywidgets: str | None, lab: str | None, classic: str | None
                    ) -> list[str]:
    """Why widgets would not render with these versions (empty: they match)."""
    major = _major(ipywidgets)
    if major is None:
        return ["ipywidgets is not installed: panels fall back to static HTML"]
    want = _WIDGET_PAIRS.get(major)
    if want is None:
        return []
    problems = []
    if lab is not None and _major(lab) != want[0]:
        problems.append(f"ipywidgets {ipywidgets} needs jupyterlab_widgets {want[0]}.x, found "
                        f"{lab}: JupyterLab shows 'model not found'; pip install "
                        f"'jupyterlab_widgets=={want[0]}.*' in the server's environment")
    if classic is not None and _major(classic) != want[1]:
        problems.append(f"ipywidgets {ipywidgets} needs widgetsnbextension {want[1]}.x, found "
                        f"{classic}: the classic notebook shows raw widget reprs")
    return problems


def diagnose() -> Report:
    """Collect versions and checks (config, sandbox, keys, widgets)."""
    from . import config, sandbox

    report = Report()
    report.versions["python"] = platform.python_version()
    for dist in _PACKAGES:
        report.versions[dist] = _version(dist)
    add = report.checks.append
    problems = widget_mismatch(report.versions["ipywidgets"],
                               report.versions["jupyterlab_widgets"],
                               report.versions["widgetsnbextension"])
    for problem in problems:
        add(Check("warn", "widgets", problem))
    if not problems:
        add(Check("ok", "widgets", "ipywidgets and its front-end packages match"))
    if report.versions["pandas"] is None:
        add(Check("error", "pandas", "pandas is missing: pip install 'atlas_nb[notebook]'"))
    path = config.config_path()
    try:
        data = config.load()
    except Exception as exc:  # the doctor reports every failure, whatever its kind
        add(Check("error", "config", f"{path}: {exc}"))
        data = {}
    else:
        add(Check("ok" if path.exists() else "info", "config",
                  f"{path}" + ("" if path.exists() else " (absent; defaults and env vars apply)")))
    default = data.get("default_provider") or None
    add(Check("info", "default provider", str(default or "not set (pass --provider)")))
    url = sandbox.active_url()
    add(Check("info", "sandbox", f"on at {url}" if url else "off (real clouds)"))
    from .providers import names

    for name in names(keyed=True):
        try:
            source = config.key_source(name)
        except Exception:  # a broken config file is already reported above
            add(Check("warn", f"{name} key", "unknown: the config file cannot be read"))
            continue
        env = " or ".join(config.api_key_env(name))
        add(Check("ok" if source else "info", f"{name} key",
                  f"present ({source})" if source
                  else f"not set: %atlas login {name}, or set {env}"))
    add(Check("info", "interpreter", sys.executable))
    return report
