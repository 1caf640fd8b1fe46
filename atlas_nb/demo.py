"""The demo: ``python -m atlas_nb.demo`` (``make demo``) runs the quick-start notebook.

It starts the sandbox (the emulated clouds, on loopback), executes
``notebooks/01_quickstart.ipynb`` headless in a fresh kernel of this interpreter
pointed at that sandbox, prints one line per code cell (status, time, key result),
then a final tally, and writes the executed notebook to ``build/``. No account and
no network are needed; the kernel gets a throwaway config and data dir, so the demo
never reads your settings or writes to your ledger.

``python -m atlas_nb.demo --script`` is the same quick start as a plain script.

The notebook runner (``execute_notebook``, ``CellReport``) is what the test suite
uses to execute every notebook in ``notebooks/``.
"""

from __future__ import annotations

import argparse
import html
import os
import re
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import atlas_nb as atlas
from atlas_nb import sandbox
from atlas_nb.facade import all_providers

if TYPE_CHECKING:
    from nbformat import NotebookNode

__all__ = [
    "CellReport",
    "digest",
    "execute_notebook",
    "execute_notebook_async",
    "kernel_env",
    "live_computes",
    "main",
    "notebooks_dir",
    "report_cell",
    "result_lines",
    "run",
    "run_notebook",
]

QUICKSTART = "01_quickstart.ipynb"
EXPECTED_ERROR_TAG = "raises-exception"
"""A code cell with this tag is meant to fail (nbclient and nbmake skip its error too)."""
_WIDTH = 100


@dataclass(frozen=True)
class CellReport:
    """How one code cell went.

    ``status`` is ``ok``, ``error`` or ``expected error`` (an error in a cell tagged
    ``raises-exception``); ``number`` counts code cells from 1; ``result`` is a one-line
    digest of the cell's output (its printed lines, else its notes on stderr, else its
    displayed value), ``details`` the same as separate lines, and ``error`` is
    ``"Name: message"`` when the cell raised.
    """

    number: int
    index: int
    status: str
    seconds: float
    source: str
    result: str
    error: str | None = None
    details: tuple[str, ...] = ()

    @property
    def failed(self) -> bool:
        """Whether the cell raised without being tagged ``raises-exception``."""
        return self.status == "error"

    def line(self, width: int | None = None) -> str:
        """``  ok     0.4s  [3] %atlas providers  -> table of 5 rows (provider, ...)``, at most
        ``width`` characters (default: the terminal's width, at least 100)."""
        if width is None:
            width = max(_WIDTH, shutil.get_terminal_size((140, 24)).columns)
        mark = {"ok": "ok", "error": "FAILED", "expected error": "ok*"}[self.status]
        head = f"  {mark:<6} {self.seconds:5.1f}s  [{self.number}] {_clip(self.source, 40)}"
        detail = self.error if self.error and self.status != "ok" else self.result
        return f"{head}  -> {_clip(detail, max(20, width - len(head)))}" if detail else head

    def summary(self, width: int | None = None, max_lines: int = 6) -> str:
        """``line()``, or when the result does not fit on it, the status line followed by
        the result's lines (at most ``max_lines``), indented."""
        if width is None:
            width = max(_WIDTH, shutil.get_terminal_size((140, 24)).columns)
        one = self.line(width)
        if self.status != "ok" or len(self.details) < 2 or not one.endswith("…"):
            return one
        head = one.split("  -> ")[0]
        indent = " " * 17
        shown = [indent + _clip(d, width - len(indent), squash=False)
                 for d in self.details[:max_lines]]
        if len(self.details) > max_lines:
            shown.append(f"{indent}… {len(self.details) - max_lines} more line(s)")
        return "\n".join([head, *shown])


def _clip(text: str, width: int, *, squash: bool = True) -> str:
    if squash:
        text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 1] + "…"


