"""Sandbox accounts (issue 13, item 4) and the providers' account fingerprints.

Every emulated cloud takes several keys, each its own account: a resource belongs to
the account that created it, lists show the caller's own, and another account's id
answers exactly what the cloud answers for an unknown id. RunPod (GraphQL ``myself``)
and Vast (``users/current``) name the account; ``account_fingerprint()`` uses that id
there and a salted key hash elsewhere, and never carries key material.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

import atlas_nb as atlas
from atlas_nb.errors import NotFound
from atlas_nb.providers import base
from atlas_nb.providers.base import BaseProvider, fingerprint_of, key_fingerprint
from atlas_nb.providers.fly import Fly
from atlas_nb.providers.lambda_labs import LambdaLabs
from atlas_nb.providers.runpod import RunPod
from atlas_nb.providers.vast import Vast
from atlas_nb.sandbox import sandbox_key, start
from atlas_nb.sandbox.accounts import Account
from atlas_nb.sandbox.control import ControlError
from atlas_nb.sandbox.server import Sandbox

pytest.importorskip("openapi_core", reason="contract validation needs openapi-core")

CLOUDS = ["fly", "lambda_labs", "runpod", "vast"]
APP_A, APP_B = "app-of-a", "app-of-b"
SECRET_B = "rpa_B0B5ECRETKEYZZZZ9876"  # a key shaped like a real one, for the leak checks


@pytest.fixture
def sb() -> Iterator[Sandbox]:
    with start(clouds=CLOUDS, start_server=False, validate=True, provision_delay_s=0,
               start_delay_s=0, options={"lambda_labs": {"launch_interval_s": 0}}) as box:
        yield box
        assert box.violations == [], "\n".join(box.violations)


@pytest.fixture
def http(sb: Sandbox) -> Iterator[httpx.Client]:
    with sb.client() as client:
        yield client


def provider(cloud: str, key: str, http: httpx.Client, app: str = APP_A) -> BaseProvider:
    made: dict[str, Any] = {
        "runpod": lambda: RunPod(api_key=key, http=http, sleep=lambda _: None),
        "vast": lambda: Vast(api_key=key, http=http, sleep=lambda _: None),
        "lambda_labs": lambda: LambdaLabs(api_key=key, http=http, sleep=lambda _: None),
        "fly": lambda: Fly(app, api_key=key, http=http, sleep=lambda _: None),
    }
    return made[cloud]()  # type: ignore[no-any-return]


def spawn(cloud: str, p: BaseProvider, name: str) -> atlas.Compute:
    opts: dict[str, Any] = {}
    if cloud == "lambda_labs":
        opts = {"launch_interval_s": 0, "ssh_key_names": ["my-key"]}
    if cloud == "fly":
        opts = {"create_app": True}
    return p.spawn_compute(atlas.ComputeRequest(
        gpu=None if cloud == "fly" else "h100", image="i:1", name=name, provider_opts=opts))


def raw(sb: Sandbox, key: str, method: str, path: str, **kw: Any) -> httpx.Response:
    """One request straight to the sandbox as ``key`` (``path`` under the sandbox URL)."""
    with sb.client(headers={"Authorization": f"Bearer {key}"}) as client:
        return client.request(method, f"{sb.url}{path}", **kw)


# -- namespaces -------------------------------------------------------------------------
@pytest.mark.parametrize("cloud", CLOUDS)
def test_another_accounts_compute_is_unknown_to_a_provider(
    sb: Sandbox, http: httpx.Client, cloud: str
) -> None:
    b = sb.add_account(cloud)
    mine = provider(cloud, sandbox_key(cloud), http, APP_A)
    theirs = provider(cloud, b.key, http, APP_B)
    c_a, c_b = spawn(cloud, mine, "of-a"), spawn(cloud, theirs, "of-b")

    assert [c.id for c in mine.list_compute()] == [c_a.id]
    assert [c.id for c in theirs.list_compute()] == [c_b.id]
    with pytest.raises(NotFound):
        mine.get_compute(c_b.id)
    if "stop_start" in mine.capabilities():
        with pytest.raises(NotFound):
            mine.stop(c_b.id)
    mine.terminate(c_b.id)  # idempotent: "already gone" from where A stands ...
    assert theirs.get_compute(c_b.id).status != "terminated"  # ... and B's still runs
    theirs.terminate(c_b.id)
    assert mine.get_compute(c_a.id).status != "terminated"


def _same_as_unknown(sb: Sandbox, key: str, method: str, path: str, real_id: str,
                     fake_id: str, **kw: Any) -> None:
    """The answer for another account's ``real_id`` equals the one for an unknown id."""
    theirs = raw(sb, key, method, path.format(id=real_id), **kw)
    unknown = raw(sb, key, method, path.format(id=fake_id), **kw)
    assert theirs.status_code == unknown.status_code == 404, (theirs.text, unknown.text)
    assert theirs.text.replace(real_id, "ID") == unknown.text.replace(fake_id, "ID")


