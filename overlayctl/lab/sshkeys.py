"""SSH keys for the lab: one client key pair per lab, fresh host keys per host, known_hosts."""

from __future__ import annotations

import os
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey


def write_keypair(private_path: Path, comment: str) -> str:
    """Create an ed25519 key pair in OpenSSH format (private 0600, public next to it).

    Returns the public key line ("ssh-ed25519 AAAA... comment").
    """
    key = Ed25519PrivateKey.generate()
    private = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.OpenSSH,
        serialization.NoEncryption(),
    )
    public = (
        key.public_key()
        .public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
        .decode()
    )
    private_path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(private_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(private)
    os.chmod(private_path, 0o600)
    line = f"{public} {comment}"
    Path(f"{private_path}.pub").write_text(line + "\n")
    return line


def known_hosts_line(names: list[str], public_key_line: str) -> str:
    """One known_hosts entry: "name,address ssh-ed25519 AAAA..." (the comment is dropped)."""
    key_type, key_b64 = public_key_line.split()[:2]
    return f"{','.join(names)} {key_type} {key_b64}"
