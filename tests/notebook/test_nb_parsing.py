"""``$name`` expansion, per-subcommand parsers, cell bodies, and refusing keys on the line."""

from __future__ import annotations

import pytest
from IPython.core.error import UsageError

from atlas_nb.notebook import keyguard
from atlas_nb.notebook.commands import SUBCOMMANDS, parse
from atlas_nb.notebook.expand import expand, parse_body


class Thing:
    def __init__(self) -> None:
        self.name = "gpu-box"
        self.spec = {"gpu": "h100"}


NS = ({"n": 3, "cfg": {"gpu": "l40s", "inner": {"k": "v"}}, "t": Thing(), "text": "a b",
       "price": 1.5, "flag": True},)


def test_whole_token_reference_passes_the_object_itself() -> None:
    out = expand("run --endpoint e $cfg", NS)
    assert out.tokens[:3] == ["run", "--endpoint", "e"]
    assert out.restore(out.tokens[3]) is NS[0]["cfg"]


def test_scalars_become_text_so_argparse_types_apply() -> None:
    out = expand("gpus --max-price $price --limit $n", NS)
    assert out.tokens == ["gpus", "--max-price", "1.5", "--limit", "3"]
    assert parse("gpus", out.tokens[1:]).max_price == 1.5


def test_attribute_and_key_paths() -> None:
    out = expand("x $t.name $cfg.gpu $cfg.inner $t.spec.gpu", NS)
    assert out.tokens[1:3] == ["gpu-box", "l40s"]
    assert out.restore(out.tokens[3]) == {"k": "v"}
    assert out.tokens[4] == "h100"


def test_embedded_references_are_formatted_into_the_token() -> None:
    assert expand("spawn --name run-$n-$cfg.gpu", NS).tokens == ["spawn", "--name", "run-3-l40s"]


def test_literal_dollars_single_quotes_and_escapes() -> None:
    out = expand("x $$n '$n' \\$n \"$n\" 'a b'", NS)
    assert out.tokens == ["x", "$n", "$n", "$n", "3", "a b"]


def test_strings_with_spaces_stay_one_token() -> None:
    assert expand("x $text", NS).tokens == ["x", "a b"]


def test_locals_win_over_user_namespace() -> None:
    out = expand("x $n", ({"n": "local"}, {"n": "global"}))
    assert out.tokens == ["x", "local"]


@pytest.mark.parametrize("line", ["x $missing", "x pre-$missing", "x $t.nope"])
def test_undefined_references_are_usage_errors(line: str) -> None:
    with pytest.raises(UsageError) as err:
        expand(line, NS)
    assert "\n" not in str(err.value)


def test_unbalanced_quotes_are_a_usage_error() -> None:
    with pytest.raises(UsageError, match="cannot split"):
        expand("x 'open", NS)


def test_cell_bodies_json_yaml_reference_and_empty() -> None:
    assert parse_body('{"a": [1, 2]}', NS) == {"a": [1, 2]}
    assert parse_body("gpu: h100\nports: [8000/http]\n", NS) == {"gpu": "h100",
                                                                  "ports": ["8000/http"]}
    assert parse_body("  $cfg  ", NS) is NS[0]["cfg"]
    assert parse_body('{"a": 1};', NS) == {"a": 1}  # IPython's silencing ; is not data
    assert parse_body("   \n", NS) is None
    with pytest.raises(UsageError, match="neither JSON nor YAML"):
        parse_body("a: [unclosed\n  b: {", NS)


# Bad arguments for every subcommand give exactly one line.
BAD = {
    "providers": ["--bogus"], "login": [], "gpus": ["--max-price", "cheap"],
    "spawn": ["--gpu-count", "two"], "ls": ["--nope"], "touch": [], "stop": [], "start": [],
    "terminate": [], "run": ["--sync"], "stream": [], "jobs": ["extra"], "logs": [],
    "deploy": [], "dashboard": ["--refresh", "x"], "sandbox": ["maybe"],
    "reap": ["--dry"], "doctor": ["now"],
}


