"""``discover_apps``: tomllib parsing, top-level ``app`` only, skips, symlink loops, warnings."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from atlas_nb import ValidationError
from atlas_nb.fly import FlyAppsWarning, discover_apps


def toml(folder: Path, text: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "fly.toml"
    path.write_text(text)
    return path


def test_root_and_children_sorted_by_name(tmp_path: Path) -> None:
    toml(tmp_path, 'app = "zeta-root"\nprimary_region = "iad"\n')
    toml(tmp_path / "api", "app = 'alpha-api'\n")
    toml(tmp_path / "web", 'app = "mid-web"  # a comment\n[build]\nimage = "x"\n')
    (tmp_path / "docs").mkdir()
    assert discover_apps(tmp_path) == [
        ("alpha-api", tmp_path / "api"),
        ("mid-web", tmp_path / "web"),
        ("zeta-root", tmp_path),
    ]


def test_only_the_top_level_app_key(tmp_path: Path) -> None:
    # The original SDK's regex picked `[processes] app = "..."` when the top-level key was absent.
    toml(tmp_path / "a", '[processes]\napp = "python -m server"\nworker = "celery"\n')
    toml(tmp_path / "b", 'kill_signal = "SIGINT"\n\n[processes]\napp = "run"\n\n'
                         'app_extra = 1\n')
    toml(tmp_path / "c", '[env]\n  app = "nope"\n')
    toml(tmp_path / "d", 'app = "real-app"\n[processes]\napp = "cmd"\n')
    with pytest.warns(FlyAppsWarning):
        assert discover_apps(tmp_path) == [("real-app", tmp_path / "d")]


def test_values_regexes_got_wrong(tmp_path: Path) -> None:
    toml(tmp_path / "a", 'app = "with-escape\\u0041"\n')
    toml(tmp_path / "b", '"app" = "quoted-key"\n')
    toml(tmp_path / "c", "app = '''multi'''\n")
    names = [name for name, _ in discover_apps(tmp_path)]
    assert names == ["multi", "quoted-key", "with-escapeA"]


def test_max_depth(tmp_path: Path) -> None:
    toml(tmp_path, 'app = "root"\n')
    toml(tmp_path / "services" / "api", 'app = "deep"\n')
    assert [n for n, _ in discover_apps(tmp_path, max_depth=0)] == ["root"]
    assert [n for n, _ in discover_apps(tmp_path)] == ["root"]
    assert [n for n, _ in discover_apps(tmp_path, max_depth=2)] == ["deep", "root"]
    for bad in (-1, 1.5, True, "1"):
        with pytest.raises(ValidationError, match="max_depth"):
            discover_apps(tmp_path, max_depth=bad)  # type: ignore[arg-type]


@pytest.mark.parametrize("skipped", [".git", ".venv", "node_modules", "vendor", "__pycache__",
                                     "venv", ".hidden"])
def test_hidden_and_vendored_folders_are_skipped(tmp_path: Path, skipped: str) -> None:
    toml(tmp_path / skipped, 'app = "should-not-appear"\n')
    toml(tmp_path / "app", 'app = "visible"\n')
    assert discover_apps(tmp_path, max_depth=3) == [("visible", tmp_path / "app")]


def test_symlink_loops_end(tmp_path: Path) -> None:
    toml(tmp_path / "svc", 'app = "svc"\n')
    os.symlink(tmp_path, tmp_path / "svc" / "loop")  # svc/loop -> root -> svc -> ...
    os.symlink(tmp_path / "svc", tmp_path / "alias")  # a second path to svc
    found = discover_apps(tmp_path, max_depth=50)
    assert [n for n, _ in found] == ["svc"]


def test_symlinked_app_folder_is_followed(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    toml(outside, 'app = "linked"\n')
    project = tmp_path / "project"
    project.mkdir()
    os.symlink(outside, project / "linked")
    assert discover_apps(project) == [("linked", project / "linked")]


def test_malformed_toml_is_skipped_with_a_warning(tmp_path: Path) -> None:
    toml(tmp_path / "bad", 'app = "unterminated\n')
    toml(tmp_path / "good", 'app = "good"\n')
    with pytest.warns(FlyAppsWarning, match="not valid TOML"):
        assert discover_apps(tmp_path) == [("good", tmp_path / "good")]


def test_missing_or_empty_app_is_skipped_with_a_warning(tmp_path: Path) -> None:
    toml(tmp_path / "a", 'primary_region = "iad"\n')
    toml(tmp_path / "b", 'app = ""\n')
    toml(tmp_path / "c", "app = 42\n")
    with pytest.warns(FlyAppsWarning) as record:
        assert discover_apps(tmp_path) == []
    assert len(record) == 3


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads any folder")
def test_unreadable_folder_is_skipped_with_a_warning(tmp_path: Path) -> None:
    locked = tmp_path / "locked"
    toml(locked / "inner", 'app = "hidden-by-perms"\n')
    toml(tmp_path / "ok", 'app = "ok"\n')
    locked.chmod(0)
    try:
        with pytest.warns(FlyAppsWarning, match="cannot list"):
            assert discover_apps(tmp_path, max_depth=2) == [("ok", tmp_path / "ok")]
    finally:
        locked.chmod(0o755)


def test_folder_the_os_refuses_is_skipped_with_a_warning(tmp_path: Path) -> None:
    # Root ignores permission bits, so make the OS itself refuse: a folder whose path is
    # longer than PATH_MAX (built level by level through directory fds) cannot be read.
    toml(tmp_path / "ok", 'app = "ok"\n')
    fd = os.open(tmp_path, os.O_RDONLY)
    try:
        for _ in range(20):  # 20 x 250 chars > 4096
            os.mkdir("d" * 250, dir_fd=fd)
            nxt = os.open("d" * 250, os.O_RDONLY, dir_fd=fd)
            os.close(fd)
            fd = nxt
    finally:
        os.close(fd)
    with pytest.warns(FlyAppsWarning, match="cannot read"):
        assert discover_apps(tmp_path, max_depth=30) == [("ok", tmp_path / "ok")]


def test_unreadable_toml_is_skipped_with_a_warning(tmp_path: Path) -> None:
    path = toml(tmp_path / "a", 'app = "a"\n')
    path.write_bytes(b'app = "\xff\xfe"\n')
    with pytest.warns(FlyAppsWarning):
        assert discover_apps(tmp_path) == []


def test_not_a_folder(tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match="not a folder"):
        discover_apps(tmp_path / "missing")
    (tmp_path / "file").write_text("x")
    with pytest.raises(ValidationError):
        discover_apps(tmp_path / "file")


def test_other_toml_names_are_ignored(tmp_path: Path) -> None:
    (tmp_path / "fly.staging.toml").write_text('app = "staging"\n')
    assert discover_apps(tmp_path) == []
