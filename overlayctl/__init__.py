"""overlayctl: etcd, a flannel-compatible overlay and docker's --bip over SSH, in one command."""

__version__ = "0.1.0"
