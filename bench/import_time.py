"""What the first real atlas_nb call pays at import, against the dependencies it cannot avoid.

Baseline: ``import httpx, pydantic``. Headline subject: ``import atlas_nb.facade``, the
fully loaded import (the pydantic models, httpx, the providers' base and the facade): what
the first real call pays, since ``import atlas_nb`` serves its public names lazily
(PEP 562). ``import atlas_nb`` itself is the second row. For context, a third statement,
``import httpx; from pydantic import BaseModel, Field``, is the floor any SDK with
pydantic models pays: ``import pydantic`` is lazy, and the first model class pulls in
pydantic's model machinery (``pydantic.main``, ``pydantic.fields``, ``pydantic.types``...).

Each is timed in fresh interpreters, interleaved (startup, baseline, loaded, lazy, floor,
startup, ...), so machine noise hits all alike; the median of ``--runs`` runs is reported.
Three measures:

* ``-X importtime``: the summed cumulative time of the modules the statement imported,
  as CPython reports it (this is the one the target applies to);
* CPU time (user + sys) of ``python -c "<statement>"`` minus that of ``python -c pass``
  (least disturbed by other processes on a busy machine);
* wall clock of the same, minus that of ``python -c pass`` (what a user waits for).

Target: loaded / baseline <= 1.2. Exit status is 0 unless ``--check`` is given and the
ratio is over target (or a statement fails to import, which is always an error).

    python bench/import_time.py [--runs 15] [--check] [--target 1.2]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MARK = "@@atlas-bench@@"
STATEMENTS = {
    "startup": "pass",
    "baseline": "import httpx, pydantic",
    # The headline: what the first real call pays (models, httpx, providers, facade).
    "loaded": "import atlas_nb.facade",
    # `import atlas_nb` alone: public names are served lazily (PEP 562).
    "lazy": "import atlas_nb",
    # Context: defining any pydantic model loads pydantic's model machinery, which the
    # baseline's lazy `import pydantic` does not; atlas_nb's own share is loaded - floor.
    "floor": "import httpx; from pydantic import BaseModel, Field",
}
TARGET = 1.2
MEASURES = ("importtime", "cpu", "wall")


class ImportFailed(RuntimeError):
    """A statement did not run: there is nothing to measure."""


def _env() -> dict[str, str]:
    env = dict(os.environ)
    for var in ("PYTHONPROFILEIMPORTTIME", "PYTHONDONTWRITEBYTECODE", "PYTHONSTARTUP"):
        env.pop(var, None)  # they would skew one side or the other
    return env


def _run(python: str, args: list[str]) -> tuple[float, float, str]:
    """Wall seconds, CPU seconds and stderr of one fresh interpreter, run from the repo root."""
    start = time.perf_counter()
    proc = subprocess.Popen([python, *args], cwd=ROOT, env=_env(), stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    assert proc.stderr is not None
    err = proc.stderr.read()  # importtime output is a few KB: no deadlock risk
    _, status, usage = os.wait4(proc.pid, 0)  # the child's own rusage, not the whole tree's
    wall = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    proc.stderr.close()
    if proc.returncode != 0:
        raise ImportFailed(f"{' '.join(args)!r} failed:\n{err.strip()[-2000:]}")
    return wall, usage.ru_utime + usage.ru_stime, err


def importtime(python: str, statement: str) -> tuple[float, dict[str, float]]:
    """Seconds the statement spent importing, and each new module's self time (s)."""
    code = f"import sys; sys.stderr.write({MARK!r} + '\\n'); sys.stderr.flush(); {statement}"
    *_, err = _run(python, ["-X", "importtime", "-c", code])
    total, selves, after = 0.0, {}, False
    for line in err.splitlines():
        if line == MARK:
            after = True
            continue
        if not after or not line.startswith("import time:") or "imported package" in line:
            continue
        self_us, cumulative_us, name = _fields(line)
        selves[name.strip()] = int(self_us) / 1e6
        if not name.startswith("  "):  # top level: its cumulative time covers its children
            total += int(cumulative_us) / 1e6
    return total, selves


def _fields(line: str) -> tuple[str, str, str]:
    """``import time: <self> | <cumulative> | <indented name>`` -> self, cumulative, name."""
    head, cumulative, name = line.split("|", 2)
    return head.split(":", 1)[1].strip(), cumulative.strip(), name[1:]


def clock(python: str, statement: str) -> tuple[float, float]:
    """Wall and CPU seconds of a fresh ``python -c statement``."""
    wall, cpu, _ = _run(python, ["-c", statement])
    return wall, cpu


