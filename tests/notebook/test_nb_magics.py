"""Every ``%atlas`` subcommand through a re-raising ``InteractiveShell``, against the sandbox
over real loopback sockets (plus the mock provider where no cloud is needed)."""

from __future__ import annotations

import os
import stat
from typing import Any

import pytest
import yaml
from IPython.core.error import UsageError
from IPython.core.interactiveshell import InteractiveShell
from IPython.utils.capture import capture_output

import atlas_nb as atlas
from atlas_nb import config
from atlas_nb.doctor import Report
from atlas_nb.errors import NotFound, ProviderError, ValidationError
from atlas_nb.models import Compute, ComputeRequest, Job
from atlas_nb.notebook import frames
from atlas_nb.notebook.call import Lines
from atlas_nb.notebook.catalog_cache import CACHE
from atlas_nb.notebook.joblog import JOBS
from atlas_nb.notebook.widgets.dashboard import Dashboard


@pytest.fixture(autouse=True)
def _fresh(box: Any) -> None:
    """Every test here talks to the module's sandbox, with empty caches and job log."""
    CACHE.clear()
    JOBS.clear()


def _catalog_hits(box: Any) -> int:
    return sum(n for route, n in box.stats()["routes"].items() if "catalog/gpus" in route)


# -- providers, login, doctor -----------------------------------------------------------
def test_providers_shows_capabilities_and_key_sources_never_keys(ip) -> None:
    df = ip.run_line_magic("atlas", "providers -o provs")
    assert list(df.columns) == ["provider", "key", "capabilities", "status"]
    rows = df.set_index("provider")
    assert rows.loc["runpod", "key"] == "sandbox"
    assert "serverless" in rows.loc["runpod", "capabilities"]
    assert rows.loc["mock", "key"] == "not needed"
    assert ip.user_ns["provs"] is df
    assert "sandbox-runpod-key" not in df.to_string()


def test_login_keeps_the_key_in_memory_and_never_echoes_it(ip, box: Any) -> None:
    from atlas_nb.notebook import state

    prompts: list[str] = []

    def fake_getpass(prompt: str) -> str:
        prompts.append(prompt)
        return "  rp-session-key-0001  "

    state(ip).magics.getpass = fake_getpass
    with capture_output() as cap:
        assert ip.run_line_magic("atlas", "login runpod") is None
    assert prompts == ["runpod API key (input hidden, Enter to cancel): "]
    assert "rp-session-key-0001" not in cap.stdout + cap.stderr
    assert "kept in memory" in cap.stderr
    box_url = atlas.sandbox.active_url()
    atlas.sandbox.detach(box_url)
    try:
        assert config.resolve_api_key("runpod") == "rp-session-key-0001"
        assert config.key_source("runpod") == "session"
        assert not config.config_path().exists()  # not saved without --save
    finally:
        atlas.sandbox.attach(box_url)
    with capture_output():
        ip.run_line_magic("atlas", "login runpod --forget")
    assert config.key_source("vast") != "session"


def test_login_save_writes_the_config_file_0600(ip) -> None:
    from atlas_nb.notebook import state

    state(ip).magics.getpass = lambda prompt: "vast-saved-key-0002"
    config.config_path().parent.mkdir(parents=True, exist_ok=True)
    config.config_path().write_text("default_provider: mock\n", encoding="utf-8")
    with capture_output() as cap:
        ip.run_line_magic("atlas", "login vast --save")
    assert "vast-saved-key-0002" not in cap.stdout + cap.stderr
    path = config.config_path()
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    assert data == {"default_provider": "mock", "providers": {"vast": {"api_key":
                                                                      "vast-saved-key-0002"}}}
    with capture_output():
        ip.run_line_magic("atlas", "login vast --forget --save")
    assert "api_key" not in yaml.safe_load(path.read_text(encoding="utf-8"))["providers"]["vast"]