def test_runpod_answers_another_accounts_pod_as_an_unknown_id(sb: Sandbox,
                                                              http: httpx.Client) -> None:
    b = sb.add_account("runpod")
    pod = spawn("runpod", provider("runpod", b.key, http), "b-pod").id
    key = sandbox_key("runpod")
    for method, path, body in [("GET", "/runpod/rest/v2/pods/{id}", None),
                               ("POST", "/runpod/rest/v2/pods/{id}/action", {"action": "stop"}),
                               ("POST", "/runpod/rest/v2/pods/{id}/action", {"action": "start"}),
                               ("PATCH", "/runpod/rest/v2/pods/{id}", {"name": "mine-now"}),
                               ("DELETE", "/runpod/rest/v2/pods/{id}", None)]:
        kw = {"json": body} if body else {}
        _same_as_unknown(sb, key, method, path, pod, "zzzzzzzzzzzzzz", **kw)
    q = {"query": "query { pod(input: {podId: \"%s\"}) { id } }"}
    theirs = raw(sb, key, "POST", "/runpod/graphql/graphql", json={"query": q["query"] % pod})
    assert theirs.json()["data"]["pod"] is None
    assert pod in sb.runpod.pods  # the test helper still sees every account's pods


def test_vast_answers_another_accounts_instance_as_an_unknown_id(sb: Sandbox,
                                                                 http: httpx.Client) -> None:
    b = sb.add_account("vast")
    iid = spawn("vast", provider("vast", b.key, http), "b-inst").id
    key = sandbox_key("vast")
    for method, path, body in [("GET", "/vast/rest/api/v0/instances/{id}/", None),
                               ("PUT", "/vast/rest/api/v0/instances/{id}/", {"state": "stopped"}),
                               ("DELETE", "/vast/rest/api/v0/instances/{id}/", None)]:
        kw = {"json": body} if body else {}
        if method == "GET":  # Vast answers 200 {"instances": null} for an id not there
            theirs = raw(sb, key, method, path.format(id=iid))
            unknown = raw(sb, key, method, path.format(id=99999999))
            assert theirs.status_code == unknown.status_code
            assert theirs.json() == unknown.json()
            continue
        _same_as_unknown(sb, key, method, path, iid, "99999999", **kw)
    assert int(iid) in sb.vast.instances


def test_lambda_answers_another_accounts_instance_as_an_unknown_id(sb: Sandbox,
                                                                   http: httpx.Client) -> None:
    b = sb.add_account("lambda_labs")
    iid = spawn("lambda_labs", provider("lambda_labs", b.key, http), "b-inst").id
    key = sandbox_key("lambda_labs")
    _same_as_unknown(sb, key, "GET", "/lambda_labs/rest/api/v1/instances/{id}", iid,
                     "0" * len(iid))
    out = raw(sb, key, "POST", "/lambda_labs/rest/api/v1/instance-operations/terminate",
              json={"instance_ids": [iid]})
    unknown = raw(sb, key, "POST", "/lambda_labs/rest/api/v1/instance-operations/terminate",
                  json={"instance_ids": ["0" * len(iid)]})
    assert out.status_code == unknown.status_code and out.status_code >= 400
    assert provider("lambda_labs", b.key, http).get_compute(iid).status != "terminated"


def test_fly_answers_another_accounts_app_and_machine_as_unknown(sb: Sandbox,
                                                                 http: httpx.Client) -> None:
    b = sb.add_account("fly")
    mid = spawn("fly", provider("fly", b.key, http, APP_B), "b-m").id.split("/")[1]
    key = sandbox_key("fly")
    for method, path in [("GET", f"/fly/machines/v1/apps/{APP_B}/machines/{{id}}"),
                         ("DELETE", f"/fly/machines/v1/apps/{APP_B}/machines/{{id}}")]:
        theirs = raw(sb, key, method, path.format(id=mid))
        unknown = raw(sb, key, method, f"/fly/machines/v1/apps/no-such-app/machines/{mid}")
        assert theirs.status_code == unknown.status_code == 404
        assert theirs.json() == unknown.json()
    listed = raw(sb, key, "GET", "/fly/machines/v1/apps", params={"org_slug": "personal"})
    assert APP_B not in [a["name"] for a in listed.json()["apps"]]
    # App names are global on Fly: the name is taken, though A cannot see the app.
    taken = raw(sb, key, "POST", "/fly/machines/v1/apps",
                json={"name": APP_B, "org_slug": "personal"})
    assert taken.status_code == 422


