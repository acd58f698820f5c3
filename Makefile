# provisioner: Make targets for operators, CI and benchmarks.
# Every target installs what it needs first (scripts/setup.sh is idempotent and quick
# when nothing is missing).

SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
PROVISIONER := $(VENV)/bin/provisioner
INVENTORY ?= inventory/examples/lab.yaml
LAB_INVENTORY ?= inventory/examples/lab.yaml
PYTEST_ARGS ?=

.PHONY: setup up test test-quick lint racks bench-inventory help

help:
	@echo "make up               set up, start the virtual lab and run provisioner up on it (the main job)"
	@echo "make up-cluster       the same, up to the formed cluster only (no platform)"
	@echo "make setup            install system packages, the virtualenv and the lab image"
	@echo "make test             set up and run the whole test suite, lab and end-to-end included (CI)"
	@echo "make test-quick       the tests that need no virtual machines"
	@echo "make lab-e2e          only the end-to-end provisioning tests against the lab"
	@echo "make lint             ruff + mypy"
	@echo "make racks            list the racks of INVENTORY ($(INVENTORY))"
	@echo "make rack-NAME        run the provisioning of one rack of INVENTORY"
	@echo "make bench-*          benchmarks (see benchmarks/)"

setup:
	@bash scripts/setup.sh

test: setup
	$(VENV)/bin/pytest $(PYTEST_ARGS)

test-quick: setup
	$(VENV)/bin/pytest -m "not lab" $(PYTEST_ARGS)

# The main job on the built-in default: the virtual lab stands in for the hardware.
# The lab's addresses exist only inside its namespace, so the tool runs there. From powered-off
# VMs to "platform paas-full ready" (the Cozystack platform on the lab's Kubernetes stand-in).
up: setup
	$(PROVISIONER) -i $(LAB_INVENTORY) lab up
	$(PROVISIONER) -i $(LAB_INVENTORY) platform assets lab-import
	$(PROVISIONER) -i $(LAB_INVENTORY) lab exec -- $(abspath $(PROVISIONER)) -i $(LAB_INVENTORY) up
	$(PROVISIONER) -i $(LAB_INVENTORY) lab exec -- $(abspath $(PY)) -m provisioner.lab.kube wait-nodes --kubeconfig state/lab/kubeconfig --count 4

# Only the hardware stages: powered-off VMs to a formed cluster and its kubeconfig.
.PHONY: up-cluster
up-cluster: setup
	$(PROVISIONER) -i $(LAB_INVENTORY) lab up
	$(PROVISIONER) -i $(LAB_INVENTORY) lab exec -- $(abspath $(PROVISIONER)) -i $(LAB_INVENTORY) up --until cluster

lint: setup
	$(VENV)/bin/ruff check provisioner tests benchmarks
	$(VENV)/bin/mypy

# Per-rack targets come from the inventory: `make rack-r1` runs rack r1 of INVENTORY.
# An unknown rack is refused by the tool itself (exit 2), listing the known racks.
racks: setup
	@$(PROVISIONER) --inventory $(INVENTORY) --output json plan | $(PY) -c 'import json,sys; [print("rack-" + r["name"]) for r in json.load(sys.stdin)["racks"]]'

# The lab inventory's addresses live in the lab namespace: run the tool there.
IN_SITE = $(if $(filter $(LAB_INVENTORY) $(RACKS_INVENTORY),$(INVENTORY)),$(PROVISIONER) -i $(INVENTORY) lab exec -- $(abspath $(PROVISIONER)),$(PROVISIONER))

# UP_ARGS: options for up, e.g. UP_ARGS="--until cluster" or "--keep-boot-servers".
UP_ARGS ?=
rack-%: setup
	$(IN_SITE) --inventory $(INVENTORY) --rack $* up $(UP_ARGS)

bench-inventory: setup
	$(PY) benchmarks/bench_inventory.py

# Talos machine API: regenerate provisioner/talosapi/gen/ (committed) from provisioner/talosapi/proto/.
.PHONY: proto test-talosapi bench-talosapi
proto: setup
	$(PY) -m provisioner.talosapi.protogen

test-talosapi: setup
	$(VENV)/bin/pytest tests/talosapi $(PYTEST_ARGS)

bench-talosapi: setup
	$(PY) benchmarks/bench_talosapi.py

.PHONY: bench-configs
bench-configs: setup
	$(PY) benchmarks/bench_configs.py

# Talos stand-in OS agent (provisioner/lab/standin/): host tests on loopback with the real etcd, and its benchmark.
.PHONY: test-standin bench-standin
test-standin: setup
	$(VENV)/bin/pytest tests/standin $(PYTEST_ARGS)

bench-standin: setup
	$(PY) benchmarks/bench_standin.py

# --- the virtual lab (QEMU nodes, emulated BMCs, Talos stand-in); see provisioner/lab/ ---
.PHONY: lab-setup lab-up lab-down lab-status lab-test

