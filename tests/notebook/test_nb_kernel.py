"""``%atlas`` in a real ipykernel (through jupyter_client), as nbmake and papermill run it:
errors give an ``error`` reply with a one- or two-line traceback, panels send a widget view
plus static fallbacks, ``;`` silences, and an interrupt cancels the remote job."""

from __future__ import annotations

import os
import queue
import time
from collections.abc import Iterator
from typing import Any

import pytest

import atlas_nb as atlas

jupyter_client = pytest.importorskip("jupyter_client")


@pytest.fixture(scope="module")
def sb() -> Iterator[Any]:
    with atlas.sandbox.start(clouds=["runpod"], validate=False, provision_delay_s=0.0,
                             start_delay_s=0.0) as sandbox:
        yield sandbox


@pytest.fixture(scope="module")
def kernel(sb: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    home = tmp_path_factory.mktemp("kernel_home")
    env = {**os.environ, "ATLAS_NB_SANDBOX": sb.url, "JUPYTER_PLATFORM_DIRS": "1",
           "PYTHONWARNINGS": "ignore", "ATLAS_NB_CONFIG": str(home / "config.yaml"),
           "ATLAS_NB_DATA_DIR": str(home / "data"), "IPYTHONDIR": str(home / "ipython")}
    km = jupyter_client.KernelManager(kernel_name="python3")
    km.start_kernel(env=env)
    kc = km.client()
    kc.start_channels()
    kc.wait_for_ready(timeout=60)
    kc.km = km
    run(kc, "%load_ext atlas_nb")
    yield kc
    kc.stop_channels()
    km.shutdown_kernel(now=False)


def run(kc: Any, code: str, *, ok: bool = True) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    msgs: list[dict[str, Any]] = []
    reply = kc.execute_interactive(code, timeout=60, output_hook=msgs.append)
    if ok:
        assert reply["content"]["status"] == "ok", msgs
    return reply["content"], msgs


def test_an_atlas_error_is_an_error_reply_with_a_short_traceback(kernel: Any) -> None:
    reply, msgs = run(kernel, "%atlas stop nosuchpod --provider runpod", ok=False)
    assert reply["status"] == "error" and reply["ename"] == "NotFound"
    (error,) = [m["content"] for m in msgs if m["msg_type"] == "error"]
    assert 1 <= len(error["traceback"]) <= 2 and "nosuchpod" in error["traceback"][0]


def test_a_usage_error_is_an_error_reply_of_one_line(kernel: Any) -> None:
    reply, msgs = run(kernel, "%atlas gpus --max-price lots", ok=False)
    assert reply["status"] == "error" and reply["ename"] == "UsageError"
    text = "".join(m["content"].get("text", "") for m in msgs if m["msg_type"] == "stream")
    assert text.strip().startswith("UsageError: %atlas gpus:")
    assert len(text.strip().splitlines()) == 1


def test_a_panel_sends_a_widget_view_and_static_fallbacks(kernel: Any) -> None:
    _, msgs = run(kernel, "%atlas dashboard")
    (result,) = [m["content"] for m in msgs if m["msg_type"] == "execute_result"]
    data = result["data"]
    assert "application/vnd.jupyter.widget-view+json" in data
    assert data["text/plain"].startswith("Dashboard") and "<table" in data["text/html"]


def test_semicolon_silences_and_o_stores(kernel: Any) -> None:
    _, msgs = run(kernel, "%atlas gpus --provider runpod --limit 2 -o cheap;")
    assert not [m for m in msgs if m["msg_type"] == "execute_result"]
    _, msgs = run(kernel, "print(len(cheap))")
    assert [m["content"]["text"] for m in msgs if m["msg_type"] == "stream"] == ["2\n"]


def test_interrupting_a_sync_run_cancels_the_remote_job(kernel: Any, sb: Any) -> None:
    def polls() -> int:
        return sum(n for route, n in sb.stats()["routes"].items() if "/status/" in route)

    before = polls()
    msg_id = kernel.execute('%%atlas run --provider runpod -e slow --sync -o j\n{"seconds": 30}')
    deadline = time.monotonic() + 30
    while polls() == before and time.monotonic() < deadline:  # it is waiting on the job now
        time.sleep(0.02)
    assert polls() > before, "the magic never polled the job"
    kernel.km.interrupt_kernel()
    while True:
        try:
            reply = kernel.get_shell_msg(timeout=30)
        except queue.Empty:
            pytest.fail("no reply after the interrupt")
        if reply["parent_header"].get("msg_id") == msg_id:
            break
    assert reply["content"]["status"] == "error", reply["content"]
    assert reply["content"]["ename"] == "KeyboardInterrupt", reply["content"]
    for _ in range(20):  # ipykernel aborts requests that queued behind the failed cell
        reply, msgs = run(kernel, "print(j.id)", ok=False)
        if reply["status"] != "aborted":
            break
        time.sleep(0.1)
    assert reply["status"] == "ok", msgs
    job_id = "".join(m["content"].get("text", "") for m in msgs).strip()
    deadline = time.monotonic() + 10
    while sb.runpod.job("slow", job_id)["status"] != "CANCELLED" and time.monotonic() < deadline:
        time.sleep(0.05)
    assert sb.runpod.job("slow", job_id)["status"] == "CANCELLED", job_id


def test_a_trailing_comment_ends_a_magic_line_as_in_a_shell(kernel: Any) -> None:
    """README cells end magic lines with ``# comment``; a ``#`` inside quotes or a word stays."""
    _, msgs = run(kernel, "%atlas gpus --provider runpod --limit 2 -o two  # the cheapest two")
    assert not [m for m in msgs if m["msg_type"] == "error"]
    _, msgs = run(kernel, "%atlas gpus --provider runpod --limit 3 -o three;  # silenced too")
    assert not [m for m in msgs if m["msg_type"] == "execute_result"]
    _, msgs = run(kernel, "print(len(two), len(three))")
    assert [m["content"]["text"] for m in msgs if m["msg_type"] == "stream"] == ["2 3\n"]
    reply, msgs = run(kernel, '%atlas gpus --gpu "h100 # not a comment"', ok=False)
    text = "".join(m["content"].get("text", "") + "".join(m["content"].get("traceback", []))
                   for m in msgs if m["msg_type"] in ("stream", "error"))
    assert reply["status"] == "error" and "h100 # not a comment" in text, text


@pytest.mark.parametrize("line, fix", [
    ("%atlas gpus --limit -3", "argument --limit: -3 is not allowed; give 1 or more"),
    ("%atlas gpus --max-price -1", "argument --max-price: -1 is not allowed; give a price of 0"),
    ("%atlas ls --status runing", "argument --status: 'runing' is not known; did you mean "
                                  "'running'?"),
    ("%atlas logs my-app --level wrn", "argument --level: 'wrn' is not known; did you mean "
                                       "'warn'?"),
])
def test_bad_flag_values_fail_the_cell_in_one_line_with_the_fix(kernel: Any, line: str,
                                                                 fix: str) -> None:
    reply, msgs = run(kernel, line, ok=False)
    assert reply["status"] == "error" and reply["ename"] == "UsageError"
    text = "".join(m["content"].get("text", "") for m in msgs if m["msg_type"] == "stream")
    assert len(text.strip().splitlines()) == 1 and fix in text, text


def test_the_flag_value_lists_match_the_models_and_the_log_tail() -> None:
    from typing import get_args

    from atlas_nb.models import ComputeStatus
    from atlas_nb.notebook.commands.compute import STATUSES
    from atlas_nb.notebook.commands.fly import LOG_LEVELS
    from atlas_nb.notebook.widgets.log_tail import level_rank

    assert get_args(ComputeStatus) == STATUSES
    assert [level_rank(level) for level in LOG_LEVELS] == [0, 1, 2, 2, 3]