def test_login_fly_also_feeds_the_fly_token_chain(ip) -> None:
    from atlas_nb.fly import tokens
    from atlas_nb.notebook import state

    state(ip).magics.getpass = lambda prompt: "fly-manual-token-0003"
    with capture_output():
        ip.run_line_magic("atlas", "login fly")
    try:
        assert tokens.get("any-app") == "fly-manual-token-0003"
    finally:
        with capture_output():
            ip.run_line_magic("atlas", "login fly --forget")
    assert not tokens.clear_manual(None)  # --forget removed it already


def test_panel_flags_open_the_panels(ip) -> None:
    from atlas_nb.notebook.widgets.job_panel import JobPanel
    from atlas_nb.notebook.widgets.spawn_panel import SpawnPanel

    spawn = ip.run_line_magic("atlas", "spawn --provider mock --panel")
    assert isinstance(spawn, SpawnPanel) and spawn.provider.value == "mock"
    job = ip.run_cell_magic("atlas", "run --provider mock -e echo --panel", '{"a": 1}')
    assert isinstance(job, JobPanel) and '"a": 1' in job.editor.value
    spawn.close()
    job.close()


def test_login_with_an_empty_key_changes_nothing(ip) -> None:
    from atlas_nb.notebook import state

    state(ip).magics.getpass = lambda prompt: ""
    with capture_output() as cap:
        ip.run_line_magic("atlas", "login fly")
    assert "nothing changed" in cap.stderr
    with pytest.raises(ValidationError, match="unknown provider"):
        ip.run_line_magic("atlas", "login nimbus")


def test_doctor_reports_versions_sandbox_and_key_sources(ip) -> None:
    report = ip.run_line_magic("atlas", "doctor")
    assert isinstance(report, Report)
    assert report.versions["ipywidgets"] and report.versions["pandas"]
    text = str(report)
    assert "sandbox: on at http://127.0.0.1:" in text
    assert "runpod key: present (sandbox)" in text
    assert "<table>" in report._repr_html_()


def test_doctor_flags_a_widget_version_mismatch() -> None:
    from atlas_nb.doctor import widget_mismatch

    assert widget_mismatch("8.1.5", "3.0.10", "4.0.10") == []
    problems = widget_mismatch("8.1.5", "1.1.0", "4.0.10")
    assert len(problems) == 1 and "jupyterlab_widgets 3.x" in problems[0]
    assert widget_mismatch("7.7.1", "3.0.0", None)[0].startswith("ipywidgets 7.7.1 needs")
    assert "not installed" in widget_mismatch(None, None, None)[0]


# -- gpus ---------------------------------------------------------------------------------
def test_gpus_is_one_price_table_sorted_by_price(ip) -> None:
    df = ip.run_line_magic("atlas", "gpus --provider runpod --provider mock")
    assert list(df.columns) == list(frames.GPU_COLUMNS)
    assert set(df["provider"]) == {"runpod", "mock"}
    prices = df["price_per_hour"].dropna().tolist()
    assert prices == sorted(prices) and len(prices) > 5


def test_gpus_filters(ip) -> None:
    df = ip.run_line_magic("atlas", "gpus --provider runpod --gpu h100 --max-price 2.5")
    assert len(df) > 0
    assert set(df["gpu"]) <= {"h100", "h100_sxm", "h100_pcie", "h100_nvl"}
    assert (df["price_per_hour"] <= 2.5).all()
    spot = ip.run_line_magic("atlas", "gpus --provider runpod --spot --max-price 0.5")
    assert len(spot) > 0 and spot["spot_price_per_hour"].notna().all()
    assert (spot["spot_price_per_hour"] <= 0.5).all()
    assert spot["spot_price_per_hour"].is_monotonic_increasing
    assert len(ip.run_line_magic("atlas", "gpus --provider runpod --limit 3")) == 3


