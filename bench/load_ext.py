"""What ``%load_ext atlas_nb`` adds to a bare IPython shell.

Baseline: a fresh interpreter that builds a bare ``InteractiveShell``. Subject: the same,
then ``%load_ext atlas_nb``. Both run in fresh interpreters, interleaved, ``--runs``
times; medians are reported. Two measures:

* **in-process**: ``perf_counter`` around the shell's creation (baseline) and around
  ``%load_ext atlas_nb`` (what it adds);
* **process wall**: the whole interpreter run, subject minus baseline (imports included).

Target: ``%load_ext`` adds <= 100 ms (in-process median). For information, the row
``first call`` times the first ``%atlas gpus --provider mock`` after loading (it imports
pandas and the pydantic models, which loading deliberately does not).

    python bench/load_ext.py [--runs 15] [--check] [--target-ms 100]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TARGET_MS = 100.0

PROGRAM = """
import json, time
t0 = time.perf_counter()
from IPython.core.interactiveshell import InteractiveShell
ip = InteractiveShell.instance()
t1 = time.perf_counter()
out = {"shell": t1 - t0}
if MODE in ("subject", "first_call"):
    ip.run_line_magic("load_ext", "atlas_nb")
    t2 = time.perf_counter()
    out["load_ext"] = t2 - t1
    if MODE == "first_call":
        ip.run_line_magic("atlas", "gpus --provider mock")
        out["first_call"] = time.perf_counter() - t2
print("@@" + json.dumps(out))
"""


def _run(python: str, mode: str) -> tuple[float, dict[str, float]]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    env["IPYTHONDIR"] = str(Path(os.environ.get("TMPDIR", "/tmp")) / "atlas-bench-ipython")
    start = time.perf_counter()
    proc = subprocess.run([python, "-c", f"MODE = {mode!r}\n{PROGRAM}"], cwd=ROOT, env=env,
                          capture_output=True, text=True, check=False)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"load_ext bench: {mode} run failed:\n{proc.stderr[-2000:]}")
    line = next(x for x in proc.stdout.splitlines() if x.startswith("@@"))
    return wall, json.loads(line[2:])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=15)
    parser.add_argument("--target-ms", type=float, default=TARGET_MS)
    parser.add_argument("--check", action="store_true", help="exit 1 when over target")
    parser.add_argument("--python", default=sys.executable)
    args = parser.parse_args(argv)

    modes = ("baseline", "subject", "first_call")
    for mode in modes:  # warm-up: .pyc files and the disk cache
        _run(args.python, mode)
    walls: dict[str, list[float]] = {m: [] for m in modes}
    inner: dict[str, list[float]] = {"shell": [], "subject_shell": [], "load_ext": [],
                                     "first_call": []}
    for _ in range(max(1, args.runs)):
        for mode in modes:
            wall, data = _run(args.python, mode)
            walls[mode].append(wall)
            if mode == "baseline":
                inner["shell"].append(data["shell"])
            elif mode == "subject":
                inner["subject_shell"].append(data["shell"])
                inner["load_ext"].append(data["load_ext"])
            else:
                inner["first_call"].append(data["first_call"])
    med = {k: statistics.median(v) * 1e3 for k, v in inner.items()}
    wall = {k: statistics.median(v) * 1e3 for k, v in walls.items()}
    added_wall = wall["subject"] - wall["baseline"]
    ratio = (med["shell"] + med["load_ext"]) / med["shell"]

    print(f"%load_ext atlas_nb vs a bare IPython shell (median of {args.runs} fresh "
          "interpreters each, interleaved)")
    print()
    print(f"{'':28} {'in-process':>12} {'process wall':>14}")
    print(f"{'baseline  bare shell':28} {med['shell']:9.1f} ms {wall['baseline']:11.1f} ms")
    print(f"{'subject   shell + %load_ext':28} {med['subject_shell'] + med['load_ext']:9.1f} ms "
          f"{wall['subject']:11.1f} ms")
    print(f"{'added by %load_ext':28} {med['load_ext']:9.1f} ms {added_wall:11.1f} ms")
    print(f"{'ratio     (shell+load)/shell':28} {ratio:10.2f}x")
    print(f"{'(info)    first %atlas gpus':28} {med['first_call']:9.1f} ms "
          f"{wall['first_call']:11.1f} ms (pandas + models load here)")
    verdict = "OK" if med["load_ext"] <= args.target_ms else "OVER TARGET"
    print(f"{'target    added':28} <= {args.target_ms:.0f} ms  -> {verdict}")
    return 1 if args.check and med["load_ext"] > args.target_ms else 0


if __name__ == "__main__":
    sys.exit(main())
