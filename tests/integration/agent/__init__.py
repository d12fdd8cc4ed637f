"""The agent against a real etcd and real kernels, in light lab hosts."""
