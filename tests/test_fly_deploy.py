"""``fly deploy`` streaming against fake ``fly`` executables on a per-test PATH."""

from __future__ import annotations

import os
import shutil
import stat
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from atlas_nb import Unsupported, ValidationError
from atlas_nb.fly import (
    DeployLine,
    DeployResult,
    start_deploy,
    stream_deploy,
    subscribe_deploy,
)
from atlas_nb.fly.deploy.output_lines import LineSplitter

FIXTURES = Path(__file__).parent / "fixtures" / "fly"


def install_fake(bin_dir: Path, script: str, name: str = "fly") -> Path:
    """Copy a fake flyctl script into ``bin_dir`` as ``name``, executable."""
    bin_dir.mkdir(parents=True, exist_ok=True)
    target = bin_dir / name
    shutil.copy(FIXTURES / script, target)
    target.chmod(target.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return target


def alive(pid: int) -> bool:
    """A process that exists and is not a zombie."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            state = fh.read().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state not in ("Z", "X")


def all_gone(pids: list[int], within: float = 10.0) -> bool:
    """True once none of ``pids`` is alive (a signal is delivered asynchronously, so poll)."""
    deadline = time.monotonic() + within
    while any(alive(pid) for pid in pids):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


class Project:
    def __init__(self, tmp_path: Path) -> None:
        self.root = tmp_path / "project"
        (self.root / "api").mkdir(parents=True)
        (self.root / "api" / "fly.toml").write_text('app = "api"\n')
        self.bin = tmp_path / "bin"
        self.record = tmp_path / "record.txt"
        self.pids = tmp_path / "pids.txt"
        self.env = {**os.environ, "FAKE_FLY_RECORD": str(self.record),
                    "FAKE_FLY_PIDS": str(self.pids)}

    def fake(self, script: str, name: str = "fly") -> None:
        install_fake(self.bin, script, name)

    def deploy(self, ticket: str, **kw: Any) -> DeployResult:
        kw.setdefault("path", str(self.bin))
        kw.setdefault("env", self.env)
        return stream_deploy(self.root, "api", ticket, **kw)

    def child_pids(self) -> list[int]:
        return [int(p) for p in self.pids.read_text().split()]


@pytest.fixture
def project(tmp_path: Path) -> Project:
    return Project(tmp_path)


class Events(list[Any]):
    def __call__(self, event: Any) -> None:
        self.append(event)

    @property
    def lines(self) -> list[str]:
        return [e.line for e in self if isinstance(e, DeployLine)]


def test_ok_deploy_streams_whole_lines_and_a_final_event(project: Project) -> None:
    project.fake("deploy_ok.sh")
    events = Events()
    result = project.deploy("t-ok", callback=events)
    assert result.ok and result.status == "ok" and result.exit_code == 0
    assert events.lines == [
        "==> Verifying app config",
        "Building image 10%", "Building image 60%", "Building image 100%",
        "hello world",  # written in two parts with a pause between: one whole line
        "windows line",
        "error on stderr",
        "Visit your newly deployed app",  # unterminated at EOF: still delivered, once
    ]
    progress = [e.progress for e in events if isinstance(e, DeployLine)]
    assert progress == [False, True, True, False, False, False, False, False]
    assert events[-1] == result  # the final event is the returned result
    assert [e.number for e in events if isinstance(e, DeployLine)] == list(range(1, 9))
    assert project.record.read_text().splitlines() == [
        "argv=deploy --remote-only", f"cwd={(project.root / 'api').resolve()}"]
    assert str(result).startswith("deploy t-ok: ok")


def test_failed_deploy_reports_the_exit_code(project: Project) -> None:
    project.fake("deploy_fail.sh")
    events = Events()
    result = project.deploy("t-fail", callback=events)
    assert (result.status, result.exit_code, result.ok) == ("failed", 3, False)
    assert "Error: failed to fetch an image or build from source" in result.output
    assert events[-1] == result and "exit code 3" in str(result)


def test_flyctl_is_used_when_fly_is_missing(project: Project) -> None:
    project.fake("deploy_ok.sh", name="flyctl")
    result = project.deploy("t-flyctl")
    assert result.ok and Path(result.command[0]).name == "flyctl"


def test_fly_is_preferred_over_flyctl(project: Project) -> None:
    project.fake("deploy_fail.sh", name="fly")
    project.fake("deploy_ok.sh", name="flyctl")
    assert Path(project.deploy("t-both").command[0]).name == "fly"


def test_path_from_env_is_searched(project: Project) -> None:
    project.fake("deploy_ok.sh")
    env = {**project.env, "PATH": f"{project.bin}{os.pathsep}{os.environ['PATH']}"}
    result = stream_deploy(project.root, "api", "t-env", env=env)
    assert result.ok


def test_no_cli_is_a_clear_error(project: Project) -> None:
    project.bin.mkdir()
    with pytest.raises(Unsupported, match="neither `fly` nor `flyctl`"):
        project.deploy("t-none")


def test_app_dir_must_stay_inside_the_project(project: Project, tmp_path: Path) -> None:
    project.fake("deploy_ok.sh")
    outside = tmp_path / "outside"
    outside.mkdir()
    os.symlink(outside, project.root / "sneaky")
    for bad in ("..", "../outside", str(outside), "sneaky", "api/../../outside"):
        with pytest.raises(ValidationError, match="outside project_path"):
            stream_deploy(project.root, bad, "t-escape", path=str(project.bin))
    with pytest.raises(ValidationError, match="does not exist"):
        stream_deploy(project.root, "missing", "t-escape", path=str(project.bin))
    with pytest.raises(ValidationError, match="does not exist"):
        stream_deploy(tmp_path / "nope", ".", "t-escape", path=str(project.bin))
    (project.root / "file.txt").write_text("x")
    with pytest.raises(ValidationError, match="not a folder"):
        stream_deploy(project.root, "file.txt", "t-escape", path=str(project.bin))
    assert not project.record.exists()  # nothing was run
    inside = stream_deploy(project.root, project.root / "api", "t-abs", path=str(project.bin),
                           env=project.env)
    assert inside.ok  # an absolute path inside the project is fine


def test_inactivity_timeout_kills_the_whole_group(project: Project) -> None:
    project.fake("deploy_hang.sh")
    events = Events()
    result = project.deploy("t-idle", callback=events, inactivity_timeout_s=0.5,
                            kill_grace_s=2)
    assert (result.status, result.timeout, result.exit_code) == ("timeout", "inactivity", None)
    assert events.lines == ["==> Building image with Depot"]
    assert events[-1] == result
    assert all_gone(project.child_pids())  # the leader and its background child


def test_absolute_cap_kills_a_chatty_deploy(project: Project) -> None:
    project.fake("deploy_chatty.sh")
    result = project.deploy("t-cap", inactivity_timeout_s=30, max_timeout_s=0.8)
    assert (result.status, result.timeout) == ("timeout", "max")
    assert result.lines_total > 1 and all(line.startswith("pushing layer") for line in
                                          result.output)
    assert all_gone(project.child_pids())


def test_sigterm_ignorers_get_sigkill(project: Project) -> None:
    project.fake("deploy_stubborn.sh")
    result = project.deploy("t-stubborn", inactivity_timeout_s=0.5, kill_grace_s=0.3)
    assert result.status == "timeout"
    assert all_gone(project.child_pids())


def test_stray_children_of_a_finished_leader_are_killed(project: Project) -> None:
    project.fake("deploy_orphan.sh")
    result = project.deploy("t-orphan", inactivity_timeout_s=30)
    assert result.ok and result.output == ("deployed",)
    assert all_gone(project.child_pids())


def test_retained_output_is_bounded(project: Project) -> None:
    project.fake("deploy_many.sh")
    events = Events()
    result = project.deploy("t-many", callback=events, max_lines=100,
                            env={**project.env, "FAKE_FLY_LINES": "3000"})
    assert result.lines_total == 3000 and result.lines_dropped == 2900
    assert result.output == tuple(f"line {i}" for i in range(2901, 3001))
    assert len(events.lines) == 3000  # subscribers still see every line live


def test_subscribers_before_during_and_after(project: Project) -> None:
    project.fake("deploy_fail.sh")
    early, late = Events(), Events()
    with subscribe_deploy("t-subs", early) as sub:
        result = project.deploy("t-subs")
        assert sub.result == result
    subscribe_deploy("t-subs", late)  # after the end: replay + the result at once
    assert early.lines == late.lines == ["==> Building image",
                                         "Error: failed to fetch an image or build from source"]
    assert early[-1] == late[-1] == result


def test_a_raising_subscriber_is_isolated(project: Project,
                                          caplog: pytest.LogCaptureFixture) -> None:
    project.fake("deploy_fail.sh")
    good = Events()

    def bad(event: Any) -> None:
        raise RuntimeError("subscriber bug")

    subscribe_deploy("t-iso", bad)
    result = project.deploy("t-iso", callback=good)
    assert good[-1] == result and len(good.lines) == 2
    assert any("subscriber raised" in r.getMessage() for r in caplog.records)


def test_background_deploy_and_cancel(project: Project) -> None:
    project.fake("deploy_hang.sh")
    seen = threading.Event()
    events = Events()

    def on_event(event: Any) -> None:
        events(event)
        seen.set()

    deployment = start_deploy(project.root, "api", "t-bg", callback=on_event,
                              path=str(project.bin), env=project.env, kill_grace_s=1)
    assert seen.wait(10)  # the first line arrived
    with pytest.raises(ValidationError, match="already"):
        stream_deploy(project.root, "api", "t-bg", path=str(project.bin))
    deployment.cancel()
    result = deployment.wait(10)
    assert result is not None and result.status == "cancelled"
    assert events[-1] == result
    assert all_gone(project.child_pids())
    project.fake("deploy_ok.sh")
    assert project.deploy("t-bg").ok  # a finished ticket can be reused


def test_ticket_reuse_starts_fresh(project: Project) -> None:
    project.fake("deploy_fail.sh")
    first = project.deploy("t-again")
    events = Events()
    project.fake("deploy_ok.sh")
    second = project.deploy("t-again", callback=events)
    assert first.status == "failed" and second.ok
    assert "==> Building image" not in events.lines  # nothing replayed from the old run


def test_bad_options(project: Project) -> None:
    project.fake("deploy_ok.sh")
    with pytest.raises(ValidationError):
        project.deploy("t-bad", inactivity_timeout_s=0)
    with pytest.raises(ValidationError, match="ticket_id"):
        project.deploy("")
    with pytest.raises(ValidationError, match="callable"):
        subscribe_deploy("t-bad", "nope")  # type: ignore[arg-type]


def test_token_is_passed_to_the_cli_env_only(project: Project, events: list[Any]) -> None:
    script = project.bin / "fly"
    project.bin.mkdir()
    script.write_text('#!/bin/bash\necho "token-set=${FLY_API_TOKEN:+yes}"\n')
    script.chmod(0o755)
    result = project.deploy("t-token", token="fo1_DEPLOYSECRET")
    assert result.output == ("token-set=yes",)
    assert "fo1_DEPLOYSECRET" not in repr(result)
    assert all("fo1_DEPLOYSECRET" not in str(d) for _e, d in events)
    finished = [d for e, d in events if e == "fly.deploy.finish"]
    assert finished and finished[0]["status"] == "ok" and finished[0]["ticket_id"] == "t-token"


# -- the line splitter ---------------------------------------------------------------------
def test_splitter_joins_partial_lines_and_handles_cr() -> None:
    s = LineSplitter()
    got = [*s.feed("hel"), *s.feed("lo\nwor"), *s.feed("ld\r"), *s.feed("\n50%\r100%\r"),
           *s.feed("\r\n\nend"), *s.flush()]
    assert got == [("hello", False), ("world", True), ("50%", True), ("100%", True),
                   ("end", False)]


def test_splitter_bounds_line_length() -> None:
    s = LineSplitter(max_chars=4)
    assert [*s.feed("abcdefghij"), *s.feed("k\n"), *s.flush()] == [
        ("abcd", False), ("efgh", False), ("ijk", False)]


def test_deploy_limits_are_one_value_or_its_keywords(project: Project) -> None:
    from atlas_nb.fly import DeployLimits, Deployment

    project.fake("deploy_chatty.sh")
    limits = DeployLimits(inactivity_timeout_s=30, max_timeout_s=0.8)
    result = project.deploy("t-limits", limits=limits)
    assert (result.status, result.timeout) == ("timeout", "max")
    assert all_gone(project.child_pids())
    deployment = Deployment(project.root, "api", path=str(project.bin), limits=limits,
                            max_lines=7)  # a keyword overrides one field of ``limits``
    assert deployment.limits == DeployLimits(30, 0.8, 5.0, 7)
    for bad in ({"inactivity_timeout_s": 0}, {"max_timeout_s": -1}, {"kill_grace_s": -1},
                {"max_lines": 0}):
        with pytest.raises(ValidationError):
            DeployLimits(**bad)
    with pytest.raises(TypeError, match="max_retries"):
        DeployLimits().with_options(max_retries=3)
