"""The ``Authorization`` header for a Fly token chain, as superfly/fly-go builds it.

fly-go ``tokens/tokens.go``: ``Parse`` strips any ``Bearer``/``FlyV1`` scheme (repeatedly,
any case), splits on commas and sorts each token by its prefix before ``_`` (``fm1r``,
``fm1a``, ``fm2``: macaroons; anything else: user tokens). ``FlapsHeader()`` (the Machines
API) and ``BubblegumHeader()`` (the logs API) are ``normalized(false, true)``: with any
macaroon, ``FlyV1 `` and **the macaroons only**; without one, ``Bearer `` and the user
tokens. Only the GraphQL API takes both kinds in one header.
"""

from __future__ import annotations

import pytest

from atlas_nb.fly.auth_header import authorization, is_macaroon


@pytest.mark.parametrize(("token", "header"), [
    # a chain mixing macaroons with a user (OAuth / fo1_) token: only the macaroons travel
    ("fm2_abc,fo1_user", "FlyV1 fm2_abc"),
    ("fo1_user,fm2_abc,fm2_discharge", "FlyV1 fm2_abc,fm2_discharge"),
    ("FlyV1 fm2_abc,fo1_user", "FlyV1 fm2_abc"),
    ("FlyV1 oauth-token,fm1a_x", "FlyV1 fm1a_x"),
    # schemes are stripped whatever their case, and more than once
    ("flyv1 fm2_abc", "FlyV1 fm2_abc"),
    ("bearer FlyV1 fm2_abc", "FlyV1 fm2_abc"),
    ("BEARER fo1_x", "Bearer fo1_x"),
    # a user-token chain stays one Bearer header; blanks between commas are dropped
    ("fo1_a, fo1_b", "Bearer fo1_a,fo1_b"),
    ("fm2_a, ,fm2_b", "FlyV1 fm2_a,fm2_b"),
    # the prefix is what comes before the first "_", exactly (fm2x_ is not a macaroon)
    ("fm2x_abc", "Bearer fm2x_abc"),
])
def test_only_macaroons_travel_under_flyv1(token: str, header: str) -> None:
    assert authorization(token) == header


def test_a_chain_is_a_macaroon_chain_when_any_part_is() -> None:
    assert is_macaroon("fo1_x,fm2_y") and not is_macaroon("fm2x_y")


def test_the_provider_sends_a_mixed_chain_as_fly_go_does_and_the_sandbox_checks_it() -> None:
    from atlas_nb.providers.fly import Fly
    from atlas_nb.sandbox import start

    macaroon = "fm2_lJPECAAAAAAAAMoU0123456789"
    with start(clouds=["fly"], start_server=False, validate=True,
               options={"fly": {"apps": ["my-app"], "tokens": [macaroon]}}) as sb:
        with sb.client() as http:
            assert Fly("my-app", api_key=f"{macaroon},fo1_user", http=http).list_compute() == []
            assert sb.violations == []
            r = http.get(f"{sb.url}/fly/machines/v1/apps/my-app/machines",
                         headers={"Authorization": f"FlyV1 {macaroon},fo1_user"})
        assert r.status_code == 401
        assert any("mixed other tokens" in v for v in sb.violations)
        sb.clear_violations()
