"""config.py: where settings come from, in which order, and what a broken setup says."""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Any, ClassVar

import httpx
import platformdirs
import pytest

import atlas_nb
from atlas_nb import config, sandbox
from atlas_nb.providers import BaseProvider


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")


class TestConfigPath:
    def test_default_is_under_the_platform_user_config_dir(
        self, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
    ) -> None:
        monkeypatch.delenv("ATLAS_NB_CONFIG")
        monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
        expected = Path(platformdirs.user_config_dir("atlas_nb")) / "config.yaml"
        assert config.config_path() == expected
        assert tmp_path / "xdg" in expected.parents

    def test_default_file_is_read(self, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
        monkeypatch.delenv("ATLAS_NB_CONFIG")
        monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
        _write(Path(platformdirs.user_config_dir("atlas_nb")) / "config.yaml",
               "default_provider: vast\n")
        assert config.resolve_provider_name(None) == "vast"

    def test_env_var_overrides_the_path(self, monkeypatch: pytest.MonkeyPatch,
                                        tmp_path: Path) -> None:
        target = tmp_path / "elsewhere" / "atlas.yml"
        monkeypatch.setenv("ATLAS_NB_CONFIG", str(target))
        assert config.config_path() == target
        _write(target, "default_provider: fly\n")
        assert config.load() == {"default_provider": "fly"}

    def test_tilde_is_expanded(self, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
        monkeypatch.setenv("HOME", str(tmp_path))
        monkeypatch.setenv("ATLAS_NB_CONFIG", "~/cfg.yaml")
        assert config.config_path() == tmp_path / "cfg.yaml"


class TestLoad:
    def test_missing_file_is_empty(self) -> None:
        assert not config.config_path().exists()
        assert config.load() == {}

    def test_empty_file_is_empty(self, config_file: Path) -> None:
        _write(config_file, "")
        assert config.load() == {}

    def test_changes_are_picked_up(self, config_file: Path) -> None:
        for name in ("runpod", "vast", "fly", "mock"):  # same-size rewrites, back to back
            _write(config_file, f"default_provider: {name}\n")
            assert config.load()["default_provider"] == name

    def test_rewrite_within_one_clock_tick_is_picked_up(self, config_file: Path) -> None:
        # Coarse filesystem clocks (and `cp -p`, rsync -t) leave mtime unchanged across a
        # rewrite; the new content must still win.
        _write(config_file, "default_provider: runpod\n")
        assert config.load()["default_provider"] == "runpod"
        tick = config_file.stat().st_mtime_ns
        _write(config_file, "default_provider: vast__\n")
        os.utime(config_file, ns=(tick, tick))
        assert config.load()["default_provider"] == "vast__"

    @pytest.mark.parametrize("text", ["providers: [unclosed\n", "a: b: c\n", "\tkey: 1\n",
                                      "providers:\n  runpod: {api_key: 'x'\n"])
    def test_broken_yaml_is_a_clear_validation_error(self, config_file: Path,
                                                     text: str) -> None:
        _write(config_file, text)
        with pytest.raises(atlas_nb.ValidationError) as info:
            config.load()
        msg = str(info.value)
        assert str(config_file) in msg
        assert "not valid YAML" in msg
        assert "fix or delete it" in msg
        assert "\n" not in msg

    def test_unreadable_file_is_a_clear_validation_error(self, config_file: Path) -> None:
        config_file.mkdir(parents=True)  # a directory where the file should be
        with pytest.raises(atlas_nb.ValidationError, match=r"cannot be read.*fix or delete it"):
            config.load()

    def test_binary_file_is_a_clear_validation_error(self, config_file: Path) -> None:
        config_file.parent.mkdir(parents=True, exist_ok=True)
        config_file.write_bytes(b"\xff\xfe\x00garbage")
        with pytest.raises(atlas_nb.ValidationError, match=str(config_file)):
            config.load()

    @pytest.mark.parametrize("text", ["- runpod\n- vast\n", "just a string\n", "42\n"])
    def test_top_level_must_be_a_mapping(self, config_file: Path, text: str) -> None:
        _write(config_file, text)
        with pytest.raises(atlas_nb.ValidationError, match="mapping at the top level"):
            config.load()

    def test_broken_file_surfaces_through_the_facade(self, config_file: Path) -> None:
        _write(config_file, "default_provider: [\n")
        with pytest.raises(atlas_nb.ValidationError, match="not valid YAML"):
            atlas_nb.list_compute()

    def test_provider_setting(self, config_file: Path) -> None:
        _write(config_file, "providers:\n  lambda_labs: {ssh_key_name: my-key}\n  fly: oops\n")
        assert config.provider_setting("lambda_labs", "ssh_key_name") == "my-key"
        assert config.provider_setting("lambda_labs", "missing", "dflt") == "dflt"
        assert config.provider_setting("fly", "default_app") is None  # malformed section
        assert config.provider_setting("vast", "api_key") is None


class TestProviderName:
    def test_none_configured_says_how_to_set_one(self) -> None:
        with pytest.raises(atlas_nb.ValidationError) as info:
            config.resolve_provider_name(None)
        msg = str(info.value)
        assert "provider='runpod'" in msg
        assert "default_provider" in msg and "ATLAS_NB_PROVIDER" in msg

    def test_facade_without_provider_raises_the_same(self) -> None:
        with pytest.raises(atlas_nb.ValidationError, match="no provider given"):
            atlas_nb.list_compute()

    def test_env_var(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setenv("ATLAS_NB_PROVIDER", "vast")
        assert config.resolve_provider_name(None) == "vast"

    def test_config_file_beats_env(self, monkeypatch: pytest.MonkeyPatch,
                                   config_file: Path) -> None:
        monkeypatch.setenv("ATLAS_NB_PROVIDER", "vast")
        _write(config_file, "default_provider: lambda_labs\n")
        assert config.resolve_provider_name(None) == "lambda_labs"

    def test_per_call_beats_everything(self, monkeypatch: pytest.MonkeyPatch,
                                       config_file: Path) -> None:
        monkeypatch.setenv("ATLAS_NB_PROVIDER", "vast")
        _write(config_file, "default_provider: lambda_labs\n")
        assert config.resolve_provider_name("fly") == "fly"

    def test_configured_default_drives_the_facade(self, config_file: Path) -> None:
        _write(config_file, "default_provider: mock\n")
        c = atlas_nb.spawn_compute(image="img:1")
        assert c.provider == "mock"
        assert atlas_nb.get_compute(c.id).id == c.id


class TestApiKey:
    @pytest.mark.parametrize(("provider", "var"),
                             [("runpod", "RUNPOD_API_KEY"), ("fly", "FLY_API_TOKEN"),
                              ("fly", "FLY_ACCESS_TOKEN"), ("lambda_labs", "LAMBDA_LABS_API_KEY"),
                              ("lambda_labs", "LAMBDA_API_KEY"), ("vast", "VAST_API_KEY")])
    def test_env_vars(self, monkeypatch: pytest.MonkeyPatch, provider: str, var: str) -> None:
        assert config.resolve_api_key(provider) is None
        monkeypatch.setenv(var, "from-env")
        assert config.resolve_api_key(provider) == "from-env"
        assert config.key_source(provider) == f"env:{var}"

    def test_first_env_var_wins(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setenv("FLY_ACCESS_TOKEN", "second")
        monkeypatch.setenv("FLY_API_TOKEN", "first")
        assert config.resolve_api_key("fly") == "first"

    def test_order_per_call_then_config_then_env(self, monkeypatch: pytest.MonkeyPatch,
                                                 config_file: Path) -> None:
        monkeypatch.setenv("RUNPOD_API_KEY", "from-env")
        assert config.resolve_api_key("runpod") == "from-env"
        _write(config_file, "providers:\n  runpod: {api_key: from-config}\n")
        assert config.resolve_api_key("runpod") == "from-config"
        assert config.key_source("runpod") == "config"
        assert config.resolve_api_key("runpod", "per-call") == "per-call"

    def test_session_key_sits_between_sandbox_and_config(self, config_file: Path) -> None:
        _write(config_file, "providers:\n  vast: {api_key: from-config}\n")
        config.set_session_key("vast", "from-session")
        assert config.resolve_api_key("vast") == "from-session"
        assert config.key_source("vast") == "session"
        assert config.resolve_api_key("vast", "per-call") == "per-call"
        config.set_session_key("vast", None)
        assert config.resolve_api_key("vast") == "from-config"

    def test_no_key_anywhere(self) -> None:
        assert config.resolve_api_key("runpod") is None
        assert config.key_source("runpod") is None
        assert config.resolve_api_key("someone_else") is None

    def test_key_source_never_returns_the_key(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setenv("VAST_API_KEY", "sk-CANARY-1234567890")
        assert "CANARY" not in str(config.key_source("vast"))


class TestBaseUrl:
    DEFAULT = "https://rest.runpod.io/v1"

    def test_default(self) -> None:
        assert config.resolve_base_url("runpod", "rest", self.DEFAULT + "/") == self.DEFAULT

    def test_per_call_string_and_mapping(self) -> None:
        assert config.resolve_base_url("runpod", "rest", self.DEFAULT,
                                       "http://localhost:9/") == "http://localhost:9"
        urls = {"rest": "http://r.test", "graphql": "http://g.test"}
        assert config.resolve_base_url("runpod", "graphql", self.DEFAULT, urls) == "http://g.test"
        # a mapping that does not name this API falls through to the default
        assert config.resolve_base_url("runpod", "serverless", "https://api.runpod.ai/v2",
                                       urls) == "https://api.runpod.ai/v2"

    def test_config_file_string_and_mapping(self, config_file: Path) -> None:
        _write(config_file, "providers:\n  runpod: {base_url: 'http://cfg.test/'}\n"
                            "  vast:\n    base_url: {rest: 'http://vast-rest.test'}\n")
        assert config.resolve_base_url("runpod", "rest", self.DEFAULT) == "http://cfg.test"
        assert config.resolve_base_url("vast", "rest", "https://x") == "http://vast-rest.test"
        assert config.resolve_base_url("vast", "other", "https://x") == "https://x"
        assert config.resolve_base_url("runpod", "rest", self.DEFAULT,
                                       "http://call.test") == "http://call.test"


class TestSandbox:
    URL = "http://127.0.0.1:8765"

    def test_attach_overrides_base_url_and_key(self, monkeypatch: pytest.MonkeyPatch,
                                               config_file: Path) -> None:
        monkeypatch.setenv("RUNPOD_API_KEY", "from-env")
        _write(config_file, "providers:\n  runpod: {api_key: cfg, base_url: 'http://cfg'}\n")
        sandbox.attach(self.URL + "/")
        try:
            assert sandbox.active_url() == self.URL
            assert config.resolve_api_key("runpod") == "sandbox-runpod-key"
            assert config.key_source("runpod") == "sandbox"
            assert config.resolve_base_url("runpod", "rest", "https://rest.runpod.io/v1") == (
                f"{self.URL}/runpod/rest")
            assert config.resolve_base_url("lambda_labs", "rest", "https://cloud.lambda.ai") == (
                f"{self.URL}/lambda_labs/rest")
            # an explicit per-call value still wins over the sandbox
            assert config.resolve_api_key("runpod", "mine") == "mine"
            assert config.resolve_base_url("runpod", "rest", "x", "http://own") == "http://own"
        finally:
            sandbox.detach(self.URL)
        assert sandbox.active_url() is None
        assert config.resolve_api_key("runpod") == "cfg"
        assert config.resolve_base_url("runpod", "rest", "x") == "http://cfg"

    def test_env_var_attaches(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setenv("ATLAS_NB_SANDBOX", self.URL + "/")
        assert sandbox.active_url() == self.URL
        assert config.resolve_api_key("vast") == sandbox.sandbox_key("vast") == (
            "sandbox-vast-key")
        assert config.resolve_base_url("vast", "rest", "https://console.vast.ai") == (
            f"{self.URL}/vast/rest")

    def test_latest_attach_wins_and_detach_unwinds(self) -> None:
        sandbox.attach("http://a")
        sandbox.attach("http://b")
        assert sandbox.active_url() == "http://b"
        sandbox.detach()
        assert sandbox.active_url() == "http://a"
        sandbox.detach("http://a")
        assert sandbox.active_url() is None
        sandbox.detach()  # nothing attached: a no-op


def test_data_dir_is_private_and_overridable(monkeypatch: pytest.MonkeyPatch,
                                             tmp_path: Path) -> None:
    target = tmp_path / "ledger-home"
    monkeypatch.setenv("ATLAS_NB_DATA_DIR", str(target))
    assert config.data_dir() == target
    assert target.is_dir()
    assert stat.S_IMODE(target.stat().st_mode) == 0o700


class _Echo(BaseProvider):
    """A provider whose only request shows which key and base URL were resolved."""

    name: ClassVar[str] = "runpod"
    apis: ClassVar[dict[str, str]] = {"rest": "https://rest.runpod.io/v1"}

    def whoami(self) -> Any:
        return self.client("rest").request("GET", "/whoami")


def _echo_transport() -> httpx.MockTransport:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json={"auth": request.headers.get("authorization"),
                                         "url": str(request.url)})
    return httpx.MockTransport(handler)


def test_resolution_reaches_the_wire(monkeypatch: pytest.MonkeyPatch, config_file: Path) -> None:
    http = _echo_transport()
    monkeypatch.setenv("RUNPOD_API_KEY", "env-key")
    assert _Echo(http=http).whoami() == {"auth": "Bearer env-key",
                                         "url": "https://rest.runpod.io/v1/whoami"}
    _write(config_file, "providers:\n  runpod: {api_key: cfg-key, base_url: 'http://cfg.test'}\n")
    assert _Echo(http=http).whoami() == {"auth": "Bearer cfg-key",
                                         "url": "http://cfg.test/whoami"}
    assert _Echo(http=http, api_key="call-key", base_url="http://call.test").whoami() == {
        "auth": "Bearer call-key", "url": "http://call.test/whoami"}
    sandbox.attach("http://sandbox.test")
    assert _Echo(http=http).whoami() == {"auth": "Bearer sandbox-runpod-key",
                                         "url": "http://sandbox.test/runpod/rest/whoami"}


def test_missing_key_is_unauthorized_with_a_hint() -> None:
    with pytest.raises(atlas_nb.Unauthorized) as info:
        _Echo(http=_echo_transport()).whoami()
    err = info.value
    assert err.provider == "runpod"
    assert err.hint and "api_key=" in err.hint
