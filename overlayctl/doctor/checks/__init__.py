"""The checks: each module's `run(ctx) -> list[Finding]`, pure (facts in, findings out). The
runner calls every one in ALL's order; a check that cannot judge (facts missing) says nothing
rather than guess. README "overlayctl doctor" documents what each one looks at."""

from overlayctl.doctor.checks import (
    agent,
    bridge,
    checksum,
    etcd,
    firewall,
    forwarding,
    lease,
    mtu_config,
    mtu_path,
    routes,
    rp_filter,
    underlay,
)

# The model's CHECKS order: a problem low in the stack first (a dead underlay explains a missing
# route's symptoms, not the other way round).
ALL = (
    underlay,
    firewall,
    forwarding,
    mtu_path,
    mtu_config,
    routes,
    bridge,
    agent,
    lease,
    checksum,
    rp_filter,
    etcd,
)
