"""``atlas-nb init [--ipython] [--force]`` and ``atlas-nb upgrade [--dry-run]``: set up a
machine for atlas_nb, and migrate its files to this version.

``init``:

* Writes the config file (``config.config_path()``) with every setting commented out at
  its default, if there is none (``--force`` rewrites it, keeping the old one as
  ``config.yaml.bak``). Keys are never written to it.
* Creates the config dir and the data dir (ledgers, token caches) with mode 0700.
* ``--ipython`` loads the extension in every IPython session and kernel: it appends
  ``c.InteractiveShellApp.extensions.append("atlas_nb")`` to ``ipython_config.py`` and
  ``ipython_kernel_config.py`` of the default profile (``$IPYTHONDIR``, else
  ``~/.ipython``). Loading twice is harmless: the extension manager skips it.

Every step is idempotent and prints one line saying what it did.

``upgrade`` runs the pending versioned migrations (``atlas_nb.migrations``).
"""

from __future__ import annotations

import argparse
import os
import re
import stat
import sys
from collections.abc import Callable
from pathlib import Path

from .. import config
from ..migrations import CONFIG_SCHEMA_VERSION, config_version
from . import command
from .exit_codes import OK, failure

__all__ = ["CONFIG_TEMPLATE", "EXTENSION_LINE", "init", "ipython_profile_dir", "upgrade"]

CONFIG_TEMPLATE = f"""\
# atlas_nb configuration, written by `atlas-nb init`.
#
# Every setting below is commented out at its default (or an example value where there is
# no default): uncomment a line to change it. A setting passed to a call wins over this
# file; this file wins over environment variables.
#
# API keys do not belong here. Export RUNPOD_API_KEY, FLY_API_TOKEN, LAMBDA_LABS_API_KEY
# or VAST_API_KEY, or run `%atlas login <provider>` in a notebook (kept in memory only).
# If you still put one here (providers.<name>.api_key), keep this file private (0600).
schema_version: {CONFIG_SCHEMA_VERSION}  # managed by `atlas-nb upgrade`; do not edit

# default_provider: runpod        # no default: the provider when a call names none
# providers:
#   lambda_labs:
#     ssh_key_name: my-key        # the registered SSH key Lambda launches need
#   fly:
#     default_app: my-app         # the app machines are spawned in and listed from
#     org_slug: personal          # the org of apps made with provider_opts create_app
# orchestrator:                   # tracked computes (atlas_nb.orchestrator.settings)
#   name_prefix: atlas-           # names {{prefix}}{{ledger}}-{{session}}-...; the reaper ends
#                                 # only its own ledger's computes
#   idle_ttl_ms: 1800000          # 30 min without activity -> terminated; 0 disables
#   max_lifetime_ms: null         # absolute cap per compute; null disables
#   heartbeat_interval_s: 15.0    # idle checks and heartbeat events
#   reap_interval_s: 60.0         # upstream reconcile
#   grace_period_s: 900.0         # age before an unknown compute of this ledger is reaped
#   reap_providers: null          # null: the providers this machine's ledger knows
#   max_hourly_spend: null        # USD/h across tracked computes; null: no limit
#   max_total_spend: null         # USD accrued by one session; null: no limit
#   terminate_attempts: 4         # per terminate, with exponential backoff
#   terminate_backoff_s: 0.5
#   shutdown_deadline_s: 2.0      # kernel shutdown budget
"""
"""What ``init`` writes. Uncommented, its values are the real defaults (a test checks)."""

EXTENSION_LINE = 'c.InteractiveShellApp.extensions.append("atlas_nb")'
_EXTENSION_BLOCK = (
    "\n# Added by `atlas-nb init --ipython`: load atlas_nb's %atlas magics in every session.\n"
    f"{EXTENSION_LINE}\n"
)
_REGISTERED = re.compile(r"""^[^#\n]*extensions[^#\n]*["']atlas_nb["']""", re.MULTILINE)
_PROFILE_FILES = ("ipython_config.py", "ipython_kernel_config.py")
_PRIVATE = 0o700


def _out(line: str) -> None:
    sys.stdout.write(line + "\n")


def _mode(path: Path) -> str:
    return f"{stat.S_IMODE(path.stat().st_mode):04o}"


