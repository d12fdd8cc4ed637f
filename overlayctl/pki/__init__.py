"""The cluster's PKI and etcd identities, kept in the state folder beside the inventory:
certificates (store.py, built by certs.py) and the etcd users' passwords and records
(identities.py). Everything a caller needs is importable from here."""

from __future__ import annotations

from overlayctl.pki import certs
from overlayctl.pki.certs import (
    CA_DAYS,
    LEAF_DAYS,
    RENEW_BEFORE,
    Member,
    fingerprint,
    foreign_cas,
)
from overlayctl.pki.identities import Identities
from overlayctl.pki.store import ADMIN, REPLACEMENT, ROUNDS, KeyPair, Pki, Replacement

__all__ = [
    "ADMIN",
    "CA_DAYS",
    "LEAF_DAYS",
    "RENEW_BEFORE",
    "REPLACEMENT",
    "ROUNDS",
    "Identities",
    "KeyPair",
    "Member",
    "Pki",
    "Replacement",
    "certs",
    "fingerprint",
    "foreign_cas",
]