def measure(python: str, runs: int) -> dict[str, dict[str, list[float]]]:
    """Interleaved samples: {measure: {label: [seconds per run]}}, plus module self times."""
    out: dict[str, dict[str, list[float]]] = {m: {} for m in MEASURES}
    for label, statement in STATEMENTS.items():  # warm-up: compile .pyc, fill the disk cache
        importtime(python, statement)
        clock(python, statement)
        for m in MEASURES:
            out[m][label] = []
    modules: dict[str, dict[str, list[float]]] = {"floor": {}, "loaded": {}}
    for _ in range(runs):
        for label, statement in STATEMENTS.items():
            total, selves = importtime(python, statement)
            wall, cpu = clock(python, statement)
            out["importtime"][label].append(total)
            out["cpu"][label].append(cpu)
            out["wall"][label].append(wall)
            if label in modules:
                for name, s in selves.items():
                    modules[label].setdefault(name, []).append(s)
    # What atlas_nb itself adds on top of pydantic's model machinery: where to look first.
    out["modules"] = {name: samples for name, samples in modules["loaded"].items()
                      if name.strip() not in {n.strip() for n in modules["floor"]}}
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=15, help="interleaved runs (default 15)")
    parser.add_argument("--target", type=float, default=TARGET,
                        help=f"max loaded / baseline ratio (default {TARGET})")
    parser.add_argument("--check", action="store_true",
                        help="exit 1 when the ratio is over target")
    parser.add_argument("--python", default=sys.executable,
                        help="interpreter to measure (default: this one)")
    args = parser.parse_args(argv)

    try:
        data = measure(args.python, max(1, args.runs))
    except ImportFailed as exc:
        print(f"import_time: {exc}", file=sys.stderr)
        return 2
    med = {m: {k: statistics.median(v) for k, v in data[m].items()} for m in MEASURES}
    startup = {m: med[m].pop("startup") for m in MEASURES}
    # importtime counts only what the statement imported; the clocks include startup.
    net = {m: {k: max(v - (0.0 if m == "importtime" else startup[m]), 1e-9)
               for k, v in med[m].items()} for m in MEASURES}

    def ratios(top: str, bottom: str) -> str:
        return " ".join(f"{net[m][top] / net[m][bottom]:{w}.2f}x"
                        for m, w in zip(MEASURES, (13, 13, 14), strict=True))

    print(f"import time: atlas_nb fully loaded vs its unavoidable dependencies "
          f"(median of {args.runs} fresh interpreters each, interleaved)")
    print(f"python {args.python}; interpreter startup (subtracted from cpu and wall): "
          f"{startup['cpu'] * 1e3:.1f} ms cpu, {startup['wall'] * 1e3:.1f} ms wall")
    print()
    print(f"{'':9} {'statement':50} {'-X importtime':>14} {'cpu - startup':>14} "
          f"{'wall - startup':>15}")
    for label in ("baseline", "loaded", "lazy", "floor"):
        cells = " ".join(f"{net[m][label] * 1e3:{w}.1f} ms"
                         for m, w in zip(MEASURES, (11, 11, 12), strict=True))
        print(f"{label:9} {STATEMENTS[label]:50} {cells}")
    print(f"{'ratio':9} {'loaded / baseline':50} {ratios('loaded', 'baseline')}")
    print(f"{'ratio':9} {'lazy / baseline':50} {ratios('lazy', 'baseline')}")
    print(f"{'(info)':9} {'floor / baseline (pydantic model machinery)':50} "
          f"{ratios('floor', 'baseline')}")
    print(f"{'(info)':9} {'loaded / floor (atlas_nb own share)':50} {ratios('loaded', 'floor')}")
    headline = net["importtime"]["loaded"] / net["importtime"]["baseline"]
    verdict = "OK" if headline <= args.target else "OVER TARGET"
    print(f"{'target':9} {'loaded / baseline, -X importtime':50} "
          f"{'<= ' + format(args.target, '.2f'):>13}x  -> {verdict}")

    extra = sorted(((statistics.median(v), k) for k, v in data["modules"].items()),
                   reverse=True)[:8]
    if extra:
        print()
        print("slowest modules atlas_nb.facade adds beyond the floor (median self time):")
        for seconds, name in extra:
            print(f"  {seconds * 1e3:8.2f} ms  {name.strip()}")
    return 1 if args.check and headline > args.target else 0


if __name__ == "__main__":
    sys.exit(main())
