"""The cluster's etcd secrets beside its certificates (STATE_DIR/pki, 0700; files 0600): each
host user's password (<host>.password), the root user's (root.password), which passwords etcd
was last given (etcd-users.json: a SHA-256 of each, so a re-run knows what to change without
etcd, which never shows one) and the hosts revoked by `certs revoke` (revoked.json).

Why passwords beside certificates: the agent speaks etcd's JSON gateway by default, and the
gateway does not map a client certificate's CN to a user (etcd docs, "Why gRPC gateway"; etcd
PR 10366). Agents log in with user and password for a token; their certificate still gates TLS.
etcd 3.4 also wants a password for `user add root`: it exists only here, never on a host.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import secrets
from pathlib import Path

from overlayctl.errors import OverlayctlError
from overlayctl.pki.certs import write_file

USERS = "etcd-users.json"
REVOKED = "revoked.json"


def digest(password: str) -> str:
    """What etcd-users.json keeps of a password (random, 256 bits: no salt needed)."""
    return hashlib.sha256(password.encode()).hexdigest()


class Identities:
    """The secrets of one cluster in DIR. WRITE False (`plan`): new passwords stay in memory."""

    def __init__(self, folder: Path, write: bool = True) -> None:
        self.dir = folder
        self._write = write
        self._unwritten: dict[str, str] = {}

    # -- passwords -----------------------------------------------------------------------------
    def ensure_password(self, user: str) -> bool:
        """USER's password, made when missing; True when it was made now."""
        path = self.dir / f"{user}.password"
        if user in self._unwritten or path.exists():
            return False
        password = secrets.token_urlsafe(32)
        if self._write:
            write_file(path, (password + "\n").encode(), 0o600)
        else:
            self._unwritten[user] = password
        return True

    def password(self, user: str) -> str:
        if user in self._unwritten:
            return self._unwritten[user]
        try:
            return (self.dir / f"{user}.password").read_text().strip()
        except OSError as exc:
            raise OverlayctlError(f"the etcd password of {user} cannot be read: {exc}") from None

    def forget(self, user: str) -> list[str]:
        """USER's password and client certificate gone from this folder, and its record; the
        file names removed."""
        gone = []
        for name in (f"{user}.password", f"{user}-client.crt", f"{user}-client.key"):
            path = self.dir / name
            if path.exists():
                path.unlink()
                gone.append(name)
        self.record_set(user, None)
        return gone

    # -- what etcd was given -------------------------------------------------------------------
    def _users(self) -> dict[str, str]:
        return _read_json(self.dir / USERS)

    def etcd_has(self, user: str) -> bool:
        """etcd was given USER's current password (by this folder, as far as it knows)."""
        return self._users().get(user) == digest(self.password(user))

    def record_set(self, user: str, password: str | None) -> None:
        """etcd now holds PASSWORD for USER (None: USER is gone from etcd)."""
        users = self._users()
        if password is None:
            if users.pop(user, None) is None:
                return
        elif users.get(user) == digest(password):
            return
        else:
            users[user] = digest(password)
        _write_json(self.dir / USERS, users)

    # -- revocations -----------------------------------------------------------------------------
    def revoked(self) -> dict[str, str]:
        """Revoked host -> when (ISO 8601, UTC)."""
        return _read_json(self.dir / REVOKED)

    def revoke(self, host: str) -> None:
        when = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
        _write_json(self.dir / REVOKED, self.revoked() | {host: when})

    def readmit(self, host: str) -> None:
        revoked = self.revoked()
        if revoked.pop(host, None) is not None and self._write:
            _write_json(self.dir / REVOKED, revoked)


def _read_json(path: Path) -> dict[str, str]:
    if not path.exists():
        return {}
    try:
        doc = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise OverlayctlError(f"{path}: unreadable ({exc}); fix or remove it") from None
    if not isinstance(doc, dict) or not all(isinstance(v, str) for v in doc.values()):
        raise OverlayctlError(f"{path}: not a JSON object of strings; fix or remove it")
    return doc


def _write_json(path: Path, doc: dict[str, str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    write_file(path, (json.dumps(doc, indent=2, sort_keys=True) + "\n").encode(), 0o600)