def ipython_profile_dir() -> Path:
    """The default IPython profile dir: ``$IPYTHONDIR/profile_default`` or ``~/.ipython/...``."""
    base = os.environ.get("IPYTHONDIR") or "~/.ipython"
    return Path(base).expanduser() / "profile_default"


def _data_dir_path() -> Path:
    # Where config.data_dir() puts it, without creating it (to tell "created" from "exists").
    override = os.environ.get("ATLAS_NB_DATA_DIR")
    if override:
        return Path(override).expanduser()
    import platformdirs

    return Path(platformdirs.user_data_dir("atlas_nb"))


def _private_dir(label: str, path: Path, *, chosen: bool) -> str:
    """Create ``path`` 0700, or tighten it unless the user pointed us at it (``chosen``)."""
    if not path.exists():
        path.mkdir(parents=True, mode=_PRIVATE)
        os.chmod(path, _PRIVATE)  # mkdir's mode is masked by the umask
        return f"{label:<7} {path}: created (mode 0700)"
    if not path.is_dir():
        raise NotADirectoryError(f"{path} exists and is not a directory")
    if stat.S_IMODE(path.stat().st_mode) & 0o077 == 0:
        return f"{label:<7} {path}: exists (mode {_mode(path)})"
    if chosen:
        # An env var picked this dir (maybe a shared one): warn, don't chmod someone's dir.
        return (f"{label:<7} {path}: exists (mode {_mode(path)}); other users can read it: "
                f"chmod 700 {path}")
    was = _mode(path)
    os.chmod(path, _PRIVATE)
    return f"{label:<7} {path}: exists, tightened to 0700 (was {was})"


def _write_private(path: Path, text: str, *, replace: bool) -> None:
    flags = os.O_WRONLY | os.O_CREAT | (os.O_TRUNC if replace else os.O_EXCL)
    fd = os.open(path, flags, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(text)


def _backup_path(path: Path) -> Path:
    candidate = path.with_name(f"{path.name}.bak")
    n = 1
    while candidate.exists():
        candidate = path.with_name(f"{path.name}.bak.{n}")
        n += 1
    return candidate


def _config_file(path: Path, *, force: bool) -> list[str]:
    label = "config"
    if not path.exists():
        try:
            _write_private(path, CONFIG_TEMPLATE, replace=False)
        except FileExistsError:  # created between the check and the write: leave it
            return [f"{label:<7} {path}: exists (appeared just now), left unchanged"]
        return [f"{label:<7} {path}: written with commented defaults (mode 0600)"]
    current = path.read_text(encoding="utf-8")
    if current == CONFIG_TEMPLATE:
        return [f"{label:<7} {path}: exists, already the defaults"]
    if not force:
        lines = [f"{label:<7} {path}: exists, left unchanged (--force rewrites it, "
                 "keeping a backup)"]
        return lines + _upgrade_hint(path, current)
    backup = _backup_path(path)
    _write_private(backup, current, replace=False)
    _write_private(path, CONFIG_TEMPLATE, replace=True)
    os.chmod(path, 0o600)
    return [f"{label:<7} {path}: rewritten with commented defaults; the old one is "
            f"{backup.name}"]


def _upgrade_hint(path: Path, text: str) -> list[str]:
    import yaml

    try:
        data = yaml.safe_load(text) or {}
        version = config_version(data) if isinstance(data, dict) else None
    except Exception:  # a broken file is for `upgrade`/`load` to explain, not init
        return [f"{'':<7} {path} does not parse as a config; `atlas-nb upgrade` says why"]
    if version is not None and version < CONFIG_SCHEMA_VERSION:
        return [f"{'':<7} it is at schema {version}; run `atlas-nb upgrade` "
                f"(current: {CONFIG_SCHEMA_VERSION})"]
    return []


def _register_extension(profile: Path) -> list[str]:
    lines = []
    if not profile.exists():
        profile.mkdir(parents=True)
        lines.append(f"{'ipython':<7} {profile}: created")
    for name in _PROFILE_FILES:
        path = profile / name
        text = path.read_text(encoding="utf-8") if path.exists() else ""
        if _REGISTERED.search(text):
            lines.append(f"{'ipython':<7} {path}: atlas_nb already registered")
            continue
        if text and not text.endswith("\n"):
            text += "\n"
        block = _EXTENSION_BLOCK if text else _EXTENSION_BLOCK.lstrip("\n")
        path.write_text(text + block, encoding="utf-8")
        lines.append(f"{'ipython':<7} {path}: registered the atlas_nb extension")
    return lines


_PATH_FIX = ("fix that path (permissions, or a file in the way), or point ATLAS_NB_CONFIG / "
             "ATLAS_NB_DATA_DIR / IPYTHONDIR elsewhere, then run it again")


def _os_error(exc: OSError) -> str:
    """``exc`` as "<path>: <reason>" (``str(OSError)`` puts the errno first)."""
    if exc.filename is None or exc.strerror is None:
        return str(exc)
    return f"{exc.filename}: {exc.strerror.lower()}"


def _init_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--ipython",
        action="store_true",
        help='append c.InteractiveShellApp.extensions.append("atlas_nb") to the default '
        "profile's ipython_config.py and ipython_kernel_config.py ($IPYTHONDIR or "
        "~/.ipython), once",
    )
    p.add_argument(
        "--force",
        action="store_true",
        help="rewrite an existing config file with the defaults (the old one is kept as "
        "config.yaml.bak)",
    )


