"""``atlas-nb sandbox``: run every emulated cloud in the foreground until Ctrl-C, SIGTERM or
SIGHUP."""

from __future__ import annotations

import argparse
import math
import signal
import threading
from types import FrameType

from . import command
from .exit_codes import OK, failure

__all__ = ["sandbox"]


def _port(text: str) -> int:
    """A TCP port, checked while parsing so a bad one is a usage error (2), not a crash."""
    try:
        port = int(text)
    except ValueError:
        port = -1
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(
            f"a port is 0-65535 (0 picks a free one), not {text!r}")
    return port


def _seconds(text: str) -> float:
    """A delay in seconds: finite and not negative (``nan`` and ``-1`` are usage errors)."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value >= 0):
        raise argparse.ArgumentTypeError(
            f"a number of seconds, finite and not negative, not {text!r}")
    return value


def _sandbox_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--port", type=_port, default=0,
                   help="port to listen on, 0-65535 (default 0: a free one)")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default: 127.0.0.1)")
    p.add_argument("--seed", type=int, default=0, help="seed for ids and fault streams")
    p.add_argument(
        "--provision-delay",
        type=_seconds,
        default=0.2,
        metavar="S",
        help="seconds a new pod stays PROVISIONING (default 0.2)",
    )
    p.add_argument(
        "--start-delay",
        type=_seconds,
        default=0.2,
        metavar="S",
        help="seconds a pod stays STARTING (default 0.2)",
    )
    p.add_argument(
        "--validate",
        action="store_true",
        help="check traffic against the vendored OpenAPI specs (needs openapi-core); "
        "violations are printed on exit",
    )


@command(
    "sandbox",
    help="run the emulated clouds (RunPod, Lambda, Vast, Fly) on a loopback port",
    description=(
        "Run every emulated cloud in the foreground until Ctrl-C, SIGTERM or SIGHUP (exit 0). "
        "Prints the URL, the sandbox keys and the ATLAS_NB_SANDBOX line to export "
        "so other processes use it."
    ),
    args=_sandbox_args,
)
def sandbox(args: argparse.Namespace) -> int:
    """Serve the sandbox until a signal (0); 1 when it cannot listen."""
    from ..sandbox.server import Sandbox

    stop = threading.Event()

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        stop.set()

    # SIGHUP too: a closed terminal or a dropped ssh session stops it cleanly, exit 0.
    stops = [signal.SIGINT, signal.SIGTERM]
    if hasattr(signal, "SIGHUP"):  # not on Windows
        stops.append(signal.SIGHUP)
    previous = {sig: signal.signal(sig, on_signal) for sig in stops}
    try:
        server = Sandbox(
            host=args.host,
            port=args.port,
            seed=args.seed,
            validate=args.validate,
            provision_delay_s=args.provision_delay,
            start_delay_s=args.start_delay,
            attach=False,
        )
        try:
            server.start()
        except RuntimeError as exc:  # the address is taken, unknown or not ours to bind
            server.close()
            return failure("atlas-nb sandbox", exc,
                           fix="choose another --port (--port 0 picks a free one) or --host")
        try:
            print(f"atlas_nb sandbox listening on {server.url}")
            for name, key in server.keys.items():
                apis = ",".join(api.name for api in server.clouds[name].apis())
                print(f"  {name:<12} key {key:<24} {server.url}/{name}/{{{apis}}}")
            print("Point another process (a kernel, the CLI, a test) at it with:")
            print(f"  export ATLAS_NB_SANDBOX={server.url}")
            print("Press Ctrl-C to stop.", flush=True)
            while not stop.wait(0.5):
                pass
        finally:
            server.close()
        if args.validate:
            for line in server.violations:
                print(f"violation: {line}")
        print("sandbox stopped", flush=True)
        return OK
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
