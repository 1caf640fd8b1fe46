"""Loading, unloading and reloading the extension; settings as traitlets; help."""

from __future__ import annotations

import threading

import pytest
from IPython.core.error import UsageError
from IPython.utils.capture import capture_output
from traitlets import TraitError

import atlas_nb as atlas
from atlas_nb.notebook import state
from atlas_nb.notebook.magics import AtlasMagics
from atlas_nb.notebook.widgets import _background


def test_load_registers_one_line_and_cell_magic(ip) -> None:
    magics = ip.magics_manager.magics
    assert "atlas" in magics["line"] and "atlas" in magics["cell"]
    assert isinstance(state(ip).magics, AtlasMagics)
    assert state(ip).magics in ip.configurables


def test_load_is_idempotent(ip) -> None:
    first = state(ip).magics
    atlas.load_ipython_extension(ip)  # a second direct call, e.g. from profile config
    ip.run_line_magic("load_ext", "atlas_nb")
    assert state(ip).magics is first
    assert sum(isinstance(c, AtlasMagics) for c in ip.configurables) == 1


def test_unload_removes_the_magic_and_reload_brings_it_back(ip) -> None:
    ip.run_line_magic("unload_ext", "atlas_nb")
    assert "atlas" not in ip.magics_manager.magics["line"]
    assert not any(isinstance(c, AtlasMagics) for c in ip.configurables)
    with pytest.raises(UsageError):
        ip.run_line_magic("atlas", "doctor")
    ip.run_line_magic("load_ext", "atlas_nb")
    assert ip.run_line_magic("atlas", "doctor").versions["atlas_nb"] == atlas.__version__
    ip.run_line_magic("reload_ext", "atlas_nb")
    assert "atlas" in ip.magics_manager.magics["line"]
    assert sum(isinstance(c, AtlasMagics) for c in ip.configurables) == 1


def test_unload_stops_background_threads_but_never_terminates(ip, orch) -> None:
    c = ip.run_line_magic("atlas", "spawn --provider mock --image img:1 --no-wait")
    blocker = threading.Event()
    worker = _background.spawn(lambda stop: stop.wait(30) or blocker.set(), name="probe")
    dash = ip.run_line_magic("atlas", "dashboard --refresh 0.05")
    assert worker.alive and dash._workers and dash._workers[0].alive
    ip.run_line_magic("unload_ext", "atlas_nb")
    assert not worker.alive and not any(w.alive for w in dash._workers)
    assert dash.closed
    assert _background.live_workers() == []
    assert [t.id for t in orch.tracked()] == [c.id]  # still tracked...
    assert atlas.get_compute(c.id, provider="mock").status == "running"  # ...and alive


def test_settings_are_traitlets_set_with_config(ip) -> None:
    ip.run_line_magic("config", 'AtlasMagics.default_provider = "mock"')
    ip.run_line_magic("config", "AtlasMagics.refresh_interval = 0.5")
    ip.run_line_magic("config", "AtlasMagics.idle_ttl = 5")
    magics = state(ip).magics
    assert (magics.default_provider, magics.refresh_interval, magics.idle_ttl) == ("mock", 0.5,
                                                                                   5.0)
    df = ip.run_line_magic("atlas", "gpus")  # no --provider: the trait decides
    assert set(df["provider"]) == {"mock"}
    with pytest.raises(TraitError):
        magics.refresh_interval = 0
    with pytest.raises(TraitError):
        magics.idle_ttl = -1


def test_config_trait_listing_shows_the_settings(ip) -> None:
    with capture_output() as cap:
        ip.run_line_magic("config", "AtlasMagics")
    for name in ("default_provider", "idle_ttl", "refresh_interval", "catalog_ttl"):
        assert name in cap.stdout


def test_question_mark_help_lists_every_subcommand(ip) -> None:
    with capture_output() as cap:
        ip.run_cell("%atlas?")
    from atlas_nb.notebook.commands import SUBCOMMANDS

    for sub in SUBCOMMANDS:
        assert sub in cap.stdout


def test_bare_atlas_and_help_print_the_overview(ip) -> None:
    with capture_output() as cap:
        assert ip.run_line_magic("atlas", "") is None
        assert ip.run_line_magic("atlas", "--help") is None
    assert cap.stdout.count("%atlas SUB --help") == 2


def test_sub_help_prints_flags_and_returns_nothing(ip) -> None:
    with capture_output() as cap:
        assert ip.run_line_magic("atlas", "spawn --help") is None
    for flag in ("--provider", "--gpu", "--gpu-count", "--image", "--port", "--auth",
                 "--idle-ttl", "--name", "--spot"):
        assert flag in cap.stdout
    with capture_output() as cap:
        assert ip.run_line_magic("atlas", "run -h") is None
    for flag in ("--provider", "--endpoint", "--sync", "--timeout", "--stream"):
        assert flag in cap.stdout