def test_gpus_are_cached_until_refresh(ip, box: Any) -> None:
    ip.run_line_magic("atlas", "gpus --provider runpod")
    hits = _catalog_hits(box)
    ip.run_line_magic("atlas", "gpus --provider runpod --gpu l40s")
    assert _catalog_hits(box) == hits
    ip.run_line_magic("atlas", "gpus --provider runpod --refresh")
    assert _catalog_hits(box) > hits


def test_gpus_unknown_gpu_is_a_short_atlas_error(ip) -> None:
    with pytest.raises(ValidationError, match="unknown GPU 'h10O'"):
        ip.run_line_magic("atlas", "gpus --provider mock --gpu h10O")


def test_gpus_panel_returns_a_catalog_panel(ip) -> None:
    from atlas_nb.notebook.widgets.catalog_panel import CatalogPanel

    panel = ip.run_line_magic("atlas", "gpus --provider mock --panel")
    assert isinstance(panel, CatalogPanel)
    assert panel.join(10)
    assert set(panel.view["provider"]) == {"mock"}
    panel.close()


# -- spawn, ls, touch, stop, start, terminate -------------------------------------------
def test_spawn_with_flags_is_tracked_and_ready(ip, box: Any, orch: Any) -> None:
    c = ip.run_line_magic("atlas", "spawn --provider runpod --gpu rtx_4090 --image img:1 "
                                   "--port 8000/http --auth bearer --idle-ttl 10 --name demo "
                                   "-o pod")
    assert isinstance(c, Compute) and c.status == "running" and c.url
    assert ip.user_ns["pod"] is c
    assert c.auth is not None and c.auth.scheme == "bearer"
    (snap,) = orch.tracked()
    assert snap.id == c.id and snap.idle_ttl_ms == 600_000 and "demo" in snap.name
    assert box.runpod.pod_env(c.id)["ATLAS_PRESHARED_KEY"] == c.auth.token
    ip.run_line_magic("atlas", "terminate $pod")


@pytest.mark.parametrize("body", [
    "provider: runpod\ngpu: rtx_4090\nimage: img:2\nports: [8000/http]\n",
    '{"provider": "runpod", "gpu": "rtx_4090", "image": "img:2", "ports": ["8000/http"]}',
])
def test_spawn_from_a_yaml_or_json_cell(ip, box: Any, orch: Any, body: str) -> None:
    c = ip.run_cell_magic("atlas", "spawn --image img:3", body)  # flags win over the body
    assert c.image == "img:3" and c.provider == "runpod" and c.gpu_type == "rtx_4090"
    assert [t.id for t in orch.tracked()] == [c.id]
    ip.run_line_magic("atlas", f"terminate {c.id}")


def test_spawn_provider_precedence_flag_then_body_then_setting(ip, orch: Any) -> None:
    ip.run_line_magic("config", 'AtlasMagics.default_provider = "runpod"')
    c = ip.run_cell_magic("atlas", "spawn --no-wait", "provider: mock\nimage: img:1\n")
    assert c.provider == "mock"  # the cell's spec beats the default setting
    ip.run_line_magic("config", 'AtlasMagics.default_provider = "nimbus"')
    d = ip.run_cell_magic("atlas", "spawn --provider mock --no-wait", "provider: vast\n"
                                                                     "image: img:1\n")
    assert d.provider == "mock"  # the flag beats both
    with pytest.raises(ValidationError, match="unknown provider 'nimbus'"):
        ip.run_line_magic("atlas", "spawn --image img:1")


def test_spawn_from_a_var_body_dict_or_request(ip, orch: Any) -> None:
    ip.user_ns["spec"] = {"gpu": "h100", "image": "img:1", "spot": True}
    c = ip.run_cell_magic("atlas", "spawn --provider mock --no-wait", "$spec")
    assert c.gpu_type == "h100" and c.cost_per_hour == 1.99  # the mock's spot price
    ip.user_ns["req"] = ComputeRequest(gpu="a10", image="img:9")
    d = ip.run_cell_magic("atlas", "spawn --provider mock", "$req\n")
    assert d.gpu_type == "a10" and d.image == "img:9"
    assert {t.id for t in orch.tracked()} == {c.id, d.id}


