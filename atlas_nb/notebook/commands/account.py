"""``providers``, ``login``, ``doctor`` and ``sandbox``: accounts, keys and the environment."""

from __future__ import annotations

import argparse
import os
import sys
from typing import TYPE_CHECKING, Any

from ... import config
from ...errors import AtlasError
from .options import out_option
from .registry import command

if TYPE_CHECKING:
    from ..call import Call

__all__ = ["doctor", "login", "providers", "sandbox", "save_key"]


def _note(text: str) -> None:
    print(text, file=sys.stderr)  # noqa: T201 - a side note next to the result


@command("providers", help="providers, capabilities, where each key comes from",
         description="Every provider, its capabilities and where its key comes from (never "
                     "the key itself).",
         args=out_option)
def providers(call: Call) -> Any:
    """Every provider: capabilities, where its key would come from, and whether it loads."""
    import pandas as pd

    from ... import facade
    from ...providers import names

    keyed = names(keyed=True)
    rows = []
    for name in names():
        try:
            caps = ", ".join(sorted(facade.capabilities(name)))
            status = "ok"
        except AtlasError as exc:
            caps, status = "", f"unavailable: {exc}"
        except ImportError as exc:  # a provider module not installed/finished
            caps, status = "", f"unavailable: {type(exc).__name__}"
        source = (config.key_source(name) or "missing") if name in keyed else "not needed"
        rows.append((name, source, caps, status))
    return pd.DataFrame.from_records(rows, columns=["provider", "key", "capabilities", "status"])


def _check_provider(name: str) -> str:
    from ...providers import provider_class

    cls = provider_class(name)  # ValidationError listing the known providers
    return str(getattr(cls, "name", name))


def _login_args(p: argparse.ArgumentParser) -> None:
    from ...providers import names

    *rest, last = names(keyed=True)
    p.add_argument("provider", metavar="PROVIDER",
                   help=f"{', '.join(rest)} or {last}" if rest else last)
    p.add_argument("--save", action="store_true",
                   help="also write the key to the config file (mode 0600)")
    p.add_argument("--forget", action="store_true",
                   help="drop the in-memory key (and the saved one with --save)")


@command("login", help="type a provider key at a hidden prompt (--save to keep it)",
         description="Type a provider's API key at a hidden prompt (getpass). It is kept in "
                     "memory for this kernel, or written to the config file with --save. "
                     "Never put a key on the magic line: IPython history keeps every line.",
         args=_login_args)
def login(call: Call) -> None:
    """Read a key at a hidden prompt; keep it in memory, and in the config file with --save."""
    args = call.args
    name = _check_provider(args.provider)
    if args.forget:
        config.set_session_key(name, None)
        if args.save:
            removed = save_key(name, None)
            _note(f"{name}: key forgotten (also removed from {config.config_path()})"
                  if removed else f"{name}: key forgotten (none was saved in the config file)")
        else:
            _note(f"{name}: in-memory key forgotten")
        return None
    key = call.magics.getpass(f"{name} API key (input hidden, Enter to cancel): ")
    key = (key or "").strip()
    if not key:
        _note(f"{name}: no key entered; nothing changed")
        return None
    # Written once: Fly's logs, deploys and machines all read the session key through
    # the one Fly token chain (atlas_nb.fly.tokens), so nothing else needs it.
    config.set_session_key(name, key)
    where = "kept in memory for this kernel"
    if args.save:
        path = save_key(name, key)
        where += f" and saved to {path} (mode 0600)"
    _note(f"{name}: key {where}")
    from ... import sandbox as sandbox_link

    if sandbox_link.active_url():
        _note("note: the sandbox is on, so calls use sandbox keys until %atlas sandbox off")
    return None


def save_key(provider: str, key: str | None) -> Any:
    """Write (or with ``None`` remove) ``providers.<provider>.api_key`` in the config file.

    The file is rewritten atomically with mode 0600. Returns the path (or, when
    removing, whether a key was there). Comments in the file are not preserved.
    """
    import yaml

    path = config.config_path()
    data: dict[str, Any] = dict(config.load())
    section = dict((data.get("providers") or {}).get(provider) or {})
    if key is None:
        if "api_key" not in section:
            return False
        section.pop("api_key")
    else:
        section["api_key"] = key
    data["providers"] = {**(data.get("providers") or {}), provider: section}
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            yaml.safe_dump(data, fh, sort_keys=False)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    os.chmod(path, 0o600)
    return path if key is not None else True


@command("doctor", help="versions, config, keys present",
         description="Versions (and an ipywidgets/jupyterlab_widgets mismatch), the config "
                     "file, the sandbox and which keys are present.",
         args=out_option)
def doctor(call: Call) -> Any:
    """Versions, widget packages, the config file, the sandbox and the keys present."""
    from ...doctor import diagnose

    return diagnose()


def _sandbox_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("action", choices=("on", "off", "status"), nargs="?", default="status")
    p.add_argument("--url", metavar="URL", help="attach to a sandbox already running there")


@command("sandbox", help="use the local emulated clouds: on | off | status",
         description="Point this kernel at the local emulated clouds (no account needed), or "
                     "back at the real ones.",
         args=_sandbox_args)
def sandbox(call: Call) -> None:
    """``on`` starts (or with --url attaches to) a sandbox; ``off`` stops or detaches it."""
    from ... import sandbox as sandbox_link
    from .. import state

    st = state(call.shell)
    action, url = call.args.action, call.args.url
    active = sandbox_link.active_url()
    if action == "status":
        if active is None:
            _note("sandbox: off (providers talk to the real clouds)")
        else:
            origin = ("started by %atlas sandbox on" if st.sandbox is not None
                      and st.sandbox.url == active else "attached")
            _note(f"sandbox: on at {active} ({origin})")
        return None
    if action == "on":
        if url:
            sandbox_link.attach(url)
            _note(f"sandbox: attached to {url.rstrip('/')}; providers use it with sandbox keys")
        elif active is not None:
            _note(f"sandbox: already on at {active}")
        else:
            st.sandbox = sandbox_link.start()
            from .. import tracking

            tracking.watch_sandbox(st.sandbox.url, st.sandbox.clouds)
            _note(f"sandbox: started at {st.sandbox.url}; providers use it with sandbox keys "
                  "(%atlas sandbox off stops it)")
        return None
    if url:
        sandbox_link.detach(url)
        _note(f"sandbox: detached from {url.rstrip('/')}")
        return None
    if st.sandbox is not None:
        from .. import tracking

        ended = tracking.forget_sandboxed(st.sandbox.url)
        if ended:
            _note(f"sandbox: terminated {ended} tracked compute(s) that lived in it")
        st.sandbox.close()
        _note(f"sandbox: stopped {st.sandbox.url}")
        st.sandbox = None
    elif active is not None:
        sandbox_link.detach()
        if sandbox_link.active_url() == active and os.environ.get("ATLAS_NB_SANDBOX"):
            os.environ.pop("ATLAS_NB_SANDBOX")
        _note(f"sandbox: detached from {active}")
    else:
        _note("sandbox: already off")
    still = sandbox_link.active_url()
    if still is not None:
        _note(f"sandbox: another one is still attached at {still}; "
              "run %atlas sandbox off again to detach it")
    return None