@command(
    "init",
    help="write the config file and private storage dirs; --ipython loads %%atlas",
    description=(
        "Set up this machine: write the config file with commented defaults if there "
        "is none (never with keys), create the config and data dirs with mode 0700, "
        "and with --ipython load the extension in every IPython session and kernel. "
        "Safe to run again: it only does what is missing and prints what it did."
    ),
    args=_init_args,
)
def init(args: argparse.Namespace) -> int:
    """Run ``init`` with the parsed arguments; returns the exit code."""
    from ..errors import AtlasError

    path = config.config_path()
    steps: list[Callable[[], list[str]]] = [
        lambda: [_private_dir("config", path.parent, chosen="ATLAS_NB_CONFIG" in os.environ)],
        lambda: _config_file(path, force=args.force),
        lambda: [_private_dir("data", _data_dir_path(),
                              chosen="ATLAS_NB_DATA_DIR" in os.environ)],
    ]
    if args.ipython:
        steps.append(lambda: _register_extension(ipython_profile_dir()))
    for step in steps:  # print as we go: a failure still shows what was done
        try:
            lines = step()
        except AtlasError as exc:
            return failure("atlas-nb init", exc, fix=exc.hint)
        except OSError as exc:
            return failure("atlas-nb init", _os_error(exc), fix=_PATH_FIX)
        for line in lines:
            _out(line)
    if not args.ipython:
        _out("next: `atlas-nb init --ipython` loads %atlas in every IPython session/kernel")
    _out("keys: export RUNPOD_API_KEY / FLY_API_TOKEN / LAMBDA_LABS_API_KEY / VAST_API_KEY "
         "(init never stores keys); no account: `atlas-nb sandbox`")
    return OK


_UPGRADE_FIX = "fix or move that file, then run `atlas-nb upgrade` again"


def _upgrade_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--dry-run", action="store_true",
                   help="print what would be migrated; write nothing")


@command(
    "upgrade",
    help="migrate the config file (and the ledger) to this version's schema",
    description=(
        "Run the pending versioned migrations of the config file (recording its "
        "schema_version) and of the orchestrator ledger. Safe to run again: a file at "
        "the current schema is left alone. A config file from a newer atlas_nb is "
        "refused, never downgraded."
    ),
    args=_upgrade_args,
)
def upgrade(args: argparse.Namespace) -> int:
    """Run the pending migrations (or with --dry-run list them); returns the exit code."""
    from ..errors import AtlasError
    from ..migrations import upgrade as migrate

    try:
        steps = migrate(dry_run=args.dry_run)
    except AtlasError as exc:
        # The migrations' messages mostly end with their own fix ("...; upgrade atlas_nb
        # instead of the file"): add the generic one only to those that do not.
        fix = exc.hint or (None if ";" in exc.message else _UPGRADE_FIX)
        return failure("atlas-nb upgrade", exc, fix=fix)
    except OSError as exc:
        return failure("atlas-nb upgrade", _os_error(exc), fix=_UPGRADE_FIX)
    for step in steps:
        print(step.line())
    return OK