def test_spawn_untracked_and_bad_fields(ip, orch: Any) -> None:
    c = ip.run_line_magic("atlas", "spawn --provider mock --image img:1 --untracked")
    assert orch.tracked() == []
    assert atlas.get_compute(c.id, provider="mock").status == "running"
    with pytest.raises(UsageError, match=r"argument --gpu-count: 0 is not allowed"):
        ip.run_line_magic("atlas", "spawn --provider mock --image img:1 --gpu-count 0")
    with pytest.raises(ValidationError, match="colour"):
        ip.run_cell_magic("atlas", "spawn --provider mock", "image: img:1\ncolour: blue\n")


def test_ls_lists_tracked_first_with_costs(ip, box: Any, orch: Any) -> None:
    tracked = ip.run_line_magic("atlas", "spawn --provider runpod --gpu rtx_4090 --image i:1")
    loose = ip.run_line_magic("atlas", "spawn --provider runpod --gpu rtx_4090 --image i:1 "
                                       "--untracked")
    df = ip.run_line_magic("atlas", "ls --provider runpod -o table")
    assert list(df.columns) == list(frames.LS_COLUMNS)
    assert df.iloc[0]["id"] == tracked.id and bool(df.iloc[0]["tracked"])
    row = df.set_index("id").loc[loose.id]
    assert not row["tracked"] and row["status"] == "running"
    assert df.set_index("id").loc[tracked.id, "$/h"] == pytest.approx(tracked.cost_per_hour)
    assert ip.user_ns["table"] is df
    only = ip.run_line_magic("atlas", "ls --tracked")
    assert only["id"].tolist() == [tracked.id]
    ip.run_line_magic("atlas", f"terminate {tracked.id} {loose.id} --provider runpod")
    assert {p["id"] for p in box.runpod.live_pods()} & {tracked.id, loose.id} == set()


def test_ls_provider_filters_tracked_rows_and_refuses_unknown_names(ip, orch: Any) -> None:
    on_mock = ip.run_line_magic("atlas", "spawn --provider mock --image img:1")
    on_runpod = ip.run_line_magic("atlas", "spawn --provider runpod --gpu rtx_4090 --image i:1")
    try:
        df = ip.run_line_magic("atlas", "ls --provider runpod")
        assert on_runpod.id in df["id"].tolist() and on_mock.id not in df["id"].tolist()
        assert set(df["provider"]) == {"runpod"}
        with pytest.raises(ValidationError, match=r"unknown provider 'runpd'; did you mean "
                                                  r"'runpod'\?"):
            ip.run_line_magic("atlas", "ls --provider runpd")
        with pytest.raises(ValidationError, match=r"unknown provider 'nosuch'"):
            ip.run_line_magic("atlas", "ls --provider nosuch")
    finally:
        ip.run_line_magic("atlas", f"terminate {on_runpod.id} --provider runpod")
        ip.run_line_magic("atlas", f"terminate {on_mock.id} --provider mock")


def test_touch_resets_the_idle_clock_of_tracked_computes_only(ip, orch: Any) -> None:
    ip.run_line_magic("atlas", "spawn --provider mock --image img:1 -o c")
    before = orch.tracked()[0].last_activity
    with capture_output() as cap:
        ip.run_line_magic("atlas", "touch $c")
    assert "idle clock reset" in cap.stderr
    assert orch.tracked()[0].last_activity >= before
    loose = atlas.spawn_compute(provider="mock", image="img:1")
    with pytest.raises(ValidationError, match="not tracked"):
        ip.run_line_magic("atlas", f"touch {loose.id} --provider mock")


def test_stop_and_start_on_the_sandbox(ip, box: Any) -> None:
    c = ip.run_line_magic("atlas", "spawn --provider runpod --gpu rtx_4090 --image i:1")
    stopped = ip.run_line_magic("atlas", "stop $c")
    assert stopped.status == "stopped"
    assert box.runpod.pods[c.id]["status"] == "EXITED"
    started = ip.run_line_magic("atlas", f"start {c.id}")
    assert started.status in ("provisioning", "running")
    ip.run_line_magic("atlas", f"terminate {c.id}")


