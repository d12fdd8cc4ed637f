"""`overlayctl certs rotate`: new member and client certificates from the same CA, pushed by
init's phases: etcd members restart one at a time (quorum kept), agents one host at a time (the
data plane stays up). The CA stays: replacing it is a rebuild (see reset)."""

from __future__ import annotations

import dataclasses

from overlayctl.actions.init import run_init
from overlayctl.phases.base import RolloutOptions, RolloutReport
from overlayctl.remote.session import Session


def rotate(
    session: Session, options: RolloutOptions, report: RolloutReport | None = None
) -> RolloutReport:
    return run_init(session, dataclasses.replace(options, renew_certificates=True), report)