def notebooks_dir() -> Path:
    """The ``notebooks/`` folder of this checkout (or of the current directory)."""
    for candidate in (Path(__file__).resolve().parent.parent / "notebooks",
                      Path.cwd() / "notebooks"):
        if candidate.is_dir():
            return candidate
    raise atlas.ValidationError(
        "cannot find the notebooks/ folder; run the demo from a clone of the repository "
        "or pass --notebook PATH"
    )


# -- reading outputs ------------------------------------------------------------------------
def _text(value: Any) -> str:
    return "".join(value) if isinstance(value, list) else str(value or "")


def _table(data: Mapping[str, Any]) -> str | None:
    """``table of N rows (a, b, c)`` for a pandas DataFrame's HTML, else ``None``."""
    page = _text(data.get("text/html"))
    if 'class="dataframe' not in page:
        return None
    head, _, body = page.partition("<tbody>")
    columns = [html.unescape(re.sub(r"<[^>]+>", "", c)).strip()
               for c in re.findall(r"<th[^>]*>(.*?)</th>", head, flags=re.S)]
    columns = [c for c in columns if c]
    rows = body.count("<tr")
    match = re.search(r"(\d+) rows × (\d+) columns", page)
    if match:
        rows = int(match.group(1))
    return f"table of {rows} row{'s' if rows != 1 else ''} ({', '.join(columns)})"


def result_lines(outputs: Iterable[Mapping[str, Any]]) -> list[str]:
    """The lines that tell what a cell did: its stdout, else its stderr notes, else what
    it displayed (a table summarised by its size and columns, an image by its kind)."""
    streams: dict[str, list[str]] = {"stdout": [], "stderr": []}
    shown: list[str] = []
    for out in outputs:
        kind = out.get("output_type")
        if kind == "stream":
            streams.setdefault(str(out.get("name")), []).append(_text(out.get("text")))
        elif kind in ("execute_result", "display_data"):
            data = out.get("data") or {}
            table = _table(data)
            if table is not None:
                shown.append(table)
            elif "image/png" in data:
                shown.append("a chart (image/png)")
            elif "text/plain" in data:
                shown.append(_text(data["text/plain"]))
    for text in ("".join(streams["stdout"]), "".join(streams["stderr"]), "\n".join(shown)):
        lines = [line.strip() for line in text.replace("\r", "\n").splitlines()]
        lines = [line for line in lines if line]
        if lines:
            return lines
    return []


def digest(outputs: Iterable[Mapping[str, Any]]) -> str:
    """``result_lines`` as one line, joined with `` · ``."""
    return " · ".join(result_lines(outputs))


def _error(outputs: Iterable[Mapping[str, Any]]) -> str | None:
    for out in outputs:
        if out.get("output_type") == "error":
            return f"{out.get('ename')}: {out.get('evalue')}"
    return None


def _seconds(cell: Mapping[str, Any]) -> float:
    timing = (cell.get("metadata") or {}).get("execution") or {}
    start, end = timing.get("iopub.execute_input"), timing.get("shell.execute_reply")
    if not (start and end):
        return 0.0
    from datetime import datetime

    begun = datetime.fromisoformat(str(start).replace("Z", "+00:00"))
    ended = datetime.fromisoformat(str(end).replace("Z", "+00:00"))
    return max(0.0, (ended - begun).total_seconds())


def report_cell(cell: Mapping[str, Any], index: int, number: int,
                reply: Mapping[str, Any] | None = None) -> CellReport:
    """The ``CellReport`` of an executed code cell, from its outputs and, when given, the
    kernel's ``execute_reply`` content (an IPython ``UsageError`` leaves no error output,
    only an error reply)."""
    outputs = list(cell.get("outputs") or [])
    error = _error(outputs)
    if error is None and reply is not None and reply.get("status") == "error":
        error = f"{reply.get('ename')}: {reply.get('evalue')}"
    tags = (cell.get("metadata") or {}).get("tags") or []
    status = "ok" if error is None else (
        "expected error" if EXPECTED_ERROR_TAG in tags else "error")
    source = next((line for line in _text(cell.get("source")).splitlines() if line.strip()), "")
    lines = result_lines(outputs)
    return CellReport(number=number, index=index, status=status, seconds=_seconds(cell),
                      source=source, result=" · ".join(lines), error=error,
                      details=tuple(lines))