def test_terminate_tracked_goes_through_the_orchestrator(ip, box: Any, orch: Any) -> None:
    c = ip.run_line_magic("atlas", "spawn --provider runpod --gpu rtx_4090 --image i:1")
    assert orch.tracked()
    ip.user_ns["cs"] = [c]
    ip.run_line_magic("atlas", "terminate $cs")
    assert orch.tracked() == []
    assert c.id not in {p["id"] for p in box.runpod.live_pods()}


def test_terminate_accepts_an_ls_dataframe(ip, orch: Any) -> None:
    ids = {ip.run_line_magic("atlas", "spawn --provider mock --image img:1").id for _ in range(2)}
    ip.run_line_magic("atlas", "ls --provider mock -o df")
    ip.run_line_magic("atlas", "terminate $df")
    assert orch.tracked() == []
    assert {atlas.get_compute(i, provider="mock").status for i in ids} == {"terminated"}


# -- run, stream, jobs --------------------------------------------------------------------
def test_run_async_returns_the_job_and_logs_it(ip) -> None:
    ip.user_ns["payload"] = {"prompt": "hi"}
    job = ip.run_cell_magic("atlas", "run --provider runpod --endpoint echo -o j", "$payload")
    assert isinstance(job, Job) and job.endpoint == "echo"
    assert ip.user_ns["j"] is job
    assert [e.job.id for e in JOBS.entries()] == [job.id]


def test_run_sync_waits_for_the_output(ip) -> None:
    job = ip.run_cell_magic("atlas", "run --provider runpod --endpoint echo --sync --timeout 30",
                            "prompt: hello\nn: 3\n")
    assert job.status == "completed"
    assert job.output == {"echo": {"prompt": "hello", "n": 3}}


def test_run_input_from_a_var_on_the_line(ip) -> None:
    ip.user_ns["x"] = {"k": [1, 2]}
    job = ip.run_line_magic("atlas", "run --provider runpod -e echo --sync $x")
    assert job.output == {"echo": {"k": [1, 2]}}
    with pytest.raises(Exception, match="either in the cell body or on the line"):
        ip.run_cell_magic("atlas", "run --provider runpod -e echo $x", '{"a": 1}')


def test_run_sync_failure_fails_the_cell_but_keeps_the_job(ip) -> None:
    with pytest.raises(ProviderError, match="ended failed: boom"):
        ip.run_cell_magic("atlas", "run --provider runpod -e fail --sync -o failed",
                          '{"message": "boom"}')
    assert isinstance(ip.user_ns["failed"], Job) and ip.user_ns["failed"].status == "failed"


def test_run_stream_builds_the_complete_frame(ip) -> None:
    df = ip.run_cell_magic("atlas", "run --provider runpod -e stream --stream -o out",
                           '{"text": "one two three four", "delay_s": 0.01}')
    assert df["chunk"].tolist() == ["one", "two", "three", "four"]
    assert df["seq"].tolist() == [0, 1, 2, 3]
    assert ip.user_ns["out"] is df
    (entry,) = JOBS.entries()
    assert entry.job.status == "completed" and entry.chunks == 4


def test_stream_an_existing_job_by_var_and_by_id(ip) -> None:
    job = ip.run_cell_magic("atlas", "run --provider runpod -e stream",
                            '{"text": "a b", "delay_s": 0.01}')
    ip.user_ns["job"] = job
    assert ip.run_line_magic("atlas", "stream $job")["chunk"].tolist() == ["a", "b"]
    again = ip.run_cell_magic("atlas", "run --provider runpod -e stream", '{"text": "c d e"}')
    assert len(ip.run_line_magic("atlas", f"stream {again.id}")) == 3
    with pytest.raises(Exception, match="not from this session"):
        ip.run_line_magic("atlas", "stream some-other-job")


