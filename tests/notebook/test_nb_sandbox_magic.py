"""``%atlas sandbox on|off|status``: start, attach, detach, and end what lived in it."""

from __future__ import annotations

from typing import Any

from IPython.utils.capture import capture_output

from atlas_nb import sandbox
from atlas_nb.notebook import state
from atlas_nb.sandbox.server import Sandbox


def test_sandbox_on_starts_one_and_off_stops_it_and_its_tracked_computes(ip, orch: Any) -> None:
    assert sandbox.active_url() is None
    with capture_output() as cap:
        ip.run_line_magic("atlas", "sandbox on")
    sb = state(ip).sandbox
    assert sb is not None and sandbox.active_url() == sb.url
    assert f"started at {sb.url}" in cap.stderr
    c = ip.run_line_magic("atlas", "spawn --provider runpod --gpu rtx_4090 --image img:1")
    keep = ip.run_line_magic("atlas", "spawn --provider mock --image img:1")
    assert c.id in {p["id"] for p in sb.runpod.live_pods()}
    with capture_output() as cap:
        ip.run_line_magic("atlas", "sandbox on")
    assert "already on" in cap.stderr
    with capture_output() as cap:
        ip.run_line_magic("atlas", "sandbox status")
    assert "started by %atlas sandbox on" in cap.stderr
    with capture_output() as cap:
        ip.run_line_magic("atlas", "sandbox off")
    assert "terminated 1 tracked compute(s)" in cap.stderr
    assert c.id not in {p["id"] for p in sb.runpod.live_pods()}
    assert [t.id for t in orch.tracked()] == [keep.id]  # the mock one never lived there
    assert sandbox.active_url() is None and state(ip).sandbox is None
    with capture_output() as cap:
        ip.run_line_magic("atlas", "sandbox off")
    assert "already off" in cap.stderr


def test_sandbox_on_url_attaches_and_off_url_detaches(ip) -> None:
    with Sandbox(attach=False, provision_delay_s=0, start_delay_s=0) as other:
        with capture_output():
            ip.run_line_magic("atlas", f"sandbox on --url {other.url}/")
        assert sandbox.active_url() == other.url
        df = ip.run_line_magic("atlas", "gpus --provider runpod --limit 1")
        assert len(df) == 1
        with capture_output() as cap:
            ip.run_line_magic("atlas", "sandbox status")
        assert f"on at {other.url} (attached)" in cap.stderr
        with capture_output():
            ip.run_line_magic("atlas", f"sandbox off --url {other.url}")
        assert sandbox.active_url() is None


def test_sandbox_survives_reload_ext(ip) -> None:
    with capture_output():
        ip.run_line_magic("atlas", "sandbox on")
    sb = state(ip).sandbox
    ip.run_line_magic("reload_ext", "atlas_nb")
    assert state(ip).sandbox is sb and sandbox.active_url() == sb.url
    with capture_output():
        ip.run_line_magic("atlas", "sandbox off")
    assert sandbox.active_url() is None