def test_every_subcommand_has_a_bad_argument_case() -> None:
    assert set(BAD) == set(SUBCOMMANDS)


@pytest.mark.parametrize(("sub", "args"), sorted(BAD.items()))
def test_bad_arguments_are_one_line_usage_errors(ip, sub: str, args: list[str]) -> None:
    with pytest.raises(UsageError) as err:
        ip.run_line_magic("atlas", " ".join([sub, *args]))
    message = str(err.value)
    assert "\n" not in message
    assert message.startswith(f"%atlas {sub}: ")
    assert f"%atlas {sub} --help" in message


def test_unknown_subcommand_suggests_the_closest(ip) -> None:
    with pytest.raises(UsageError, match="did you mean 'spawn'"):
        ip.run_line_magic("atlas", "spwan --gpu h100")


def test_o_needs_a_variable_name(ip) -> None:
    with pytest.raises(UsageError, match="-o needs a Python variable name"):
        ip.run_line_magic("atlas", "doctor -o 1bad")
    with pytest.raises(UsageError, match="-o needs a Python variable name"):
        ip.run_line_magic("atlas", "doctor -o class")


@pytest.mark.parametrize("line", [
    "spawn --api-key rpa_ABCDEF0123456789",
    "login runpod --token=abc",
    "spawn --gpu h100 api_key=xyz",
    "run --endpoint e rpa_0123456789ABCDEFGHIJ",
    "logs app --access-token zz",
    "spawn --image img:1 secret_abcdef123456_0123456789",
    "gpus x9K2mQ7vR4tL8wZ3nB6yC1dF5gH0jP2sA7",
    "deploy app FlyV1 fm2_lJPECAAAAAAAAM",
])
def test_keys_on_the_magic_line_are_refused_without_echo(ip, line: str) -> None:
    with pytest.raises(UsageError) as err:
        ip.run_line_magic("atlas", line)
    message = str(err.value)
    assert "%atlas login" in message and "\n" not in message
    for token in line.split():
        if len(token) > 6 and token not in ("--api-key", "--token=abc", "--access-token"):
            assert token not in message


@pytest.mark.parametrize("token", [
    "sandbox-runpod-key", "ghcr.io/org/desk-application:latest",
    "6ffe6a7f-7bd8-4f2b-adf0-5a44fccc6924-u1", "sync-6ffe6a7f-7bd8-4f2b-adf0-5a44fccc6924",
    "atlas-82800ef5-f0de88", "bprl08dcdjmnj5", "NVIDIA GeForce RTX 4090",
])
def test_ids_names_and_images_are_not_mistaken_for_keys(token: str) -> None:
    assert not keyguard.looks_like_key(token)
    keyguard.check_line(token.split())


def test_cell_bodies_with_provider_keys_are_refused(ip) -> None:
    with pytest.raises(UsageError, match="that cell"):
        ip.run_cell_magic("atlas", "spawn --provider mock", "image: img:1\napi_key: sekret\n")
    with pytest.raises(UsageError, match="that cell"):
        ip.run_cell_magic("atlas", "run --provider mock --endpoint e",
                          '{"auth": "rpa_0123456789ABCDEF"}')


def test_a_refused_line_is_scrubbed_from_history(ip) -> None:
    line = "spawn --api-key rpa_SCRUBME0123456789"
    hm = ip.history_manager
    hm.input_hist_raw.append(f"%atlas {line}")
    hm.input_hist_parsed.append(f"get_ipython().run_line_magic('atlas', '{line}')")
    ip.user_ns["_i"] = f"%atlas {line}"
    with pytest.raises(UsageError):
        ip.run_line_magic("atlas", line)
    everything = " ".join([*hm.input_hist_raw, *hm.input_hist_parsed, ip.user_ns["_i"]])
    assert "SCRUBME" not in everything
