"""Planning, pure: no SSH, no I/O but reading templates. From the inventory and what a host is
like (facts.py: its facts and current files) to what it should have (render.py: every file from
the Jinja2 templates; files.py: those and its certificates) and what must change (changes.py: the
per-host plan, a diff of files and a list of actions, each in its phase; config_change.py: a
network config that differs from etcd's). The phases (overlayctl/phases/) decide their actions
from these and apply them.
"""
