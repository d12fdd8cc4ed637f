"""Emulated hosts on one machine: systemd-nspawn "full" hosts and namespace-only "light" hosts."""
