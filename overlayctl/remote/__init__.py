"""The only package that talks to hosts: SSH connections, remote files, locks, host groups."""
