"""The README's code samples run, and its tables match the code.

Every ```python block in README.md runs in a fresh interpreter with isolated config and
data dirs (so no real key or sandbox leaks in). A block right after the HTML comment
``<!-- not-run: reason -->`` is skipped, with the reason in the test id. The capability
and GPU tables are regenerated from the code and compared; on drift, the expected table
is printed so it can be pasted in (`python tests/test_readme.py` prints both).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
_BLOCK = re.compile(r"(<!-- not-run: (?P<why>[^>]*) -->\s*\n)?```python\n(?P<code>.*?)```", re.S)


def _blocks() -> list[tuple[int, str, str | None]]:
    text = README.read_text(encoding="utf-8")
    out = []
    for m in _BLOCK.finditer(text):
        line = text.count("\n", 0, m.start("code"))
        out.append((line, m.group("code"), m.group("why")))
    return out


BLOCKS = _blocks()


def test_the_readme_has_samples() -> None:
    assert len(BLOCKS) >= 10


@pytest.mark.parametrize(("line", "code", "why"), BLOCKS, ids=[f"line{b[0]}" for b in BLOCKS])
def test_sample_runs(line: int, code: str, why: str | None, tmp_path: Path) -> None:
    if why:
        pytest.skip(f"README line {line}: {why}")
    secret = ("_API_KEY", "_API_TOKEN", "_ACCESS_TOKEN")
    env = {k: v for k, v in os.environ.items()
           if not k.endswith(secret) and k != "ATLAS_NB_SANDBOX"}
    env.update(ATLAS_NB_CONFIG=str(tmp_path / "config.yaml"),
               ATLAS_NB_DATA_DIR=str(tmp_path / "data"), HOME=str(tmp_path), PYTHONPATH=str(ROOT))
    proc = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, f"README sample at line {line} failed:\n{proc.stderr[-3000:]}"


def capabilities_table() -> str:
    from atlas_nb import CAPABILITIES
    from atlas_nb.providers import provider_class

    caps = sorted(CAPABILITIES)
    lines = ["| provider | " + " | ".join(f"`{c}`" for c in caps) + " |",
             "|---|" + "---|" * len(caps)]
    for name in ("runpod", "lambda_labs", "vast", "fly", "mock"):
        have = provider_class(name)().capabilities()
        lines.append(f"| `{name}` | " + " | ".join("✓" if c in have else "" for c in caps) + " |")
    return "\n".join(lines)


def gpus_table() -> str:
    from atlas_nb.gpus import GPUS

    def ids(values: tuple[str, ...], fmt: str = "{}") -> str:
        return ", ".join(f"`{fmt.format(v)}`" for v in values) or "—"

    lines = ["| canonical | GPU | RunPod | Lambda | Vast | Fly |", "|---|---|---|---|---|---|"]
    for name, s in GPUS.items():
        lines.append(f"| `{name}` | {s.display} | {ids(s.runpod)} | "
                     f"{ids(s.lambda_labs, 'gpu_Nx_{}')} | {ids(s.vast)} | {ids(s.fly)} |")
    return "\n".join(lines)


@pytest.mark.parametrize("table", [capabilities_table, gpus_table], ids=lambda f: f.__name__)
def test_tables_match_the_code(table: object) -> None:
    expected = table()  # type: ignore[operator]
    assert expected in README.read_text(encoding="utf-8"), (
        f"README table out of date; replace it with:\n{expected}")


if __name__ == "__main__":
    print(capabilities_table(), gpus_table(), sep="\n\n")