def test_jobs_lists_this_sessions_jobs(ip) -> None:
    ip.run_cell_magic("atlas", "run --provider runpod -e echo --sync", '{"a": 1}')
    ip.run_cell_magic("atlas", "run --provider runpod -e echo", '{"b": 2}')
    df = ip.run_line_magic("atlas", "jobs -o js")
    assert list(df.columns) == list(frames.JOB_COLUMNS)
    assert len(df) == 2
    assert df.iloc[0]["status"] == "completed" and df.iloc[0]["output"] == {"echo": {"a": 1}}
    assert ip.user_ns["js"] is df


def test_run_usage_rules(ip) -> None:
    from IPython.core.error import UsageError

    with pytest.raises(UsageError, match="--timeout applies to --sync"):
        ip.run_line_magic("atlas", "run -e echo --timeout 3")
    with pytest.raises(UsageError, match="not both"):
        ip.run_line_magic("atlas", "run -e echo --sync --stream")


# -- dashboard, reap ---------------------------------------------------------------------
def test_dashboard_returns_the_live_panel(ip, orch: Any) -> None:
    c = ip.run_line_magic("atlas", "spawn --provider mock --image img:1")
    dash = ip.run_line_magic("atlas", "dashboard --allow-destructive-actions --refresh 30")
    assert isinstance(dash, Dashboard) and dash.allow_destructive_actions
    assert list(dash.rows) == [c.id] and dash.refresh_interval == 30
    dash.close()


def test_reap_dry_run_reports_and_stores_the_report(ip, box: Any, orch: Any) -> None:
    lines = ip.run_line_magic("atlas", "reap --dry-run --provider runpod -o report")
    assert isinstance(lines, Lines)
    assert "dry run: nothing was changed" in repr(lines)
    assert ip.user_ns["report"].dry_run


# -- errors, -o, silencing -----------------------------------------------------------------
def test_an_atlas_error_fails_the_cell_in_one_or_two_lines(box: Any) -> None:
    shell = InteractiveShell()  # the real one: it reports instead of re-raising
    try:
        shell.run_line_magic("load_ext", "atlas_nb")
        with capture_output() as cap:
            result = shell.run_cell("%atlas stop nosuchpod --provider runpod")
        assert not result.success
        assert isinstance(result.error_in_exec, NotFound)
        shown = [line for line in (cap.stdout + cap.stderr).splitlines() if line.strip()]
        assert 1 <= len(shown) <= 2 and "NotFound" in shown[0]
        with capture_output() as cap:
            result = shell.run_cell("%atlas gpus --max-price lots")
        assert not result.success
        assert cap.stderr.strip().startswith("UsageError: %atlas gpus:")
        assert len(cap.stderr.strip().splitlines()) == 1
    finally:
        shell.clear_instance()


def test_trailing_semicolon_silences_the_output(ip) -> None:
    out = ip.user_ns["Out"]
    with capture_output() as cap:
        ip.run_cell("%atlas gpus --provider mock", store_history=True)
    assert len(out) == 1 and "rtx_4090" in cap.stdout
    with capture_output() as cap:
        ip.run_cell("%atlas gpus --provider mock -o quiet;", store_history=True)
    assert len(out) == 1 and "rtx_4090" not in cap.stdout
    assert len(ip.user_ns["quiet"]) == 5


def test_assignment_form_returns_the_value(ip) -> None:
    ip.run_cell("df = %atlas gpus --provider mock --gpu h100")
    assert ip.user_ns["df"]["gpu"].tolist() == ["h100"]


def test_line_magic_sees_function_locals(ip) -> None:
    ip.run_cell("def f():\n    g = 'l40s'\n    r = %atlas gpus --provider mock --gpu $g\n"
                "    return r\ndf2 = f()\n")
    assert ip.user_ns["df2"]["gpu"].tolist() == ["l40s"]
