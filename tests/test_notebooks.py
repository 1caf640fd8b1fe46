"""Every notebook in ``notebooks/`` runs headless against the sandbox and shows real results.

Each notebook gets a fresh kernel of this interpreter (``atlas_nb.demo.execute_notebook``)
and its own sandbox, started here with contract validation on and handed to the kernel
as ``ATLAS_NB_SANDBOX``: the notebook's ``%atlas sandbox on`` attaches to it, and this
process can inspect afterwards what the notebook left running. The five notebooks run
concurrently on one event loop, once per module (they mostly wait on clocks; no threads,
because CPython 3.11 before 3.11.8 corrupts its AST state when threads compile at once).
``pytest --nbmake notebooks`` runs the same files standalone, each starting its own
sandbox.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nbformat
import pytest

from atlas_nb import sandbox
from atlas_nb.demo import (
    EXPECTED_ERROR_TAG,
    CellReport,
    execute_notebook_async,
    kernel_env,
    live_computes,
    notebooks_dir,
)

NOTEBOOKS = ("01_quickstart", "02_gpu_prices", "03_serverless_jobs", "04_fly_ops",
             "05_orchestrator")
_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_SECRET_VARS = ("ATLAS_PRESHARED_KEY", "ATLAS_SIGNING_SECRET")


@dataclass
class Run:
    """One executed notebook and what its sandbox looked like afterwards."""

    name: str
    nb: Any
    reports: list[CellReport]
    left: list[str] = field(default_factory=list)
    violations: list[str] = field(default_factory=list)
    secrets: list[str] = field(default_factory=list)
    fly_apps: set[str] = field(default_factory=set)

    def outputs(self, number: int) -> str:
        """Everything code cell ``number`` (from 1) showed, as plain text."""
        cells = [c for c in self.nb.cells if c.cell_type == "code"]
        text = ""
        for out in cells[number - 1].outputs:
            if out.output_type == "stream":  # one print can arrive in several chunks
                text += out.text
            elif out.output_type == "error":
                text += f"{out.ename}: {out.evalue}\n"
            else:
                text += out.get("data", {}).get("text/plain", "") + "\n"
        return _ANSI.sub("", text)

    def cell(self, startswith: str) -> int:
        """The number of the first code cell whose source starts with ``startswith``."""
        cells = [c for c in self.nb.cells if c.cell_type == "code"]
        return next(i for i, c in enumerate(cells, 1) if c.source.startswith(startswith))

    def rows(self, number: int) -> list[list[str]]:
        """The body rows of the DataFrame code cell ``number`` displayed (its HTML table)."""
        cells = [c for c in self.nb.cells if c.cell_type == "code"]
        page = next(out.data["text/html"] for out in cells[number - 1].outputs
                    if "text/html" in out.get("data", {}))
        body = page.partition("<tbody>")[2]
        return [[re.sub(r"<[^>]+>", "", cell).strip()
                 for cell in re.findall(r"<t[dh][^>]*>(.*?)</t[dh]>", row, flags=re.S)]
                for row in re.findall(r"<tr[^>]*>(.*?)</tr>", body, flags=re.S)]

    def mimetypes(self) -> set[str]:
        return {key for c in self.nb.cells if c.cell_type == "code" for out in c.outputs
                for key in out.get("data", {})}


async def _execute(name: str, sb: Any, home: Path) -> Run:
    nb, reports = await execute_notebook_async(notebooks_dir() / f"{name}.ipynb",
                                               env=kernel_env(sb.url, home), timeout_s=120)
    run = Run(name, nb, reports)
    sandbox.attach(sb.url)  # process-wide, but nothing else runs until it is detached
    try:
        run.left = [f"{c.provider}:{c.id}" for c in live_computes()]
    finally:
        sandbox.detach(sb.url)
    run.violations = sb.violations
    run.secrets = [env[var] for pod in sb.runpod.pods.values()
                   for env in [pod.get("env") or {}] for var in _SECRET_VARS if env.get(var)]
    run.fly_apps = set(sb.clouds["fly"].state.apps)
    return run


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Run]]:
    with ExitStack() as stack:
        # Started one after the other: the first loads the API specs, the rest reuse them.
        boxes = {name: stack.enter_context(sandbox.start(attach=False)) for name in NOTEBOOKS}
        homes = {name: tmp_path_factory.mktemp(f"home-{name}") for name in NOTEBOOKS}

        async def every_notebook() -> list[Run]:
            return list(await asyncio.gather(*(_execute(name, boxes[name], homes[name])
                                               for name in NOTEBOOKS)))

        loop = asyncio.new_event_loop()
        try:
            done = loop.run_until_complete(every_notebook())
        finally:
            loop.close()
        yield dict(zip(NOTEBOOKS, done, strict=True))


def _assert_clean_run(run: Run, expected_errors: int = 0) -> None:
    code_cells = sum(c.cell_type == "code" for c in run.nb.cells)
    assert len(run.reports) == code_cells, "every code cell ran"
    failed = [f"[{r.number}] {r.source}: {r.error}" for r in run.reports if r.failed]
    assert failed == []
    assert sum(r.status == "expected error" for r in run.reports) == expected_errors
    assert run.left == [], "the notebook cleans up after itself"
    assert run.violations == [], "every request and response matched the provider specs"
    text = json.dumps(run.nb)
    assert not [s for s in run.secrets if s in text], "no token or signing secret in the outputs"
    noise = [out.text for c in run.nb.cells if c.cell_type == "code" for out in c.outputs
             if out.output_type == "stream" and re.search(r"\w+Warning\b", out.text)]
    assert noise == [], "no warning lands in a notebook"


def test_notebooks_are_stored_clean_and_start_the_sandbox() -> None:
    found = sorted(p.stem for p in notebooks_dir().glob("*.ipynb"))
    assert found == list(NOTEBOOKS)
    for name in NOTEBOOKS:
        path = notebooks_dir() / f"{name}.ipynb"
        nb = nbformat.read(path, as_version=4)
        nbformat.validate(nb)
        assert nb.nbformat == 4 and nb.metadata.kernelspec.name == "python3"
        code = [c for c in nb.cells if c.cell_type == "code"]
        assert all(c.outputs == [] and c.execution_count is None for c in code), name
        assert code[0].source.splitlines()[:2] == ["%load_ext atlas_nb", "%atlas sandbox on"]
        assert nb.cells[0].cell_type == "markdown" and nb.cells[0].source.startswith("# ")
        assert path.read_text(encoding="utf-8").startswith('{\n "cells": [\n  {\n')


def test_quickstart_spawns_calls_through_the_verifier_and_terminates(runs: dict[str, Run]
                                                                     ) -> None:
    run = runs["01_quickstart"]
    _assert_clean_run(run)
    assert len(run.secrets) == 2, "the pod got a bearer token and a signing secret"
    spawn = run.outputs(run.cell("%%atlas spawn"))
    pod_id = re.search(r"spawned (\w+) \(atlas-\w+-\w+-quickstart-\w+\) on runpod, tracked",
                       spawn).group(1)  # type: ignore[union-attr]
    shown = run.outputs(run.cell("from atlas_nb.auth import sign_url"))
    assert f"pod {pod_id} is running at https://{pod_id}-8000.proxy.runpod.net" in shown
    assert re.search(r"signed URL, valid 10 min: https://\S+/v1/models\?atlas_v=1&atlas_exp="
                     r"\d+&atlas_sig=[\w-]+", shown)
    verifier = run.outputs(run.cell("tampered ="))
    assert [" ".join(line.split()) for line in verifier.splitlines() if line] == [
        "no credentials -> 401 missing_credentials",
        "wrong bearer token -> 401 bad_token",
        "pod.auth.headers() -> 200 meta-llama/Llama-3.1-8B-Instruct",
        "the signed URL -> 200 meta-llama/Llama-3.1-8B-Instruct",
        "a tampered signed URL -> 401 bad_signature",
    ]
    dashboard = run.outputs(run.cell("%atlas dashboard"))
    assert dashboard.startswith("Dashboard: 1 compute(s)") and pod_id in dashboard
    assert "application/vnd.jupyter.widget-view+json" in run.mimetypes()
    assert run.outputs(run.cell("%atlas terminate")).strip() == f"terminated {pod_id}"
    assert run.outputs(len(run.reports)).strip() == "tracked: 0, live pods on runpod: 0"


def test_gpu_prices_compares_clouds_and_draws_a_chart(runs: dict[str, Run]) -> None:
    run = runs["02_gpu_prices"]
    _assert_clean_run(run)
    summary = run.outputs(run.cell('prices.groupby("provider")'))
    assert all(p in summary for p in ("fly", "lambda_labs", "runpod", "vast"))
    h100 = run.outputs(run.cell("%atlas gpus --gpu h100"))
    assert "h100" in h100 and "per_gpu" in h100
    assert re.search(r"cheapest H100: \w+ h100_\w+ at \$\d+\.\d\d per GPU-hour, "
                     r"\d+\.\dx less than", run.outputs(run.cell("best, worst")))
    assert "image/png" in run.mimetypes()


def test_serverless_jobs_run_stream_cancel_and_tabulate(runs: dict[str, Run]) -> None:
    run = runs["03_serverless_jobs"]
    _assert_clean_run(run)
    assert "completed, output {'echo': {'prompt': 'Write a haiku about GPUs'" in run.outputs(
        run.cell('print(f"{echoed.id}'))
    assert run.outputs(run.cell("import time")).startswith(
        "in_queue -> in_progress -> completed\noutput {'slept': 0.6}")
    assert run.outputs(run.cell('print(" ".join(words.chunk))')).startswith(
        "atlas streams every chunk into a frame that grows while the job runs\n13 chunks")
    assert run.outputs(run.cell("time.sleep(0.2)")).strip().endswith(": cancelled")
    counts = dict(re.findall(r"^(\w+)\s+(\d+)$", run.outputs(run.cell("for i in range(12)")),
                             flags=re.M))
    assert counts == {"completed": "18", "cancelled": "1", "failed": "1"}
    assert "model weights not found" in run.outputs(run.cell('jobs[jobs.status == "failed"]'))


def test_fly_ops_discovers_deploys_with_the_fake_fly_and_tails_logs(runs: dict[str, Run]
                                                                    ) -> None:
    run = runs["04_fly_ops"]
    _assert_clean_run(run)
    apps = run.outputs(run.cell("import pandas as pd"))
    assert re.search(r"atlas-demo-api\s+api", apps) and re.search(
        r"atlas-demo-worker\s+worker", apps)
    deploy = run.outputs(run.cell("fake_fly ="))
    assert "Created app 'atlas-demo-api' in organization 'personal'" in deploy
    assert "Pushing image to registry.fly.io/atlas-demo-api   45%" in deploy  # \r updates
    assert re.search(r"Visit your newly deployed app at https://atlas-demo-api.fly.dev/\n"
                     r"deploy \w+: ok after", deploy)
    assert run.fly_apps == {"atlas-demo-api", "atlas-demo-worker"}
    tail = [t for t in run.outputs(run.cell("started = time.monotonic()")).splitlines() if t]
    assert len(tail) >= 10 and all(re.match(r" *\d+\.\ds (info|debug|warn|error) ", t)
                                   for t in tail)
    assert re.search(r"\d+ warning/error lines of \d+ received so far",
                     run.outputs(run.cell("time.sleep(2)")))
    assert re.search(r"deploy \w+: ok after", run.outputs(run.cell("print(deployment.wait")))


def test_orchestrator_reaps_idle_refuses_over_budget_and_reaps_orphans(runs: dict[str, Run]
                                                                      ) -> None:
    run = runs["05_orchestrator"]
    _assert_clean_run(run, expected_errors=1)
    events = [" ".join(line.split()[1:]) for line in
              run.outputs(run.cell("events = queue.Queue()")).splitlines() if line.strip()]
    assert events[0] == "status running" and events[-2:] == ["terminating idle",
                                                              "status terminated"]
    assert "touch() idle clock reset" in events
    refused = next(r for r in run.reports if r.status == "expected error")
    cell = [c for c in run.nb.cells if c.cell_type == "code"][refused.number - 1]
    assert EXPECTED_ERROR_TAG in cell.metadata.tags and "--gpu-count 8" in cell.source
    assert refused.error is not None and refused.error.startswith(
        "BudgetExceeded: 8x h100 on runpod")
    child = run.outputs(run.cell("import os"))
    orphan = re.search(r"died of signal 9; its pod (\w+) is", child).group(1)  # type: ignore[union-attr]
    dry_run = run.cell("%atlas reap --dry-run")
    assert f"would: terminate runpod:{orphan}" in run.outputs(dry_run)
    assert run.reports[dry_run].source == "%atlas reap"  # the next cell
    reaped = run.outputs(dry_run + 1)
    assert re.search(rf"did: terminate runpod:{orphan} .*owner dead .* ok", reaped)
    ledger = {re.sub(r"^atlas-\w+-\w+-|-\w+$", "", row[1]): row[2:]
              for row in run.rows(run.cell("left = demo.shutdown()"))}
    assert ledger["idle-demo"][:2] == ["terminated", "idle"]
    assert ledger["within-budget"][:2] == ["terminated", "shutdown"]
    assert ledger["left-behind"][0] == "terminated"
    assert ledger["left-behind"][1].startswith("reaped: owner dead")
    assert run.outputs(len(run.reports)).strip() == (
        "left behind by shutdown: 0; live pods on runpod: 0")
