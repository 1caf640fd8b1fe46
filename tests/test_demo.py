"""``python -m atlas_nb.demo``: executes the quick-start notebook and summarises it.

The first test runs the command as ``make demo`` does, in a subprocess (with this test's
private config and data dirs, from ``conftest``); the others call ``main`` in process.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

from atlas_nb import demo

ROOT = Path(__file__).resolve().parent.parent


def test_demo_executes_the_quickstart_and_prints_a_summary(tmp_path: Path) -> None:
    out = tmp_path / "out"
    env = {k: v for k, v in os.environ.items() if k != "ATLAS_NB_SANDBOX"}
    done = subprocess.run([sys.executable, "-m", "atlas_nb.demo", "--out", str(out)],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stdout + done.stderr
    lines = done.stdout.splitlines()
    assert lines[0] == "atlas_nb demo: 01_quickstart.ipynb, executed headless against the sandbox"
    assert re.fullmatch(r"  sandbox at http://127\.0\.0\.1:\d+ \(.*\)", lines[1])
    # One block per code cell: its status line, then (when the result is long) the
    # result's lines, indented under it.
    blocks: list[list[str]] = []
    for line in lines[3:-1]:
        if re.match(r"  (ok|FAILED|ok\*) +\d+\.\ds  \[\d+\] ", line):
            blocks.append([line])
        else:
            assert line.startswith(" " * 17) and blocks, line
            blocks[-1].append(line.strip())
    assert len(blocks) == 10 and all(b[0].startswith("  ok ") for b in blocks)
    cell = {re.sub(r"^.*?\[\d+\] ", "", b[0]).split("  -> ")[0]: "\n".join(b) for b in blocks}

    def result(source: str) -> str:
        return next(v for k, v in cell.items() if k.startswith(source))

    pod = re.search(r"spawned (\w+) \(atlas-\w+-\w+-quickstart-\w+\) on runpod, tracked",
                    result("%%atlas spawn"))
    assert pod is not None
    assert f"pod {pod.group(1)} is running at https://{pod.group(1)}-8000.proxy" in result(
        "from atlas_nb.auth import sign")
    verifier = [" ".join(x.split()) for x in result("tampered").splitlines()[1:]]
    assert verifier == ["no credentials -> 401 missing_credentials",
                        "wrong bearer token -> 401 bad_token",
                        "pod.auth.headers() -> 200 meta-llama/Llama-3.1-8B-Instruct",
                        "the signed URL -> 200 meta-llama/Llama-3.1-8B-Instruct",
                        "a tampered signed URL -> 401 bad_signature"]
    assert result("%atlas dashboard").splitlines()[1] == "Dashboard: 1 compute(s)"
    assert cell["%atlas terminate $pod"].endswith(f"-> terminated {pod.group(1)}")
    assert cell["import atlas_nb as atlas"].endswith("-> tracked: 0, live pods on runpod: 0")
    written = out / "01_quickstart.ipynb"
    assert re.fullmatch(
        r"10 code cells: 10 ok, 0 failed · 0 computes left running · 0 API contract "
        rf"violations · \d+\.\ds · executed notebook: {re.escape(str(written))}", lines[-1])
    nb = nbformat.read(written, as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert [c.execution_count for c in code] == list(range(1, 11))
    assert not [o for c in code for o in c.outputs if o.output_type == "error"]
    assert "401 bad_signature" in json.dumps(nb)


def _notebook(path: Path, *sources: str, tags: dict[int, list[str]] | None = None) -> Path:
    nb = nbformat.v4.new_notebook()
    for i, source in enumerate(sources):
        cell = nbformat.v4.new_code_cell(source)
        cell.metadata = {"tags": (tags or {}).get(i, [])}
        nb.cells.append(cell)
    nbformat.write(nb, path)
    return path


def test_a_failing_cell_is_reported_and_fails_the_demo(tmp_path: Path,
                                                      capsys: pytest.CaptureFixture[str]
                                                      ) -> None:
    path = _notebook(tmp_path / "broken.ipynb",
                     "%load_ext atlas_nb\n%atlas sandbox on",
                     "%atlas spawn --provider nowhere --gpu h100 --image img:1",
                     "print('still runs')\n1 / 0",
                     "%atlas nonsense",
                     tags={1: ["raises-exception"]})
    code = demo.main(["--notebook", str(path), "--out", str(tmp_path / "out")])
    lines = capsys.readouterr().out.splitlines()
    assert code == 1
    assert re.search(r"  ok\* .*\[2\] %atlas spawn --provider nowhere.* -> ValidationError: ",
                     "\n".join(lines))
    failed = [line for line in lines if line.startswith("  FAILED")]
    assert len(failed) == 2
    assert failed[0].endswith("-> ZeroDivisionError: division by zero")
    assert "[4] %atlas nonsense" in failed[1] and "UsageError" in failed[1]
    assert lines[-1].startswith("4 code cells: 2 ok (1 failing on purpose), 2 failed · "
                                "0 computes left running")
    assert (tmp_path / "out" / "broken.ipynb").is_file()


def test_a_cell_past_the_timeout_stops_the_demo(tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    path = _notebook(tmp_path / "slow.ipynb", "%load_ext atlas_nb\n%atlas sandbox on",
                     "import time\ntime.sleep(60)")
    assert demo.main(["--notebook", str(path), "--timeout", "1", "--out", str(tmp_path)]) == 1
    assert capsys.readouterr().err.strip() == (
        "demo: the notebook did not finish: A cell timed out while it was being executed, "
        "after 1 seconds.")


def test_a_missing_notebook_is_a_one_line_error(tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    assert demo.main(["--notebook", str(tmp_path / "nope.ipynb")]) == 2
    assert capsys.readouterr().err.strip() == (
        f"demo: no notebook at {tmp_path / 'nope.ipynb'}; pass --notebook PATH")


def test_script_mode_walks_the_quick_start(capsys: pytest.CaptureFixture[str]) -> None:
    assert demo.main(["--script"]) == 0
    out = capsys.readouterr().out
    assert "== spawn an H100 pod with bearer auth" in out
    assert re.search(r"== serverless: sync job on the echo endpoint\n  \S+: completed -> "
                     r"\{'echo': \{'prompt': 'hi'\}\}", out)
    assert re.search(r"\nleft running: 0 computes · \d+\.\ds$", out.rstrip())


def test_digest_prefers_printed_lines_then_notes_then_the_displayed_value() -> None:
    table = {"output_type": "execute_result", "data": {
        "text/plain": "…", "text/html": '<table class="dataframe"><thead><tr><th></th>'
        "<th>a</th><th>b</th></tr></thead><tbody><tr><td>1</td></tr><tr><td>2</td></tr>"
        "</tbody></table>"}}
    note = {"output_type": "stream", "name": "stderr", "text": "spawned x\n"}
    printed = {"output_type": "stream", "name": "stdout", "text": "one\r\ntwo\n"}
    assert demo.digest([table]) == "table of 2 rows (a, b)"
    assert demo.digest([note, table]) == "spawned x"
    assert demo.digest([note, printed, table]) == "one · two"
    assert demo.digest([{"output_type": "display_data",
                         "data": {"image/png": "…", "text/plain": "<Figure>"}}]) == (
        "a chart (image/png)")
    assert demo.digest([]) == ""


def test_a_report_line_shows_the_error_of_a_failed_cell() -> None:
    cell = {"source": "\n\nx = 1\n", "outputs": [
        {"output_type": "stream", "name": "stdout", "text": "before\n"},
        {"output_type": "error", "ename": "KeyError", "evalue": "'k'", "traceback": []}],
        "metadata": {"execution": {"iopub.execute_input": "2025-01-01T00:00:00.000000Z",
                                   "shell.execute_reply": "2025-01-01T00:00:01.500000Z"}}}
    rep = demo.report_cell(cell, index=3, number=2)
    assert (rep.status, rep.seconds, rep.source, rep.failed) == ("error", 1.5, "x = 1", True)
    assert rep.line() == "  FAILED   1.5s  [2] x = 1  -> KeyError: 'k'"
    ok = demo.report_cell({**cell, "outputs": cell["outputs"][:1]}, index=3, number=2)
    assert ok.line() == ok.summary() == "  ok       1.5s  [2] x = 1  -> before"


def test_a_long_result_goes_under_the_status_line() -> None:
    rep = demo.CellReport(number=7, index=9, status="ok", seconds=0.25, source="calls()",
                          result="a -> 401 missing · b -> 200 ok",
                          details=("a  -> 401 missing", "b  -> 200 ok"))
    assert rep.summary(width=200) == (
        "  ok       0.2s  [7] calls()  -> a -> 401 missing · b -> 200 ok")
    assert rep.summary(width=40, max_lines=1).splitlines() == [
        "  ok       0.2s  [7] calls()", " " * 17 + "a  -> 401 missing",
        " " * 17 + "… 1 more line(s)"]