# -- running --------------------------------------------------------------------------------
def _kernel_manager_class() -> type[Any]:
    """An ``AsyncKernelManager`` (what nbclient drives) for a kernel of *this* interpreter,
    whatever kernelspecs the machine has: ipykernel's built-in ``python3`` spec, which runs
    ``sys.executable``."""
    from jupyter_client.kernelspec import KernelSpecManager
    from jupyter_client.manager import AsyncKernelManager
    from traitlets import default

    class ThisInterpreterKernel(AsyncKernelManager):
        @default("kernel_spec_manager")
        def _only_the_native_spec(self) -> KernelSpecManager:
            return KernelSpecManager(kernel_dirs=[], ensure_native_kernel=True)

    return ThisInterpreterKernel


def execute_notebook(
    path: str | os.PathLike[str],
    *,
    env: Mapping[str, str] | None = None,
    timeout_s: float = 120.0,
    on_cell: Callable[[CellReport], None] | None = None,
) -> tuple[NotebookNode, list[CellReport]]:
    """Execute a notebook in a fresh kernel of this interpreter, in the notebook's folder.

    Every code cell runs even if one fails; ``on_cell`` sees each ``CellReport`` as its
    cell finishes. ``env`` is the kernel's environment (default: this process's).
    Returns the executed notebook and one report per code cell. Raises nbclient's
    ``CellTimeoutError`` past ``timeout_s`` in one cell, ``DeadKernelError`` if the
    kernel dies.
    """
    from jupyter_core.utils import run_sync

    run = run_sync(execute_notebook_async)
    result: tuple[NotebookNode, list[CellReport]] = run(path, env=env, timeout_s=timeout_s,
                                                        on_cell=on_cell)
    return result


async def execute_notebook_async(
    path: str | os.PathLike[str],
    *,
    env: Mapping[str, str] | None = None,
    timeout_s: float = 120.0,
    on_cell: Callable[[CellReport], None] | None = None,
) -> tuple[NotebookNode, list[CellReport]]:
    """``execute_notebook`` as a coroutine, so one event loop can run several notebooks
    at once (``asyncio.gather``) without threads."""
    import nbformat
    from nbclient import NotebookClient

    source = Path(path)
    nb = nbformat.read(source, as_version=4)  # type: ignore[no-untyped-call]
    numbers = {i: n for n, i in enumerate(
        (i for i, c in enumerate(nb.cells) if c.cell_type == "code"), start=1)}
    reports: list[CellReport] = []

    def executed(cell: Any, cell_index: int, execute_reply: Any) -> None:
        reply = (execute_reply or {}).get("content") or {}
        rep = report_cell(cell, cell_index, numbers[cell_index], reply)
        reports.append(rep)
        if on_cell is not None:
            on_cell(rep)

    client = NotebookClient(
        nb, kernel_name="python3", kernel_manager_class=_kernel_manager_class(),
        timeout=int(timeout_s), startup_timeout=60, allow_errors=True, record_timing=True,
        resources={"metadata": {"path": str(source.resolve().parent)}},
        on_cell_executed=executed,
    )
    # The kernel's own stderr (start-up notices, a crash) goes to a log, not the terminal;
    # when the run fails, its last lines are added to the exception.
    with tempfile.TemporaryFile("w+", encoding="utf-8", errors="replace") as log:
        try:
            await client.async_execute(env=dict(os.environ if env is None else env),
                                       stderr=log)
        except Exception as exc:
            log.seek(0)
            tail = log.read().strip().splitlines()[-20:]
            if tail:
                exc.add_note("kernel stderr (last lines):\n" + "\n".join(tail))
            raise
    return nb, reports


