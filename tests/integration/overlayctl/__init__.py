"""overlayctl over real SSH: a local sshd, sudo, jump hosts, light lab hosts."""
