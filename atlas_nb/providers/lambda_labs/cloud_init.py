"""How a container request becomes a Lambda instance: cloud-init ``user_data``.

Lambda rents whole VMs (Lambda Stack images, with Docker and the NVIDIA
container toolkit); it has no notion of a container image, env or ports. So a
launch carries a ``#cloud-config`` document that

* writes the env (``request.env``, including ``ATLAS_PRESHARED_KEY`` for
  ``auth="bearer"``) to ``ENV_FILE``, mode 0600, owned by root, and
* runs the image with ``docker run --env-file ENV_FILE --publish P:P ...``
  (``--gpus all`` on GPU types), restarting it unless stopped.

Every port is published on the same host port, so it is reachable at the
instance's public IP (``http://{ip}:{port}``) where Lambda's firewall allows it.
``user_data`` is write-only in the API: Lambda never returns it.
"""

from __future__ import annotations

import re

import yaml

from ...errors import ValidationError
from ...models import ComputeRequest

ENV_FILE = "/etc/atlas_nb/container.env"
CONTAINER_NAME = "atlas"
USER_DATA_MAX = 1_000_000
"""The API's cap on ``user_data`` ("cannot exceed 1MB")."""

_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
SSH_PORT = 22


class _Dumper(yaml.SafeDumper):
    """Writes multi-line strings (the env file) as literal ``|`` blocks, readable as is."""


def _str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _str)


def env_file(env: dict[str, str]) -> str:
    """``NAME=value`` lines in Docker's ``--env-file`` format (no quoting, one per line)."""
    for name, value in env.items():
        if not _ENV_NAME.match(name):
            raise ValidationError(
                f"env name {name!r} cannot be passed to a Lambda container; use letters, "
                "digits and underscores, not starting with a digit"
            )
        if any(c in value for c in "\r\n\0"):
            raise ValidationError(
                f"env[{name!r}] holds a line break, which Docker's --env-file cannot carry; "
                "encode it (e.g. base64)"
            )
    return "".join(f"{name}={value}\n" for name, value in env.items())


def docker_run(request: ComputeRequest) -> list[str]:
    """The ``docker run`` argv (cloud-init runs a list without a shell: nothing to escape)."""
    if not request.image:
        raise ValidationError(
            "Lambda runs a container image on the instance: pass image='registry/name:tag'"
        )
    argv = ["docker", "run", "--detach", "--name", CONTAINER_NAME, "--restart", "unless-stopped"]
    if request.gpu is not None:
        argv += ["--gpus", "all"]
    if request.env:
        argv += ["--env-file", ENV_FILE]
    for port in request.ports:
        if port.internal == SSH_PORT:
            raise ValidationError(
                "port 22 is the Lambda instance's own SSH (ssh ubuntu@<ip>); publish the "
                "container on another port"
            )
        suffix = "/udp" if port.protocol == "udp" else ""
        argv += ["--publish", f"{port.internal}:{port.internal}{suffix}"]
    return [*argv, request.image]


def user_data(request: ComputeRequest) -> str:
    """The ``#cloud-config`` that runs ``request.image`` with its env and ports."""
    doc: dict[str, object] = {}
    if request.env:
        doc["write_files"] = [{
            "path": ENV_FILE,
            "permissions": "0600",
            "owner": "root:root",
            "content": env_file(request.env),
        }]
    doc["runcmd"] = [docker_run(request)]
    text = "#cloud-config\n" + yaml.dump(doc, Dumper=_Dumper, sort_keys=False, width=1_000_000)
    if len(text.encode()) > USER_DATA_MAX:
        raise ValidationError(
            f"the cloud-init for this request is {len(text.encode())} bytes, above Lambda's "
            "1 MB user_data limit; pass less env"
        )
    return text
