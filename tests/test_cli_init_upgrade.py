"""``atlas-nb init`` and ``atlas-nb upgrade``: in process (``main([...])``) and as the real
console script, with a private config file, data dir and IPYTHONDIR per test."""

from __future__ import annotations

import argparse
import os
import re
import stat
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml

from atlas_nb import config
from atlas_nb.cli import build_parser, main
from atlas_nb.cli.init import CONFIG_TEMPLATE, EXTENSION_LINE
from atlas_nb.migrations import (
    CONFIG_MIGRATIONS,
    CONFIG_SCHEMA_VERSION,
    migrate_config,
    migrate_ledger,
)


@pytest.fixture
def ipython_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "ipython"
    monkeypatch.setenv("IPYTHONDIR", str(path))
    return path


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def _cli() -> list[str]:
    script = Path(sys.executable).with_name("atlas-nb")
    return [str(script)] if script.exists() else [sys.executable, "-m", "atlas_nb.cli"]


# -- init -------------------------------------------------------------------------------
def test_init_writes_private_commented_config_and_dirs(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # The platformdirs defaults (under this test's XDG dirs), as on a user's machine.
    monkeypatch.delenv("ATLAS_NB_CONFIG")
    monkeypatch.delenv("ATLAS_NB_DATA_DIR")
    config_file = config.config_path()
    data = Path(os.environ["XDG_DATA_HOME"]) / "atlas_nb"
    assert config_file == Path(os.environ["XDG_CONFIG_HOME"]) / "atlas_nb" / "config.yaml"
    assert not config_file.parent.exists() and not data.exists()
    assert main(["init"]) == 0
    out = capsys.readouterr().out
    assert config_file.read_text() == CONFIG_TEMPLATE
    assert _mode(config_file) == 0o600
    assert _mode(config_file.parent) == 0o700 and _mode(data) == 0o700
    assert config.data_dir() == data
    assert f"{config_file}: written with commented defaults" in out
    assert f"{config_file.parent}: created (mode 0700)" in out
    assert f"{data}: created (mode 0700)" in out
    # Only the schema version is live; everything else is commented out.
    assert config.load() == {"schema_version": CONFIG_SCHEMA_VERSION}


def test_init_never_writes_keys(monkeypatch: pytest.MonkeyPatch, config_file: Path) -> None:
    monkeypatch.setenv("RUNPOD_API_KEY", "rp-secret-value")
    config.set_session_key("vast", "vast-secret-value")
    assert main(["init"]) == 0
    text = config_file.read_text()
    assert "rp-secret-value" not in text and "vast-secret-value" not in text
    assert not re.search(r"^\s*[^#\s][^#]*api_key", text, re.MULTILINE)


def test_template_uncommented_gives_the_real_defaults(config_file: Path) -> None:
    from atlas_nb.orchestrator.settings import Settings, from_config

    head, _, body = CONFIG_TEMPLATE.partition("schema_version:")
    uncommented = re.sub(r"^# ?", "", body.split("\n", 1)[1], flags=re.MULTILINE)
    config_file.parent.mkdir(parents=True, exist_ok=True)
    config_file.write_text(head + "schema_version:" + body.split("\n", 1)[0] + "\n" + uncommented)
    data = config.load()
    assert set(data) == {"schema_version", "default_provider", "providers", "orchestrator"}
    assert from_config(data["orchestrator"]) == Settings()
    assert config.provider_setting("lambda_labs", "ssh_key_name") == "my-key"
    assert config.provider_setting("fly", "default_app") == "my-app"
    assert config.resolve_provider_name(None) == "runpod"


def test_init_is_idempotent(config_file: Path, capsys: pytest.CaptureFixture[str],
                            ipython_dir: Path) -> None:
    assert main(["init", "--ipython"]) == 0
    profile = ipython_dir / "profile_default"
    files = [config_file, profile / "ipython_config.py", profile / "ipython_kernel_config.py"]
    before = [f.read_bytes() for f in files]
    capsys.readouterr()
    assert main(["init", "--ipython"]) == 0
    out = capsys.readouterr().out
    assert [f.read_bytes() for f in files] == before
    assert "already the defaults" in out
    assert out.count("atlas_nb already registered") == 2
    assert "created" not in out and "written" not in out


def test_init_keeps_an_existing_config_unless_forced(
    config_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config_file.parent.mkdir(parents=True, exist_ok=True)
    mine = "default_provider: vast  # mine\n"
    config_file.write_text(mine)
    assert main(["init"]) == 0
    out = capsys.readouterr().out
    assert config_file.read_text() == mine
    assert "left unchanged (--force rewrites it" in out
    assert "at schema 0; run `atlas-nb upgrade`" in out

    assert main(["init", "--force"]) == 0
    assert config_file.read_text() == CONFIG_TEMPLATE
    backup = config_file.with_name("config.yaml.bak")
    assert backup.read_text() == mine and _mode(backup) == 0o600
    assert "the old one is config.yaml.bak" in capsys.readouterr().out

    config_file.write_text("default_provider: fly\n")
    assert main(["init", "--force"]) == 0  # a second backup never overwrites the first
    assert backup.read_text() == mine
    assert config_file.with_name("config.yaml.bak.1").read_text() == "default_provider: fly\n"


def test_init_tightens_its_own_dirs_but_not_a_chosen_one(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    shared = tmp_path / "shared"
    shared.mkdir(mode=0o755)
    os.chmod(shared, 0o755)
    monkeypatch.setenv("ATLAS_NB_CONFIG", str(shared / "atlas.yaml"))
    default_data = tmp_path / "xdg_data" / "atlas_nb"
    default_data.mkdir(parents=True)
    os.chmod(default_data, 0o755)
    monkeypatch.delenv("ATLAS_NB_DATA_DIR")
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg_data"))
    assert config.data_dir() == default_data  # what platformdirs picks on this OS

    assert main(["init"]) == 0
    out = capsys.readouterr().out
    assert _mode(shared) == 0o755, "a dir the user chose is not chmodded"
    assert f"{shared}: exists (mode 0755); other users can read it: chmod 700" in out
    assert _mode(default_data) == 0o700
    assert f"{default_data}: exists, tightened to 0700 (was 0755)" in out


def test_init_reports_failure_after_printing_what_it_did(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    monkeypatch.setenv("ATLAS_NB_DATA_DIR", str(blocker))
    assert main(["init"]) == 1
    captured = capsys.readouterr()
    assert "written with commented defaults" in captured.out
    assert "atlas-nb init:" in captured.err and "not a directory" in captured.err


# -- init --ipython ---------------------------------------------------------------------
def test_init_ipython_appends_to_existing_profile_files(ipython_dir: Path) -> None:
    profile = ipython_dir / "profile_default"
    profile.mkdir(parents=True)
    (profile / "ipython_config.py").write_text("c.InteractiveShell.colors = 'nocolor'")
    (profile / "ipython_kernel_config.py").write_text(
        "c = get_config()  # noqa\nc.InteractiveShellApp.extensions = ['atlas_nb']\n")
    assert main(["init", "--ipython"]) == 0
    shell = (profile / "ipython_config.py").read_text()
    assert shell.startswith("c.InteractiveShell.colors = 'nocolor'\n")
    assert shell.count(EXTENSION_LINE) == 1
    compile(shell, "ipython_config.py", "exec")
    kernel = (profile / "ipython_kernel_config.py").read_text()
    assert EXTENSION_LINE not in kernel, "already listed there: left alone"


def test_kernel_config_lists_the_extension(ipython_dir: Path) -> None:
    loader = pytest.importorskip("traitlets.config.loader")
    assert main(["init", "--ipython"]) == 0
    profile = ipython_dir / "profile_default"
    for name in ("ipython_config.py", "ipython_kernel_config.py"):
        cfg = loader.PyFileConfigLoader(name, path=str(profile)).load_config()
        assert cfg.InteractiveShellApp.extensions.get_value([]) == ["atlas_nb"], name


def test_ipython_loads_the_extension_after_init(ipython_dir: Path) -> None:
    pytest.importorskip("IPython")
    probe = ("ip = get_ipython(); print('atlas_nb' in ip.extension_manager.loaded, "
             "'atlas' in ip.magics_manager.magics['line'])")
    cmd = [sys.executable, "-m", "IPython", "--no-banner", "--colors=nocolor", "-c", probe]
    before = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    assert before.stdout.split() == ["False", "False"], before.stdout + before.stderr
    assert main(["init", "--ipython"]) == 0
    after = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    assert after.stdout.split() == ["True", "True"], after.stdout + after.stderr


# -- upgrade ----------------------------------------------------------------------------
def test_upgrade_records_the_version_keeping_comments(
    config_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config_file.parent.mkdir(parents=True, exist_ok=True)
    original = "# my settings\n\n# the usual\ndefault_provider: runpod  # keep me\n"
    config_file.write_text(original)
    os.chmod(config_file, 0o640)
    assert main(["upgrade", "--dry-run"]) == 0
    assert "schema 0 -> 1 (dry run: nothing written)" in capsys.readouterr().out
    assert config_file.read_text() == original

    assert main(["upgrade"]) == 0
    assert "schema 0 -> 1 (version recorded)" in capsys.readouterr().out
    assert config_file.read_text() == (
        "# my settings\n\n# the usual\nschema_version: 1\ndefault_provider: runpod  # keep me\n")
    assert _mode(config_file) == 0o640
    assert config.load() == {"schema_version": 1, "default_provider": "runpod"}

    assert main(["upgrade"]) == 0
    assert "schema 1, up to date" in capsys.readouterr().out
    assert not list(config_file.parent.glob("*.bak"))


def test_upgrade_without_config_or_ledger(config_file: Path,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["upgrade"]) == 0
    out = capsys.readouterr().out
    assert "no config file, nothing to migrate" in out
    assert "no ledger yet" in out
    assert not config_file.exists()


def test_upgrade_refuses_a_newer_config(config_file: Path,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    config_file.parent.mkdir(parents=True, exist_ok=True)
    config_file.write_text(f"schema_version: {CONFIG_SCHEMA_VERSION + 1}\n")
    assert main(["upgrade"]) == 1
    assert "newer than this atlas_nb understands" in capsys.readouterr().err
    assert config_file.read_text() == f"schema_version: {CONFIG_SCHEMA_VERSION + 1}\n"


@pytest.mark.parametrize("bad", ["schema_version: two\n", "schema_version: -1\n", "- a list\n",
                                 "key: [unclosed\n"])
def test_upgrade_explains_a_broken_config(config_file: Path, bad: str,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    config_file.parent.mkdir(parents=True, exist_ok=True)
    config_file.write_text(bad)
    assert main(["upgrade"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("atlas-nb upgrade: config"), err
    assert err[-1] == "\n" and err.count("\n") == 1, "one line, no traceback"
    assert config_file.read_text() == bad


def test_migrations_run_in_order_once_with_a_backup(config_file: Path) -> None:
    calls: list[int] = []

    def rename_lambda(data: dict[str, object]) -> dict[str, object]:
        calls.append(2)
        providers = dict(data.get("providers") or {})  # type: ignore[call-overload]
        if "lambda" in providers:
            providers["lambda_labs"] = providers.pop("lambda")
        return {**data, "providers": providers}

    def stamp(data: dict[str, object]) -> dict[str, object]:
        calls.append(3)
        return data

    migrations = [*CONFIG_MIGRATIONS, (2, rename_lambda), (3, stamp)]
    config_file.parent.mkdir(parents=True, exist_ok=True)
    original = "# old\nschema_version: 1\nproviders:\n  lambda: {ssh_key_name: k}\n"
    config_file.write_text(original)
    step = migrate_config(config_file, migrations=migrations)
    assert (step.before, step.after, calls) == (1, 3, [2, 3])
    assert "rewritten; backup config.yaml.v1.bak" in step.note
    assert config_file.with_name("config.yaml.v1.bak").read_text() == original
    assert config.load() == {"schema_version": 3,
                             "providers": {"lambda_labs": {"ssh_key_name": "k"}}}

    again = migrate_config(config_file, migrations=migrations)
    assert (again.before, again.after, again.changed, calls) == (3, 3, False, [2, 3])


def test_a_flow_mapping_config_is_rewritten_not_corrupted(config_file: Path) -> None:
    config_file.parent.mkdir(parents=True, exist_ok=True)
    config_file.write_text("{default_provider: mock}\n")
    step = migrate_config(config_file)
    assert step.after == CONFIG_SCHEMA_VERSION
    assert config.load() == {"schema_version": CONFIG_SCHEMA_VERSION, "default_provider": "mock"}


def test_ledger_hook_calls_the_ledgers_own_migration(tmp_path: Path) -> None:
    seen: list[str] = []
    versions = {"now": 1}

    def schema_version(path: Path) -> int:
        seen.append(f"version {path.name}")
        return versions["now"]

    def migrate(path: Path) -> int:
        seen.append(f"migrate {path.name}")
        versions["now"] = 2
        return 2

    fake = SimpleNamespace(FILENAME="led.sqlite3", schema_version=schema_version,
                           migrate=migrate)
    assert "no ledger yet" in migrate_ledger(tmp_path, ledger=fake).note
    (tmp_path / "led.sqlite3").touch()
    dry = migrate_ledger(tmp_path, ledger=fake, dry_run=True)
    assert (dry.before, dry.after, seen) == (1, 1, ["version led.sqlite3"])
    done = migrate_ledger(tmp_path, ledger=fake)
    assert (done.before, done.after, done.note) == (1, 2, "schema 1 -> 2")
    assert migrate_ledger(tmp_path, ledger=fake).note == "schema 2, up to date"


def test_ledger_hook_with_the_real_ledger(tmp_path: Path) -> None:
    import sqlite3

    from atlas_nb.orchestrator import ledger

    path = tmp_path / ledger.FILENAME
    old = sqlite3.connect(path)  # a ledger from before versioning: the tables, user_version 0
    old.executescript(ledger._SCHEMA)
    old.close()
    assert ledger.schema_version(path) == 0
    assert migrate_ledger(tmp_path, dry_run=True).after == 0  # dry run changes nothing
    step = migrate_ledger(tmp_path)
    assert step.path == path
    assert (step.before, step.after) == (0, ledger.SCHEMA_VERSION)
    assert ledger.schema_version(path) == ledger.SCHEMA_VERSION
    again = migrate_ledger(tmp_path)
    assert again.note == f"schema {ledger.SCHEMA_VERSION}, up to date"


def test_a_new_ledger_starts_at_the_current_schema(tmp_path: Path) -> None:
    from atlas_nb.orchestrator import ledger

    led = ledger.Ledger(tmp_path / ledger.FILENAME)
    assert led.entries() == []
    led.close()
    assert ledger.schema_version(tmp_path / ledger.FILENAME) == ledger.SCHEMA_VERSION


# -- the real console script ------------------------------------------------------------
def test_console_script_init_then_upgrade(config_file: Path, ipython_dir: Path) -> None:
    first = subprocess.run([*_cli(), "init", "--ipython"], capture_output=True, text=True,
                           timeout=60)
    assert first.returncode == 0, first.stderr
    assert f"{config_file}: written with commented defaults" in first.stdout
    assert (ipython_dir / "profile_default/ipython_kernel_config.py").read_text().count(
        EXTENSION_LINE) == 1
    up = subprocess.run([*_cli(), "upgrade"], capture_output=True, text=True, timeout=60)
    assert up.returncode == 0, up.stderr
    assert f"schema {CONFIG_SCHEMA_VERSION}, up to date" in up.stdout
    assert yaml.safe_load(config_file.read_text()) == {"schema_version": CONFIG_SCHEMA_VERSION}


def _subcommands() -> list[str]:
    parser = build_parser()
    (subs,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return sorted(subs.choices)


def test_init_and_upgrade_are_registered() -> None:
    assert {"init", "upgrade", "sandbox", "reap"} <= set(_subcommands())


@pytest.mark.parametrize("command", _subcommands())
def test_every_subcommand_has_help(command: str) -> None:
    run = subprocess.run([*_cli(), command, "--help"], capture_output=True, text=True,
                         timeout=60)
    assert run.returncode == 0, run.stderr
    assert run.stdout.startswith(f"usage: atlas-nb {command}")
    description = run.stdout.split("\n\n")[1]
    assert len(description.split()) >= 8, f"`atlas-nb {command} --help` says too little"


def test_concurrent_migrations_run_each_step_once(tmp_path: Path) -> None:
    # Kernels that start together all open the ledger: the ALTER TABLE of a step must
    # not run twice ("duplicate column name"), whoever gets there first.
    import sqlite3
    import threading

    from atlas_nb.orchestrator import ledger

    path = tmp_path / ledger.FILENAME
    old = sqlite3.connect(path)
    old.executescript(ledger._SCHEMA + "PRAGMA user_version = 1;")
    old.close()
    barrier = threading.Barrier(8)
    results: list[object] = []

    def migrate() -> None:
        barrier.wait()
        try:
            results.append(ledger.migrate(path))
        except Exception as exc:  # collected, asserted below
            results.append(exc)

    threads = [threading.Thread(target=migrate) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert results == [ledger.SCHEMA_VERSION] * 8