def live_computes(providers: Iterable[str] | None = None) -> list[atlas.Compute]:
    """Computes not terminated, across ``providers`` of the active sandbox (or clouds)."""
    found: list[atlas.Compute] = []
    for name in all_providers() if providers is None else providers:
        found += [c for c in atlas.list_compute(provider=name) if c.status != "terminated"]
    return found


def kernel_env(url: str, home: Path) -> dict[str, str]:
    """This process's environment, pointed at the sandbox at ``url``, with no provider
    key, and a private config file, data dir and IPython profile under ``home``."""
    from atlas_nb import config

    env = dict(os.environ)
    for names in (config.api_key_env(p) for p in all_providers()):
        for name in names:
            env.pop(name, None)
    env.pop("ATLAS_NB_PROVIDER", None)  # the notebooks name their providers
    env.pop("MPLBACKEND", None)  # the kernel's inline backend draws the charts
    env.update(ATLAS_NB_SANDBOX=url, ATLAS_NB_CONFIG=str(home / "config.yaml"),
               ATLAS_NB_DATA_DIR=str(home / "data"), IPYTHONDIR=str(home / "ipython"))
    return env


def run_notebook(notebook: str | os.PathLike[str] | None = None, *,
                 out_dir: str | os.PathLike[str] = "build", timeout_s: float = 120.0) -> int:
    """Execute ``notebook`` (default: the quick start) against a fresh sandbox, print the
    summary, write the executed copy to ``out_dir``; return a process exit code."""
    import nbformat

    path = Path(notebook) if notebook is not None else notebooks_dir() / QUICKSTART
    if not path.is_file():
        raise atlas.ValidationError(f"no notebook at {path}; pass --notebook PATH")
    out = Path(out_dir) / path.name
    started = time.perf_counter()
    print(f"atlas_nb demo: {path.name}, executed headless against the sandbox")
    with sandbox.start() as sb, tempfile.TemporaryDirectory(prefix="atlas-demo-") as home:
        print(f"  sandbox at {sb.url} (RunPod, Lambda, Vast and Fly emulated on loopback)")
        print("  code cells as they finish (status, seconds, [cell] source -> result):")
        from nbclient.exceptions import CellTimeoutError, DeadKernelError

        try:
            nb, reports = execute_notebook(path, env=kernel_env(sb.url, Path(home)),
                                           timeout_s=timeout_s,
                                           on_cell=lambda r: print(r.summary(), flush=True))
        except (CellTimeoutError, DeadKernelError) as exc:
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            print(f"demo: the notebook did not finish: {first}", file=sys.stderr)
            return 1
        left = live_computes()
        violations = sb.violations
    out.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, out)  # type: ignore[no-untyped-call]
    failed = [r for r in reports if r.failed]
    expected = sum(r.status == "expected error" for r in reports)
    print(f"{len(reports)} code cells: {len(reports) - len(failed)} ok"
          + (f" ({expected} failing on purpose)" if expected else "")
          + f", {len(failed)} failed · {len(left)} computes left running"
          + f" · {len(violations)} API contract violations"
          + f" · {time.perf_counter() - started:.1f}s · executed notebook: {out}")
    for line in violations[:5]:
        print(f"  contract: {line}")
    for c in left:
        print(f"  left running: {c.provider}:{c.id} ({c.name})")
    return 0 if not failed and not left else 1


