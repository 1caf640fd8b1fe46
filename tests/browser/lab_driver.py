"""``NotebookPage``: one notebook open in JupyterLab, driven the way a person would.

Menus, dialogs and widgets are found by their visible text and ARIA roles
(``get_by_role("menuitem", name="Run All Cells")``), not by CSS paths into
JupyterLab's internals. The few class names used (``.jp-CodeCell``,
``.jp-OutputArea-output`` and its ``data-mime-type``, ``.jp-InputPrompt``, the
toolbar's kernel name and execution indicator) are long-standing JupyterLab names.
"""

from __future__ import annotations

import re
import time
from pathlib import Path

from playwright.sync_api import Locator, Page, expect

__all__ = ["NotebookPage"]

# True once every code cell has run: nothing queued ("[*]"), the kernel idle.
_DONE_JS = """() => {
  const busy = document.querySelector(
      ".jp-NotebookPanel .jp-Notebook-ExecutionIndicator[data-status='busy']");
  const queued = [...document.querySelectorAll(".jp-NotebookPanel .jp-InputPrompt")]
      .some(p => p.textContent.includes("*"));
  return !busy && !queued;
}"""


class NotebookPage:
    """A notebook opened in JupyterLab (``page`` shows only that document)."""

    def __init__(self, page: Page, path: str, screenshots: Path) -> None:
        self.page = page
        self.path = path
        self.screenshots = screenshots

    # -- kernel -----------------------------------------------------------------------
    def wait_kernel_ready(self, timeout_s: float = 60.0) -> None:
        """Wait until the notebook's kernel is started and idle.

        Clicking Run All before the kernel exists makes JupyterLab ask which kernel to
        use, so every action waits for this first.
        """
        toolbar = self.page.locator(".jp-NotebookPanel-toolbar")
        expect(toolbar.locator(".jp-Toolbar-kernelName")).to_contain_text(
            "Python 3", timeout=timeout_s * 1000)
        expect(toolbar.locator(".jp-Notebook-ExecutionIndicator")).to_have_attribute(
            "data-status", "idle", timeout=timeout_s * 1000)

    def menu(self, top: str, item: str) -> None:
        """Click ``top`` in the menu bar, then ``item`` in its menu (a menu item's
        accessible name ends with its keyboard shortcut, if it has one)."""
        self.page.get_by_role("menubar").get_by_role("menuitem", name=top, exact=True).click()
        name = re.compile(rf"^{re.escape(item)}(\s|$)")
        self.page.get_by_role("menu").get_by_role("menuitem", name=name).click()

    def run_all(self, timeout_s: float = 120.0) -> None:
        """Run ▸ Run All Cells, then wait until every cell has run."""
        self.wait_kernel_ready()
        self.menu("Run", "Run All Cells")
        self.wait_until_done(timeout_s)

    def wait_until_done(self, timeout_s: float = 120.0) -> None:
        """Wait until no cell is queued or running (checked twice, 0.5 s apart, since a
        cell can finish a moment before the next one is marked as running)."""
        deadline = time.monotonic() + timeout_s
        for _ in range(2):
            left = max(1.0, deadline - time.monotonic())
            self.page.wait_for_function(_DONE_JS, timeout=left * 1000, polling=200)
            self.page.wait_for_timeout(500)

    def select(self, cell: Locator) -> None:
        """Make ``cell`` the active cell (a click on its prompt: command mode, no editing)."""
        cell.locator(".jp-InputPrompt").click()
        expect(cell).to_have_class(re.compile(r"\bjp-mod-active\b"))

    def restart_kernel(self, item: str = "Restart Kernel…") -> None:
        """Kernel ▸ ``item`` (any of the Restart Kernel… entries), then confirm."""
        self.menu("Kernel", item)
        self.confirm_restart()

    def confirm_restart(self) -> None:
        """Press Restart in JupyterLab's "Restart Kernel?" dialog."""
        dialog = self.page.get_by_role("dialog")
        expect(dialog).to_contain_text("Restart")
        # Matched by its visible label: its accessible name is "Confirm Kernel Restart".
        dialog.locator("button").filter(has_text=re.compile(r"^\s*Restart\s*$")).click()

    # -- cells and outputs --------------------------------------------------------------
    def code_cells(self) -> Locator:
        return self.page.locator(".jp-NotebookPanel .jp-CodeCell")

    def cell(self, containing: str) -> Locator:
        """The code cell whose text (source or output) contains ``containing``."""
        return self.code_cells().filter(has_text=containing)

    def unrun_cells(self) -> list[str]:
        """The first line of every code cell without an execution count."""
        missing = []
        cells = self.code_cells()
        for i in range(cells.count()):
            prompt = cells.nth(i).locator(".jp-InputPrompt").inner_text()
            if not re.search(r"\[\d+\]", prompt):
                source = cells.nth(i).locator(".jp-InputArea-editor").inner_text()
                missing.append(source.strip().splitlines()[0] if source.strip() else "")
        return missing

    def errors(self) -> list[str]:
        """Every error output, and every stderr output that holds a traceback."""
        found = []
        outputs = self.page.locator(".jp-NotebookPanel .jp-OutputArea-output")
        errors = outputs.and_(self.page.locator("[data-mime-type*='error']"))
        found += [errors.nth(i).inner_text() for i in range(errors.count())]
        stderr = outputs.and_(self.page.locator("[data-mime-type*='stderr']"))
        for i in range(stderr.count()):
            text = stderr.nth(i).inner_text()
            if "Traceback" in text or re.search(r"^\w+(Error|Exception): ", text, re.M):
                found.append(text)
        return found

    # -- evidence ---------------------------------------------------------------------
    def screenshot(self, name: str, target: Locator | None = None, *,
                   up_to: Locator | None = None) -> Path:
        """Save a PNG of ``target`` (default: the whole page) as ``screenshots/name.png``;
        with ``up_to``, cropped on the right just past that element (a cell spans the
        whole window, its widgets often much less)."""
        self.screenshots.mkdir(parents=True, exist_ok=True)
        path = self.screenshots / f"{name}.png"
        if target is None:
            self.page.screenshot(path=path)
        elif up_to is None:
            target.screenshot(path=path)
        else:
            target.scroll_into_view_if_needed()  # boxes are in viewport coordinates
            box, edge = target.bounding_box(), up_to.bounding_box()
            assert box is not None and edge is not None, "nothing to photograph"
            right = min(box["x"] + box["width"], edge["x"] + edge["width"] + 24)
            self.page.screenshot(path=path, clip={
                "x": box["x"], "y": box["y"], "width": right - box["x"],
                "height": box["height"]})
        return path
