# Two entry points for a fresh Debian/Ubuntu machine, as root: `make demo` and `make test`.
# Each installs what it needs (Debian packages, a venv, the lab template) and is safe to re-run.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
LAB ?= demo
HOSTS ?= 3

.PHONY: deps venv lint format template box test test-scale test-vm test-unit demo demo-down clean

deps:
	./scripts/deps.sh

$(BIN)/overlayctl: pyproject.toml setup.cfg
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test]'
	touch $@

venv: $(BIN)/overlayctl

lint: venv
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: venv
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

# The lab's root filesystem, and the agent's wheels for the hosts' Python (Debian 12: 3.11;
# RHEL 9: 3.9, which a test installs the agent on).
template: deps venv
	$(BIN)/overlayctl lab template
	$(BIN)/overlayctl wheelhouse --python 3.11
	$(BIN)/overlayctl wheelhouse --python 3.9

# The Vagrant libvirt box the vm tier boots (Debian bookworm, debootstrap; cached by its recipe
# under /var/cache/overlayctl/box, rebuilt only when the recipe changes).
box: deps venv
	nice -n 10 $(BIN)/overlayctl lab box

# The whole suite: lint, then every tier (unit, light lab, full lab hosts) on JOBS workers. The
# lab tiers mostly wait (etcd elections, docker restarts, boots): two workers on two cores cut the
# wall time without crowding the CPU. Each lab module (and the shared cluster's users) stays on one
# worker (tests/conftest.py groups them). JOBS=0 runs everything in this one process.
# The vm tier (3 VMs under software emulation: both cores) runs alone, never beside the lab
# tiers: `make test` runs it last, as `make test-vm`, which prints its log (-rP): the guests'
# kernels, each step's time, the peak memory.
JOBS ?= 2
test: deps venv lint template
	$(BIN)/pytest -n $(JOBS) --dist loadgroup -m 'not vm and not scale' $(PYTEST_ARGS)
	$(MAKE) test-scale
	$(MAKE) test-vm

# 255 agents at once (a full /16, tests/scale): alone, like the vm tier.
test-scale: deps venv
	$(BIN)/pytest -m scale -rP $(PYTEST_ARGS) || [ $$? -eq 5 ]

# Exit 5 (PYTEST_ARGS selected no vm test) is not a failure.
test-vm: deps venv
	$(BIN)/overlayctl wheelhouse --python 3.11
	$(BIN)/pytest -m vm -rP $(PYTEST_ARGS) || [ $$? -eq 5 ]

test-unit: venv
	$(BIN)/pytest -m 'not lab' $(PYTEST_ARGS)

demo: deps venv template
	./scripts/demo.sh $(LAB) $(HOSTS)

demo-down: venv
	$(BIN)/overlayctl lab down --name $(LAB)

clean:
	rm -rf $(VENV) build dist .pytest_cache .ruff_cache