def run(provider: str = "runpod") -> int:
    """The scripted quick start against a fresh sandbox; returns a process exit code."""
    started = time.perf_counter()
    with sandbox.start() as sb:
        print(f"sandbox running at {sb.url} (every provider now points at it)")

        _step(f"{provider}: capabilities")
        print(", ".join(sorted(atlas.capabilities(provider))))

        _step(f"{provider}: cheapest GPUs")
        gpus = sorted(
            (g for g in atlas.list_gpu_types(provider=provider) if g.price_per_hour),
            key=lambda g: g.price_per_hour or 0.0,
        )
        for g in gpus[:5]:
            spot = f"  spot ${g.spot_price_per_hour:.2f}" if g.spot_price_per_hour else ""
            print(f"  {g.canonical or g.id:<14} ${g.price_per_hour:.2f}/h{spot}")

        _step("spawn an H100 pod with bearer auth")
        pod = atlas.spawn_compute(provider=provider, gpu="h100", image="vllm/vllm-openai:latest",
                                  ports=[(8000, "http")], auth="bearer", name="atlas-demo")
        print(f"  {pod.id} is {pod.status}; ${pod.cost_per_hour:.2f}/h")
        assert pod.auth is not None
        print(f"  token hash {(pod.auth.hash or '')[:16]}… (the token is shown once, never logged)")
        try:
            pod = atlas.wait_ready(pod.id, provider=provider, timeout_s=60,
                                   on_progress=lambda c: print(f"  … {c.status}"))
            print(f"  ready at {pod.url}")
            if "stop_start" in atlas.capabilities(provider):
                _step("stop, then start again")
                print(f"  {atlas.stop(pod.id, provider=provider).status}")
                print(f"  {atlas.start(pod.id, provider=provider).status}")
        finally:
            _step("terminate (idempotent)")
            atlas.terminate(pod.id, provider=provider)
            atlas.terminate(pod.id, provider=provider)
            print(f"  {pod.id} terminated")

        if "serverless" in atlas.capabilities(provider):
            _step("serverless: sync job on the echo endpoint")
            job = atlas.run_job(provider=provider, endpoint="echo", input={"prompt": "hi"},
                                mode="sync", timeout_ms=30_000)
            print(f"  {job.id}: {job.status} -> {job.output}")

            _step("serverless: stream a job")
            job = atlas.run_job(provider=provider, endpoint="stream", input={"prompt": "count"})
            for chunk in atlas.stream_job(job):
                print(f"  chunk: {chunk}")
            print(f"  final: {atlas.get_job(job).status}")

        live = [c for c in atlas.list_compute(provider=provider) if c.status != "terminated"]
        print(f"\nleft running: {len(live)} computes · {time.perf_counter() - started:.1f}s")
        return 0 if not live else 1


def _step(title: str) -> None:
    print(f"\n== {title}")


def main(argv: list[str] | None = None) -> int:
    """Entry point for ``python -m atlas_nb.demo``."""
    parser = argparse.ArgumentParser(
        prog="python -m atlas_nb.demo",
        description="Execute the quick-start notebook against the sandbox and summarise it "
                    "(no account needed).")
    parser.add_argument("--notebook", metavar="PATH",
                        help="the notebook to execute (default: notebooks/01_quickstart.ipynb)")
    parser.add_argument("--out", default="build", metavar="DIR",
                        help="where the executed notebook is written (default: build)")
    parser.add_argument("--timeout", type=float, default=120.0, metavar="S",
                        help="seconds a single cell may run (default: 120)")
    parser.add_argument("--script", action="store_true",
                        help="run the quick start as a plain script instead of the notebook")
    parser.add_argument("--provider", default="runpod",
                        help="with --script: which sandbox cloud to use (default: runpod)")
    args = parser.parse_args(argv)
    if args.script:
        return run(args.provider)
    try:
        return run_notebook(args.notebook, out_dir=args.out, timeout_s=args.timeout)
    except atlas.AtlasError as exc:
        print(f"demo: {exc}", file=sys.stderr)
        return 2
    except ImportError as exc:
        print(f"demo: {exc.name or exc} is missing; install the extras: "
              "pip install -e '.[dev,notebook,sandbox]'", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