def test_the_account_ids_are_where_the_real_apis_have_them(sb: Sandbox) -> None:
    b_rp, b_vast = sb.add_account("runpod"), sb.add_account("vast")
    q = {"query": "query { myself { id } }"}
    ids = [raw(sb, k, "POST", "/runpod/graphql/graphql", json=q).json()["data"]["myself"]["id"]
           for k in (sandbox_key("runpod"), b_rp.key)]
    assert ids == ["default", b_rp.id]
    users = [raw(sb, k, "GET", "/vast/rest/api/v0/users/current/").json()
             for k in (sandbox_key("vast"), b_vast.key)]
    assert [u["id"] for u in users] == [1, b_vast.number] and users[0]["id"] != users[1]["id"]


def test_add_account_refuses_a_key_in_use_and_unknown_clouds(sb: Sandbox) -> None:
    b = sb.add_account("runpod", key=SECRET_B)
    assert b == Account(SECRET_B, "acct2", 2) and SECRET_B not in repr(b)
    with pytest.raises(ValueError, match="already belongs"):
        sb.add_account("runpod", key=SECRET_B)
    with pytest.raises(ValueError, match="no cloud"):
        sb.add_account("nosuch")
    assert [a.id for a in sb.accounts("runpod")] == ["default", "acct2"]
    assert raw(sb, "not-a-key", "GET", "/runpod/rest/v2/pods").status_code == 401


def test_accounts_over_the_control_api(sb: Sandbox) -> None:
    with sb.control() as ctl:
        made = ctl.add_account("vast")
        assert made.id == "acct2" and made.key.startswith("sandbox-vast-")
        assert [a.id for a in ctl.accounts("vast")] == ["default", "acct2"]
        with pytest.raises(ControlError) as refused:
            ctl.add_account("vast", key=made.key)
        assert refused.value.status == 400
    assert raw(sb, made.key, "GET", "/vast/rest/api/v0/users/current/").json()["id"] == 2


# -- account fingerprints ---------------------------------------------------------------
@pytest.mark.parametrize("cloud", CLOUDS)
def test_two_accounts_have_two_fingerprints_without_key_material(
    sb: Sandbox, http: httpx.Client, cloud: str
) -> None:
    b = sb.add_account(cloud, key=SECRET_B)
    a_key = sandbox_key(cloud)
    fa = fingerprint_of(provider(cloud, a_key, http))
    fb = fingerprint_of(provider(cloud, b.key, http))
    assert fa and fb and fa != fb and fa.startswith(f"{cloud}:") and fb.startswith(f"{cloud}:")
    assert fingerprint_of(provider(cloud, b.key, http)) == fb  # stable for one key
    for fp in (fa, fb):
        for n in range(4, len(SECRET_B) + 1):  # neither the key nor a prefix of 4+ chars
            assert SECRET_B[:n] not in fp, (fp, n)
        assert f"sandbox-{cloud}" not in fp and a_key not in fp  # (the host has "sandbox")
    if cloud in ("runpod", "vast"):  # the API names the account: its id, not a hash
        assert re.fullmatch(rf"{cloud}:account:[\w-]+@atlas-sandbox\.invalid", fb), fb
    else:
        assert re.fullmatch(rf"{cloud}:key:[0-9a-f]{{16}}", fb), fb


def test_account_id_lookups_are_cached_per_key(sb: Sandbox,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(base, "_ACCOUNT_IDS", {})  # what earlier tests resolved
    asked: list[str] = []
    with sb.client(event_hooks={"request": [lambda r: asked.append(r.url.path)]}) as http:
        b = sb.add_account("vast")
        for _ in range(3):
            RunPod(http=http).account_fingerprint()
            Vast(api_key=b.key, http=http).account_fingerprint()
            Vast(http=http).account_fingerprint()
    assert sorted(asked) == ["/runpod/graphql/graphql", *["/vast/rest/api/v0/users/current/"] * 2]


def test_key_fingerprint_depends_on_the_endpoint_and_duck_typed_providers_have_none() -> None:
    one = key_fingerprint("lambda_labs", "k", "https://cloud.lambda.ai")
    assert one == key_fingerprint("lambda_labs", "k", "https://cloud.lambda.ai/")
    assert one != key_fingerprint("lambda_labs", "k", "http://127.0.0.1:9/lambda_labs/rest")
    assert one != key_fingerprint("lambda_labs", "k2", "https://cloud.lambda.ai")

    class Mine:  # a user's own provider: no account_fingerprint
        name = "mine"

    assert fingerprint_of(Mine()) is None
