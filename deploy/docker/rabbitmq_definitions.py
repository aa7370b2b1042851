"""Writes the broker's boot definitions: deploy/rabbitmq/definitions.json plus the services' user.

RabbitMQ creates no default user when it imports definitions at boot, and
deploy/rabbitmq/definitions.json defines only the public ``subscriber`` user. So
docker-compose.yml runs this first (service ``rabbitmq-definitions``): it adds the
user the services connect as, named by RABBITMQ_USER (default ``holdspace``) with
the password in RABBITMQ_PASSWORD, stored as a salted SHA-256 hash (RabbitMQ's
``rabbit_password_hashing_sha256``), with every permission on every virtual host of
the file and the ``monitoring`` tag (read-only management UI). RabbitMQ then loads
the result (deploy/docker/rabbitmq/holdspace.conf).

    python rabbitmq_definitions.py SOURCE.json DESTINATION.json

Standard library only: it runs in the service image without the project.
"""

from __future__ import annotations

import base64
import copy
import hashlib
import json
import os
import sys
from pathlib import Path
from typing import Any

HASHING_ALGORITHM = "rabbit_password_hashing_sha256"


def password_hash(password: str, salt: bytes | None = None) -> str:
    """RabbitMQ's stored form: base64(salt + sha256(salt + UTF-8 password)), 4-byte salt."""
    salt = os.urandom(4) if salt is None else salt
    return base64.b64encode(salt + hashlib.sha256(salt + password.encode()).digest()).decode()


def with_service_user(definitions: dict[str, Any], user: str, password: str) -> dict[str, Any]:
    """A copy of ``definitions`` with ``user`` (replacing any user of that name)."""
    if not user or not password:
        raise ValueError("RABBITMQ_USER and RABBITMQ_PASSWORD must not be empty")
    out = copy.deepcopy(definitions)
    out["users"] = [u for u in out.get("users", []) if u.get("name") != user] + [
        {
            "name": user,
            "password_hash": password_hash(password),
            "hashing_algorithm": HASHING_ALGORITHM,
            "tags": "monitoring",
        }
    ]
    vhosts = [v["name"] for v in out.get("vhosts", [])] or ["/"]
    out["permissions"] = [p for p in out.get("permissions", []) if p.get("user") != user] + [
        {"user": user, "vhost": vhost, "configure": ".*", "write": ".*", "read": ".*"}
        for vhost in vhosts
    ]
    return out


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    source, destination = Path(argv[0]), Path(argv[1])
    definitions = with_service_user(
        json.loads(source.read_text()),
        os.environ.get("RABBITMQ_USER", "holdspace"),
        os.environ.get("RABBITMQ_PASSWORD", ""),
    )
    tmp = destination.with_suffix(".tmp")
    tmp.write_text(json.dumps(definitions, indent=2) + "\n")
    tmp.chmod(0o644)  # read by the rabbitmq user of the broker's container
    tmp.replace(destination)
    print(f"rabbitmq-definitions: wrote {destination} with user {definitions['users'][-1]['name']}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
