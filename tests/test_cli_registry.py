"""The command registry ``atlas-nb`` and ``%atlas`` share: a command's argparse definition
is registered once beside its handler and fits any parser."""

from __future__ import annotations

import argparse
import subprocess
import sys
from collections.abc import Callable

import pytest

from atlas_nb.cli.registry import Registry

Handler = Callable[[argparse.Namespace], int]


def _args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--n", type=int, default=1)


def test_commands_register_once_in_display_order() -> None:
    reg: Registry[Handler] = Registry("tool", order=("b", "a"))

    @reg.command("a", help="the a", args=_args)
    def a(args: argparse.Namespace) -> int:
        return int(args.n)

    @reg.command("c", help="the c")
    def c(args: argparse.Namespace) -> int:
        return 0

    @reg.command("b", help="the b", description="B in full.")
    def b(args: argparse.Namespace) -> int:
        return 0

    assert list(reg) == ["b", "a", "c"]  # listed first, then registration order
    assert reg["a"].handler is a and reg["a"].description == "the a"
    assert reg["b"].description == "B in full."
    assert reg.closest("cc") == "c" and reg.closest("zzz") is None
    with pytest.raises(ValueError, match="already registered"):
        reg.command("a", help="again")(a)


def test_add_subparsers_wires_each_handler() -> None:
    reg: Registry[Handler] = Registry("tool")

    @reg.command("count", help="count things", args=_args)
    def count(args: argparse.Namespace) -> int:
        return int(args.n)

    parser = argparse.ArgumentParser(prog="tool")
    reg.add_subparsers(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["count", "--n", "3"])
    assert args.func(args) == 3


def test_every_magic_subcommand_definition_fits_a_plain_parser() -> None:
    """What lets ``atlas-nb`` mirror the magics later: no magic-only parser is needed."""
    from atlas_nb.notebook.commands import SUBCOMMANDS

    parser = argparse.ArgumentParser(prog="atlas-nb")
    SUBCOMMANDS.add_subparsers(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["spawn", "--gpu", "h100", "--port", "8000/http", "-o", "c"])
    assert (args.gpu, args.port, args.out) == ("h100", ["8000/http"], "c")
    assert args.func is SUBCOMMANDS["spawn"].handler
    assert parser.parse_args(["reap", "--dry-run", "-p", "runpod"]).provider == ["runpod"]


def test_command_definitions_import_without_ipython_or_pandas() -> None:
    code = ("import sys, atlas_nb.cli, atlas_nb.notebook.commands\n"
            "heavy = [m for m in ('IPython', 'ipywidgets', 'pandas') if m in sys.modules]\n"
            "sys.exit(str(heavy) if heavy else 0)")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=60)
    assert run.returncode == 0, run.stderr