lab-setup: setup
	@bash scripts/lab-setup.sh

lab-up: lab-setup
	$(PROVISIONER) -i $(LAB_INVENTORY) lab up

lab-down:
	$(PROVISIONER) -i $(LAB_INVENTORY) lab down

lab-status:
	$(PROVISIONER) -i $(LAB_INVENTORY) lab status

# The lab's acceptance tests (3 VMs; needs root). The fixture tears the lab down itself.
lab-test: lab-setup
	$(VENV)/bin/pytest -m lab tests/lab -p no:cacheprovider --timeout 1200 $(PYTEST_ARGS)

# `provisioner up` end to end: 3 control planes + 1 worker, kill -9 and resume, reset,
# BMC fault injection (needs root; brings its own labs up and down).
.PHONY: lab-e2e bench-up
lab-e2e: lab-setup
	$(VENV)/bin/pytest tests/e2e -p no:cacheprovider --timeout 2400 $(PYTEST_ARGS)

# Each node's power-on -> installed time against the lab, and the total.
bench-up: lab-setup
	$(PY) benchmarks/bench_up.py

.PHONY: bench-http
# 32 concurrent 100 MB downloads over loopback: the netboot HTTP server vs nginx (same run).
bench-http: setup
	$(PY) benchmarks/bench_http.py

bench-bmc: setup
	$(PY) benchmarks/bench_bmc.py
.PHONY: bench-bmc

# The HTML site report (provisioner/report/): its tests (headless Chromium) and the 1,000-node benchmark.
.PHONY: test-report bench-report
test-report: setup
	$(VENV)/bin/pytest tests/report -p no:cacheprovider $(PYTEST_ARGS)

bench-report: setup
	$(PY) benchmarks/bench_report.py

# Event log (provisioner/events.py): one poll for a node's new events against a 200,000-line log.
.PHONY: bench-events
bench-events: setup
	$(PY) benchmarks/bench_events.py

# Kubernetes API server stand-in (provisioner/lab/kube/): contract tests against a host cluster
# (real etcd, the server over mutual TLS, lightkube and kubectl as clients; part of `make test`),
# and its request-rate benchmark (target >= 300 server-side applies/s).
.PHONY: test-kube bench-kube
test-kube: setup
	$(VENV)/bin/pytest tests/kube -p no:cacheprovider $(PYTEST_ARGS)

bench-kube: setup
	$(PY) benchmarks/bench_kube.py

# The same API in the lab: a list of 100 HelmReleases through the VIP under TCG (target <= 2 s).
.PHONY: bench-kube-lab
bench-kube-lab: lab-setup
	$(PY) benchmarks/bench_kube_lab.py

# Cozystack simulator (provisioner/lab/kube/cozysim/): unit tests of its rules, then integration tests
# against a host cluster (real etcd, the API server stand-in, the simulator as its own process).
.PHONY: test-cozysim
test-cozysim: setup
	$(VENV)/bin/pytest tests/cozysim -p no:cacheprovider $(PYTEST_ARGS)

# Cozystack platform stage (provisioner/cozystack/): unit, schema and API stand-in tests; the benchmark
# installs paas-full against the host stand-in + simulator (requests per object, zero-write rerun).
.PHONY: test-platform bench-platform
test-platform: setup
	$(VENV)/bin/pytest tests/cozystack -p no:cacheprovider $(PYTEST_ARGS)

bench-platform: setup
	$(PY) benchmarks/bench_platform.py

# --- simulated fleet (provisioner/lab/fleet/): `up` against many simulated machines, no VMs (needs root) ---
.PHONY: test-fleet bench-scale
test-fleet: setup
	$(VENV)/bin/pytest tests/fleet -p no:cacheprovider $(PYTEST_ARGS)

# The orchestrator's figures at 100, 300 and 1,000 simulated nodes; exits 1 on a missed target.
bench-scale: setup
	$(PY) benchmarks/bench_scale.py

# --- the two-rack lab (inventory/examples/lab-racks.yaml): rack r2 behind a router, its own
# site DHCP server, a boot server (sshd + proxy-DHCP), UEFI nodes. `make lab-racks-up`, then
# `make INVENTORY=inventory/examples/lab-racks.yaml rack-r1` and `... rack-r2` (in parallel too).
RACKS_INVENTORY := inventory/examples/lab-racks.yaml
.PHONY: lab-racks-up lab-racks-down lab-e2e-racks
lab-racks-up: lab-setup
	PROVISIONER_LAB_DIR=.lab-racks $(PROVISIONER) -i $(RACKS_INVENTORY) lab up

lab-racks-down:
	PROVISIONER_LAB_DIR=.lab-racks $(PROVISIONER) -i $(RACKS_INVENTORY) lab down

# The two-rack lab's acceptance tests (part of `make test`; brings its own labs up and down).
lab-e2e-racks: lab-setup
	$(VENV)/bin/pytest tests/racks -p no:cacheprovider --timeout 2400 $(PYTEST_ARGS)
