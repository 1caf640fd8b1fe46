"""The Fly token chain, its encrypted store, the flyctl Authorization rule, and a secrets canary."""

from __future__ import annotations

import json
import logging
import os
import shutil
import stat
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import httpx
import pytest

from atlas_nb import Unauthorized, ValidationError
from atlas_nb.fly import tokens
from atlas_nb.fly.auth_header import authorization, is_macaroon
from atlas_nb.fly.logs import LogsClient
from atlas_nb.fly.tokens import (
    AtlasConfigLayer,
    EnvLayer,
    FixedToken,
    FlyctlConfigLayer,
    ManualLayer,
    MintLayer,
    StoreLayer,
    TokenChain,
    TokenStore,
    TokenStoreWarning,
)
from atlas_nb.fly.tokens.flyctl_config import read_config_token
from atlas_nb.fly.tokens.mint import parse_duration

FIXTURES = Path(__file__).parent / "fixtures" / "fly"
CANARY = "fm2_CANARY0123456789abcdef"


def install_fake(bin_dir: Path, script: str, name: str = "fly") -> Path:
    """Copy a fake flyctl script into ``bin_dir`` as ``name``, executable."""
    bin_dir.mkdir(parents=True, exist_ok=True)
    target = bin_dir / name
    shutil.copy(FIXTURES / script, target)
    target.chmod(target.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return target


class Clock:
    def __init__(self, now: float = 1_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def chain(tmp_path: Path, *, env: Mapping[str, str] | None = None, script: str | None = None,
          token: str = "FlyV1 fm2_minted", clock: Clock | None = None, org: str | None = None,
          expiry: str = "24h", cli_timeout_s: float = 15.0,
          negative_backoff_s: tuple[float, float] = (5.0, 300.0)) -> TokenChain:
    """A chain fully isolated in ``tmp_path``: its own env, config file, store and fake CLI,
    built from the documented layers in the documented order."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    if script:
        install_fake(bin_dir, script)
    clock = clock or Clock()
    store = TokenStore(tmp_path / "store", clock=clock)
    cli_env = {**os.environ, "FAKE_FLY_TOKEN": token,
               "FAKE_FLY_RECORD": str(tmp_path / "record.txt"),
               "FAKE_FLY_PIDS": str(tmp_path / "pids.txt")}
    return TokenChain([
        ManualLayer(store),
        AtlasConfigLayer(),
        EnvLayer(env if env is not None else {}),
        StoreLayer(store, org=org),
        FlyctlConfigLayer(tmp_path / "fly" / "config.yml", clock=clock),
        MintLayer(store, org=org, expiry=expiry, path=str(bin_dir), env=cli_env,
                  timeout_s=cli_timeout_s, clock=clock),
    ], clock=clock, negative_backoff_s=negative_backoff_s)


def write_config(tmp_path: Path, token: str) -> Path:
    path = tmp_path / "fly" / "config.yml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"access_token: {token}\nlast_update_check: 2024-01-01T00:00:00Z\n")
    return path


def cli_calls(tmp_path: Path) -> list[str]:
    record = tmp_path / "record.txt"
    return record.read_text().splitlines() if record.exists() else []


# -- Authorization header ----------------------------------------------------------------
@pytest.mark.parametrize(("token", "header"), [
    ("FlyV1 fm2_abc,fm2_def", "FlyV1 fm2_abc,fm2_def"),
    ("fm2_abc", "FlyV1 fm2_abc"),
    ("fm1r_abc", "FlyV1 fm1r_abc"),
    ("fm1a_abc", "FlyV1 fm1a_abc"),
    ("fm2_abc,fm2_discharge", "FlyV1 fm2_abc,fm2_discharge"),
    ("fo1_personal", "Bearer fo1_personal"),
    ("some-oauth-token", "Bearer some-oauth-token"),
    ("Bearer fo1_x", "Bearer fo1_x"),
    ("Bearer fm2_abc", "FlyV1 fm2_abc"),  # a macaroon is never sent as Bearer
    ("  fm2_padded \n", "FlyV1 fm2_padded"),
])
def test_authorization_follows_flyctl(token: str, header: str) -> None:
    assert authorization(token) == header


def test_authorization_rejects_empty_without_echoing() -> None:
    with pytest.raises(ValidationError) as info:
        authorization("   ")
    assert "empty" in str(info.value)
    assert is_macaroon("fo1_x,fm2_y") and not is_macaroon("fo1_x")


# -- resolution order --------------------------------------------------------------------
def test_order_manual_then_env_then_config_then_cli(tmp_path: Path) -> None:
    env = {"FLY_API_TOKEN": "env-api", "FLY_ACCESS_TOKEN": "env-access"}
    write_config(tmp_path, "config-token")
    c = chain(tmp_path, env=env, script="tokens_ok.sh")
    c.set_manual("app", "manual-token")
    assert c.resolve("app") == ("manual-token", "manual")
    assert c.resolve("other") == ("env-api", "env:FLY_API_TOKEN")  # manual is per app
    c.clear_manual("app")
    assert c.resolve("app") == ("env-api", "env:FLY_API_TOKEN")
    del env["FLY_API_TOKEN"]
    assert c.resolve("app") == ("env-access", "env:FLY_ACCESS_TOKEN")
    del env["FLY_ACCESS_TOKEN"]
    assert c.resolve("app") == ("config-token", "config_file")
    assert c.resolve("app") == ("config-token", "memory")
    (tmp_path / "fly" / "config.yml").unlink()
    c.invalidate("app")
    assert c.resolve("app") == ("FlyV1 fm2_minted", "cli")
    assert c.resolve("app") == ("FlyV1 fm2_minted", "memory")
    assert cli_calls(tmp_path) == ["argv=tokens create readonly --expiry 24h --json"]


def test_manual_for_all_apps_and_env_beats_caches(tmp_path: Path) -> None:
    env: dict[str, str] = {}
    c = chain(tmp_path, env=env, script="tokens_ok.sh")
    assert c.resolve("a")[1] == "cli"  # now cached in memory and in the store
    env["FLY_API_TOKEN"] = "from-env"
    assert c.resolve("a") == ("from-env", "env:FLY_API_TOKEN")  # env wins over the caches
    c.set_manual(None, "for-everyone")
    assert c.get("a") == c.get("b") == "for-everyone"
    c.set_manual("b", "only-b")
    assert (c.get("a"), c.get("b")) == ("for-everyone", "only-b")


def test_durable_store_survives_a_new_process(tmp_path: Path) -> None:
    first = chain(tmp_path, script="tokens_ok.sh")
    assert first.resolve("app")[1] == "cli"
    second = chain(tmp_path, script="tokens_ok.sh")  # same store dir: a "restarted kernel"
    assert second.resolve("app") == ("FlyV1 fm2_minted", "store")
    assert len(cli_calls(tmp_path)) == 1  # not minted again


def test_config_yaml_is_parsed_as_yaml(tmp_path: Path) -> None:
    path = tmp_path / "c.yml"
    path.write_text('# comment\naccess_token: "FlyV1 fm2_quoted"  # trailing comment\n')
    assert read_config_token(path) == "FlyV1 fm2_quoted"
    path.write_text("access_token: |\n  fo1_block\n")
    assert read_config_token(path) == "fo1_block"
    path.write_text("nested:\n  access_token: nope\n")
    assert read_config_token(path) is None
    path.write_text("access_token: [unclosed\n")
    assert read_config_token(path) is None  # malformed YAML is a miss, not a crash
    assert read_config_token(tmp_path / "missing.yml") is None


def test_fly_config_dir_env_moves_the_config_file(tmp_path: Path) -> None:
    (tmp_path / "cfg").mkdir()
    (tmp_path / "cfg" / "config.yml").write_text("access_token: fo1_from_dir\n")
    layer = FlyctlConfigLayer(env={"FLY_CONFIG_DIR": str(tmp_path / "cfg")})
    c = TokenChain([StoreLayer(TokenStore(tmp_path / "s")), layer])
    assert layer.path == tmp_path / "cfg" / "config.yml"
    assert c.resolve() == ("fo1_from_dir", "config_file")


# -- CLI misses ------------------------------------------------------------------------------
def test_missing_binary_is_a_miss_with_a_helpful_error(tmp_path: Path) -> None:
    c = chain(tmp_path)  # empty bin dir: no fly, no flyctl
    with pytest.raises(Unauthorized) as info:
        c.get("app")
    msg = str(info.value)
    assert "FLY_API_TOKEN" in msg and "fly auth login" in msg and "set_manual" in msg


@pytest.mark.parametrize("script", ["tokens_fail.sh", "tokens_garbage.sh"])
def test_cli_failure_or_garbage_is_a_miss(tmp_path: Path, script: str) -> None:
    c = chain(tmp_path, script=script)
    with pytest.raises(Unauthorized):
        c.get("app")


def test_cli_timeout_is_a_miss_and_the_cli_is_killed(tmp_path: Path) -> None:
    c = chain(tmp_path, script="tokens_slow.sh", cli_timeout_s=0.5)
    with pytest.raises(Unauthorized):
        c.get("app")
    pid = int((tmp_path / "pids.txt").read_text().split()[0])
    assert not _alive(pid)


def test_flyctl_name_is_tried_after_fly(tmp_path: Path) -> None:
    c = chain(tmp_path)
    install_fake(tmp_path / "bin", "tokens_ok.sh", name="flyctl")
    assert c.resolve("app") == ("FlyV1 fm2_minted", "cli")


def test_org_and_expiry_are_passed(tmp_path: Path) -> None:
    c = chain(tmp_path, script="tokens_ok.sh", org="acme", expiry="2h")
    c.get("app")
    assert cli_calls(tmp_path) == ["argv=tokens create readonly acme --expiry 2h --json"]


# -- negative cache, invalidate, expiry ----------------------------------------------------
def test_failures_are_cached_with_backoff(tmp_path: Path) -> None:
    clock = Clock()
    c = chain(tmp_path, script="tokens_fail.sh", clock=clock, negative_backoff_s=(5, 20))
    for _ in range(3):
        with pytest.raises(Unauthorized):
            c.get("app")
    assert len(cli_calls(tmp_path)) == 1  # the 2nd and 3rd calls did not run the CLI
    clock.now += 5.1
    with pytest.raises(Unauthorized):
        c.get("app")
    assert len(cli_calls(tmp_path)) == 2
    clock.now += 5.1  # the backoff doubled to 10 s
    with pytest.raises(Unauthorized):
        c.get("app")
    assert len(cli_calls(tmp_path)) == 2
    clock.now += 5.0
    with pytest.raises(Unauthorized):
        c.get("app")
    assert len(cli_calls(tmp_path)) == 3
    c.set_manual("app", "fixed-by-hand")  # cheap layers are still consulted at once
    assert c.get("app") == "fixed-by-hand"


def test_negative_cache_is_reported_in_telemetry(tmp_path: Path, events: list[Any]) -> None:
    c = chain(tmp_path, script="tokens_fail.sh")
    for _ in range(2):
        with pytest.raises(Unauthorized):
            c.get("app")
    sources = [d["source"] for e, d in events if e == "fly.token.resolve"]
    assert sources == ["none", "negative_cache"]


def test_invalidate_clears_memory_and_disk(tmp_path: Path) -> None:
    c = chain(tmp_path, script="tokens_ok.sh")
    assert c.resolve("app")[1] == "cli"
    store = TokenStore(tmp_path / "store")
    assert store.names() == ["cli:default"]
    c.invalidate("app")
    assert store.names() == []
    assert c.resolve("app")[1] == "cli"  # minted again: nothing stale came back
    assert len(cli_calls(tmp_path)) == 2


def test_rejected_config_token_is_skipped_for_a_fresh_one(tmp_path: Path) -> None:
    write_config(tmp_path, "fo1_revoked")
    c = chain(tmp_path, script="tokens_ok.sh")
    assert c.get("app") == "fo1_revoked"
    c.invalidate("app", rejected="fo1_revoked")
    assert c.resolve("app") == ("FlyV1 fm2_minted", "cli")


def test_rejected_manual_token_still_wins(tmp_path: Path) -> None:
    c = chain(tmp_path, script="tokens_ok.sh")
    c.set_manual("app", "fo1_manual")
    c.invalidate("app", rejected="fo1_manual")
    assert c.get("app") == "fo1_manual"  # an explicit choice: the 401 surfaces instead


def test_minted_tokens_expire(tmp_path: Path) -> None:
    clock = Clock()
    c = chain(tmp_path, script="tokens_ok.sh", clock=clock, expiry="1h")
    assert c.resolve("app")[1] == "cli"
    clock.now += 1800
    assert c.resolve("app")[1] == "memory"
    clock.now += 1800 - 30  # inside the one-minute refresh lead: treated as expired
    assert c.resolve("app")[1] == "cli"
    assert len(cli_calls(tmp_path)) == 2


def test_parse_duration() -> None:
    assert parse_duration("24h") == 86400
    assert parse_duration("1h30m") == 5400
    assert parse_duration("90s") == 90
    for bad in ("", "24", "1d", "-5m", "0s", "h"):
        with pytest.raises(ValidationError):
            parse_duration(bad)


def test_module_level_functions_use_the_default_chain(tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tokens, "_default", None)
    tokens.configure(chain(tmp_path, script="tokens_ok.sh"))
    try:
        tokens.set_manual("app", "m-token")
        assert tokens.get("app") == "m-token"
        assert tokens.clear_manual("app") is True
        assert tokens.get("app") == "FlyV1 fm2_minted"
        tokens.invalidate("app")
        assert tokens.default_chain().resolve("app")[1] == "cli"
    finally:
        monkeypatch.setattr(tokens, "_default", None)


def test_persisted_manual_token(tmp_path: Path) -> None:
    c = chain(tmp_path)
    c.set_manual("app", "fo1_keep", persist=True)
    assert chain(tmp_path).get("app") == "fo1_keep"
    assert chain(tmp_path).clear_manual("app") is True
    with pytest.raises(Unauthorized):
        chain(tmp_path).get("app")


# -- the encrypted store -------------------------------------------------------------------
def test_store_is_encrypted_and_private(tmp_path: Path) -> None:
    store = TokenStore(tmp_path / "s")
    store.put("cli:default", CANARY, source="cli", expires_at=None)
    for path in (store.key_path, store.data_path):
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert CANARY.encode() not in store.data_path.read_bytes()
    assert stat.S_IMODE((tmp_path / "s").stat().st_mode) == 0o700
    assert store.get("cli:default") == {"token": CANARY, "source": "cli", "expires_at": None}


def test_store_defaults_to_the_user_data_dir() -> None:
    from atlas_nb.config import data_dir

    store = TokenStore()
    store.put("x", "t", source="cli", expires_at=None)
    assert store.data_path.parent == data_dir()


def test_store_loose_permissions_are_tightened(tmp_path: Path) -> None:
    store = TokenStore(tmp_path)
    store.put("a", "t", source="cli", expires_at=None)
    store.data_path.chmod(0o644)
    store.key_path.chmod(0o644)
    assert store.get("a") is not None
    assert stat.S_IMODE(store.data_path.stat().st_mode) == 0o600
    assert stat.S_IMODE(store.key_path.stat().st_mode) == 0o600


@pytest.mark.parametrize("damage", ["garbage", "lost_key", "bad_key", "wrong_layout"])
def test_corrupt_store_is_moved_aside_with_a_warning(tmp_path: Path, damage: str) -> None:
    store = TokenStore(tmp_path)
    store.put("a", "t", source="cli", expires_at=None)
    if damage == "garbage":
        store.data_path.write_bytes(b"not a fernet token")
    elif damage == "lost_key":
        store.key_path.unlink()
    elif damage == "bad_key":
        store.key_path.write_bytes(b"short")
    else:
        from cryptography.fernet import Fernet

        fernet = Fernet(store.key_path.read_bytes())
        store.data_path.write_bytes(fernet.encrypt(json.dumps({"version": 99}).encode()))
    with pytest.warns(TokenStoreWarning, match="moved aside"):
        assert store.get("a") is None
    store.put("b", "t2", source="cli", expires_at=None)  # usable again, no warning
    assert store.get("b") is not None


def test_corrupt_store_never_breaks_resolution(tmp_path: Path) -> None:
    c = chain(tmp_path, script="tokens_ok.sh")
    c.get("app")
    (tmp_path / "store" / TokenStore.DATA_FILE).write_bytes(b"\x00garbage")
    with pytest.warns(TokenStoreWarning):  # a new process reads the damaged store
        assert chain(tmp_path, script="tokens_ok.sh").resolve("app") == ("FlyV1 fm2_minted",
                                                                          "cli")
    assert TokenStore(tmp_path / "store").names() == ["cli:default"]  # rewritten, readable


def test_store_expiry(tmp_path: Path) -> None:
    clock = Clock()
    store = TokenStore(tmp_path, clock=clock)
    store.put("a", "t", source="cli", expires_at=clock.now + 10)
    assert store.get("a") is not None
    clock.now += 11
    assert store.get("a") is None
    assert store.names() == []


# -- secrets canary --------------------------------------------------------------------------
@pytest.mark.parametrize("source", ["cli", "env", "manual", "config"])
def test_canary_token_never_leaks(tmp_path: Path, events: list[Any], source: str,
                                  caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    seen: list[str] = []

    def server(request: httpx.Request) -> httpx.Response:
        auth = request.headers["authorization"]
        seen.append(auth)
        return httpx.Response(401, json={"error": f"token {auth} rejected ({CANARY})"})

    env = {"FLY_API_TOKEN": CANARY} if source == "env" else {}
    if source == "config":
        write_config(tmp_path, CANARY)
    c = chain(tmp_path, env=env, script="tokens_ok.sh" if source == "cli" else None,
              token=CANARY)
    if source == "manual":
        c.set_manual("app", CANARY, persist=True)
    assert c.get("app") == CANARY
    client = LogsClient(base_url="https://api.fly.test", http=httpx.MockTransport(server),
                        tokens=c)
    with pytest.raises(Unauthorized) as info:
        client.fetch("app")
    err = info.value
    texts = [str(err), repr(err), repr(err.raw), err.message, str(err.hint)]
    texts += [repr(c), repr(client), repr(FixedToken(CANARY)), repr(TokenStore(tmp_path / "s"))]
    texts += [json.dumps(d, default=str) for _e, d in events]
    texts += [r.getMessage() for r in caplog.records]
    store_file = tmp_path / "store" / TokenStore.DATA_FILE
    if store_file.exists():
        texts.append(store_file.read_bytes().decode("latin-1"))
    # Explicit tokens (env, manual) are retried once and refused again; a cached or config
    # token is skipped after the 401 and nothing else is left, so the server's 401 surfaces.
    retried = source in ("env", "manual")
    assert seen == [f"FlyV1 {CANARY}"] * (2 if retried else 1)
    assert err.status == 401
    leaked = [t for t in texts if CANARY in t]
    assert leaked == []


def _alive(pid: int) -> bool:
    """A process that exists and is not a zombie."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            state = fh.read().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state not in ("Z", "X")


def test_cli_reads_stdout_only(tmp_path: Path) -> None:
    # tokens_ok.sh prints an update notice on stderr: it must not become part of the token
    c = chain(tmp_path, script="tokens_ok.sh", token="FlyV1 fm2_clean")
    assert c.get() == "FlyV1 fm2_clean"


def test_wait_helper_sanity() -> None:
    assert _alive(os.getpid())
    assert time.time() > 0


def test_personal_config_token_is_never_copied_to_disk(tmp_path: Path) -> None:
    write_config(tmp_path, "fo1_personal_full_access")
    c = chain(tmp_path)
    assert c.resolve("app") == ("fo1_personal_full_access", "config_file")
    assert TokenStore(tmp_path / "store").names() == []


# -- the one chain: documented order, purposes, and its users -------------------------------
def test_each_layer_wins_over_every_later_one(tmp_path: Path, config_file: Path) -> None:
    """manual > session > atlas_nb config file > env > store > flyctl config.yml > CLI."""
    from atlas_nb import config

    env = {"FLY_API_TOKEN": "env-api"}
    c = chain(tmp_path, env=env, script="tokens_ok.sh")
    write_config(tmp_path, "flyctl-config")
    TokenStore(tmp_path / "store").put("manual:app", "stored", source="manual",
                                       expires_at=None)
    config_file.write_text("providers:\n  fly:\n    api_key: atlas-config\n")
    config.set_session_key("fly", "session-key")
    c.set_manual("app", "manual-token")
    seen: list[tuple[str, str]] = []
    for purpose in ("logs", "compute", "deploy"):
        assert c.resolve("app", purpose=purpose) == ("manual-token", "manual")
    c.clear_manual("app")  # (also deletes the saved manual:app entry; put it back)
    TokenStore(tmp_path / "store").put("manual:app", "stored", source="manual",
                                       expires_at=None)
    seen.append(c.resolve("app"))
    config.set_session_key("fly", None)
    seen.append(c.resolve("app"))
    config_file.write_text("providers:\n  fly: {}\n")
    seen.append(c.resolve("app"))
    del env["FLY_API_TOKEN"]
    seen.append(c.resolve("app"))
    TokenStore(tmp_path / "store").delete("manual:app")
    seen.append(c.resolve("app"))
    (tmp_path / "fly" / "config.yml").unlink()
    c.invalidate("app")
    seen.append(c.resolve("app"))
    assert seen == [("session-key", "session"), ("atlas-config", "atlas_config"),
                    ("env-api", "env:FLY_API_TOKEN"), ("stored", "store"),
                    ("flyctl-config", "config_file"), ("FlyV1 fm2_minted", "cli")]


def test_a_minted_readonly_token_never_serves_compute_or_deploy(tmp_path: Path) -> None:
    c = chain(tmp_path, script="tokens_ok.sh")
    assert c.resolve("app") == ("FlyV1 fm2_minted", "cli")  # logs: minted, remembered, stored
    for purpose in ("compute", "deploy"):
        with pytest.raises(Unauthorized, match=f"that can {purpose}"):
            c.get("app", purpose=purpose)  # not from memory, the store, nor a new mint
    assert len(cli_calls(tmp_path)) == 1
    assert chain(tmp_path).resolve("app") == ("FlyV1 fm2_minted", "store")  # logs still can
    with pytest.raises(Unauthorized):
        chain(tmp_path).get("app", purpose="compute")


def test_the_chain_refuses_a_layer_answering_with_a_token_that_cannot_serve() -> None:
    class Sloppy:  # a test layer that ignores the purpose it is asked for
        name = "sloppy"

        def resolve(self, app: str | None, purpose: tokens.Purpose) -> tokens.Token:
            return tokens.Token("fm2_readonly", "sloppy", purposes=tokens.LOGS_ONLY)

    c = TokenChain([Sloppy(), EnvLayer({"FLY_API_TOKEN": "fo1_full"})])
    assert c.resolve("app", purpose="logs") == ("fm2_readonly", "sloppy")
    assert c.resolve("app", purpose="compute") == ("fo1_full", "env:FLY_API_TOKEN")


def test_a_chain_is_built_from_any_layers() -> None:
    class Fixed:
        name = "fixed"

        def resolve(self, app: str | None, purpose: tokens.Purpose) -> tokens.Token | None:
            return tokens.Token(f"tok-{app}", "fixed") if app == "mine" else None

    c = TokenChain([Fixed()])
    assert c.resolve("mine", purpose="compute") == ("tok-mine", "fixed")
    with pytest.raises(Unauthorized):
        c.get("other")
    with pytest.raises(ValidationError, match="ManualLayer"):
        c.set_manual("mine", "x")
    assert "tok-mine" not in repr(tokens.Token("tok-mine", "fixed"))


@pytest.fixture
def default_chain(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> TokenChain:
    """The process-wide chain, isolated in ``tmp_path`` (a fake CLI that can mint)."""
    c = chain(tmp_path, env=os.environ, script="tokens_ok.sh", token="fm2_readonly_minted")
    monkeypatch.setattr(tokens, "_default", c)
    return c


def _machines_auth(**provider_kw: Any) -> str | None:
    """The Authorization header the Fly provider sends for one ``get_compute``."""
    from atlas_nb import NotFound
    from atlas_nb.providers.fly import Fly

    sent: list[str] = []

    def server(request: httpx.Request) -> httpx.Response:
        sent.append(request.headers["authorization"])
        return httpx.Response(404, json={"error": "machine not found"})

    with pytest.raises(NotFound):
        Fly("my-app", base_url="https://machines.test", http=httpx.MockTransport(server),
            **provider_kw).get_compute("my-app/abc")
    return sent[0] if sent else None


def test_machines_provider_honours_the_atlas_config_file(default_chain: TokenChain,
                                                          config_file: Path) -> None:
    config_file.write_text("providers:\n  fly:\n    api_key: fo1_from_config_file\n")
    assert _machines_auth() == "Bearer fo1_from_config_file"


def test_machines_provider_honours_the_store(default_chain: TokenChain, tmp_path: Path) -> None:
    default_chain.set_manual(None, "fm2_saved_for_compute", persist=True)
    restarted = chain(tmp_path, script="tokens_ok.sh")  # a new process: only the store has it
    tokens.configure(restarted)
    assert restarted.resolve("my-app", purpose="compute") == ("fm2_saved_for_compute", "store")
    assert _machines_auth() == "FlyV1 fm2_saved_for_compute"


def test_machines_provider_honours_flyctl_config_and_manual(default_chain: TokenChain,
                                                            tmp_path: Path) -> None:
    write_config(tmp_path, "fo1_flyctl_login")
    assert _machines_auth() == "Bearer fo1_flyctl_login"
    default_chain.set_manual("my-app", "fm2_manual")
    assert _machines_auth() == "FlyV1 fm2_manual"
    assert _machines_auth(api_key="fo1_per_call") == "Bearer fo1_per_call"  # per call wins


def test_machines_provider_never_uses_a_minted_readonly_token(default_chain: TokenChain,
                                                              tmp_path: Path) -> None:
    assert default_chain.get("my-app") == "fm2_readonly_minted"  # logs minted one
    from atlas_nb.providers.fly import Fly

    with pytest.raises(Unauthorized, match="no API key for fly") as err:
        Fly("my-app", base_url="https://machines.test").get_compute("my-app/abc")
    assert "FLY_API_TOKEN" in (err.value.hint or "")
    assert len(cli_calls(tmp_path)) == 1  # compute did not mint either


def test_deploys_resolve_through_the_chain(default_chain: TokenChain, tmp_path: Path) -> None:
    from atlas_nb.fly import stream_deploy

    project = tmp_path / "project"
    (project / "api").mkdir(parents=True)
    (project / "api" / "fly.toml").write_text('app = "shop-api"\n')
    fake = tmp_path / "deploy-bin" / "fly"
    fake.parent.mkdir()
    fake.write_text('#!/bin/bash\necho "token=${FLY_API_TOKEN:-none}"\n')
    fake.chmod(0o755)
    env = {"PATH": os.environ["PATH"]}

    def deployed_with() -> tuple[str, ...]:
        return stream_deploy(project, "api", path=str(fake.parent), env=env).output

    assert default_chain.get("shop-api") == "fm2_readonly_minted"
    assert deployed_with() == ("token=none",)  # read-only: flyctl is left to its own login
    default_chain.set_manual("shop-api", "fm2_deploy_token")  # per app, from fly.toml
    assert deployed_with() == ("token=fm2_deploy_token",)
    env["FLY_API_TOKEN"] = "fo1_explicit_env"  # a token in the deploy's own env= wins
    assert deployed_with() == ("token=fo1_explicit_env",)
