"""The checks: each module's `run(ctx) -> list[Finding]`, pure (facts in, findings out). The
runner calls every one in CHECKS' order; a check that cannot judge (facts missing) says nothing
rather than guess."""
