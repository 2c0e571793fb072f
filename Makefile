# kprobes.fleet — every entry point bootstraps what it needs on a fresh Debian/Ubuntu machine.
#   make demo       lab up + deploy probes + cause failures + per-host summary + the fleet report (.lab/kprobes-fleet-report.html)
#   make test       lint + sanity + unit tests (incl. the report in headless chromium, build/install/EE/changelog) + molecule on real kernels in QEMU (5.10, 6.1, 6.12)
#   make test-lifecycle  reboots, a kernel upgrade, faults on real kernels (molecule lifecycle; not in make test: 33 min of reboots and a kernel install)
#   make test-events  the Event-Driven Ansible loop on a real kernel, tracefs then module backend (not in make test: 3 + 6 min here)
#   make test-metrics  Prometheus (Debian's server, here) scrapes node_exporter on two VMs, module and tracefs; exact counts, the ENOSPC alert (not in make test)
#   make test-core-matrix  sanity + unit tests on each ansible-core release requires_ansible claims (.ci/core-matrix.txt; CORE="oldest newest" or versions picks)
#   make test-extended  molecule (same converge + verify, plus tracefs forced) on Debian sid (newest kernel, 7.x) and bookworm-arm64 (6.1 on arm64)
#   make ee         the execution environment's build context (ansible-builder create, offline) in build/ee-context
#   make dist       the collection tarball users install, in build/
#   make changelog  lint the changelog fragments and regenerate CHANGELOG.rst (antsibull-changelog)
#   make lab        boot the lab fleet (LAB=bullseye,bookworm,trixie; also sid and <release>-arm64; per VM: LAB=bookworm,bookworm:lockdown=integrity), inventory in .lab/inventory.yml
#   make lab-down   stop every lab VM;  make lab-status  list them

SHELL := /bin/bash
.DEFAULT_GOAL := help
PYTHON ?= python3
VENV := .venv
BIN := $(CURDIR)/$(VENV)/bin
export PATH := $(BIN):$(PATH)
export ANSIBLE_CONFIG := $(CURDIR)/ansible.cfg
LAB ?=
export LAB
LAB_DIR ?= .lab
export LAB_DIR
SYS_CMDS := qemu-system-x86_64 qemu-img debootstrap mkfs.ext4 ssh ssh-keygen rsync git
SYS_PKGS := qemu-system-x86 qemu-utils debootstrap e2fsprogs openssh-client rsync git python3-venv
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
# promtool (unit tests: the textfile and the alerting rules) and the prometheus server (make test-metrics)
PROM_CMDS := promtool prometheus
PROM_PKGS := prometheus
# arm64 lab VMs (LAB=bookworm-arm64): the emulator, and qemu-user-static for debootstrap --arch=arm64
ARM64_CMDS := qemu-system-aarch64 qemu-aarch64-static update-binfmts
ARM64_PKGS := qemu-system-arm qemu-user-static binfmt-support

.PHONY: help deps sys-deps arm64-deps prom-deps test-metrics venv lab lab-down lab-status demo deploy test test-lifecycle test-events test-extended test-core-matrix lint sanity unit compile lab-test molecule clean ee dist changelog

help:
	@sed -n 's/^#   //p' Makefile

sys-deps:
	@missing=""; for c in $(SYS_CMDS); do command -v $$c >/dev/null || missing="$$missing $$c"; done; \
	$(PYTHON) -c 'import venv, ensurepip' 2>/dev/null || missing="$$missing python3-venv"; \
	if [ -n "$$missing" ]; then \
	  echo "installing system packages (missing:$$missing)"; \
	  $(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends $(SYS_PKGS) >/dev/null; \
	fi

arm64-deps:
	@missing=""; for c in $(ARM64_CMDS); do command -v $$c >/dev/null || missing="$$missing $$c"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing system packages for arm64 VMs (missing:$$missing)"; \
	  $(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends $(ARM64_PKGS) >/dev/null; \
	fi

prom-deps:
	@missing=""; for c in $(PROM_CMDS); do command -v $$c >/dev/null || missing="$$missing $$c"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing system packages for the metrics (missing:$$missing)"; \
	  $(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends $(PROM_PKGS) >/dev/null; \
	fi

$(VENV)/.installed: requirements.txt
	@[ -x $(VENV)/bin/python ] || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q --disable-pip-version-check -r requirements.txt
	@touch $@

venv: $(VENV)/.installed
deps: sys-deps venv

lab: deps $(if $(findstring -arm64,$(LAB)),arm64-deps)
	$(PYTHON) lab/lab.py up

lab-down:
	$(PYTHON) lab/lab.py down

lab-status:
	@$(PYTHON) lab/lab.py status

deploy: lab
	$(BIN)/ansible-playbook -i $(LAB_DIR)/inventory.yml deploy-probes.yml

demo: lab
	$(BIN)/ansible-playbook -i $(LAB_DIR)/inventory.yml playbooks/demo.yml
	@echo; echo "The lab is still running: 'make lab-status' lists it, 'make lab-down' stops it."
	@echo "Fleet report: $(abspath $(LAB_DIR))/kprobes-fleet-report.html"

lint: venv
	$(BIN)/ansible-lint --profile production

sanity: venv
	.ci/sanity

# Unit tests, plus the compile tests when kernel headers are installed on this machine.
unit: venv prom-deps
	$(BIN)/pytest -q tests/unit

compile: venv
	$(BIN)/pytest -q -m compile tests/unit

# The lab itself on a real VM: idempotent up, clean down, a VM that cannot boot.
lab-test: deps
	$(BIN)/pytest -q tests/vm --ignore=tests/vm/test_events.py --ignore=tests/vm/test_metrics.py

# The pipeline on 5.10, 6.1, 6.12.
molecule: deps
	$(BIN)/molecule test

test: deps lint sanity unit lab-test molecule
	@echo "make test: all passed"

# Reboots, a kernel upgrade and faults on real kernels (molecule/lifecycle, README "Lifecycle"). Not in
# make test: four VM reboots and a kernel install inside a VM took 33 minutes under TCG (2026-11-29).
test-lifecycle: deps
	$(BIN)/molecule test -s lifecycle
	@echo "make test-lifecycle: all passed"

# The EDA loop (tests/vm/test_events.py), one VM, on tracefs then on the module backend (headers and a
# build in the VM). Not in make test: 3.2 + 6.2 min on the idle 2-core machine (2026-11-29; 6-9 min for
# the tracefs run alone while other VMs ran), over the ~6 min a make test addition may take.
test-events: deps
	EVENTS_BACKEND=tracefs $(BIN)/pytest -q tests/vm/test_events.py
	EVENTS_BACKEND=module $(BIN)/pytest -q tests/vm/test_events.py
	@echo "make test-events: all passed"

# Metrics (tests/vm/test_metrics.py, README "Metrics"): two VMs (module, tracefs) with node_exporter, a
# prometheus server here on loopback. Not in make test: it boots two VMs, builds, reboots one.
test-metrics: deps prom-deps
	$(BIN)/pytest -q tests/vm/test_metrics.py
	@echo "make test-metrics: all passed"

# meta/runtime.yml's requires_ansible, tested: sanity and the unit tests on each ansible-core release of
# .ci/core-matrix.txt (the claimed range that runs on Python 3.11), each in a throwaway virtualenv
# build/core-VERSION (requirements.txt with only ansible-core replaced). CI runs it after make test.
CORE ?=
test-core-matrix: venv
	.ci/core-matrix $(CORE)
	@echo "make test-core-matrix: all passed"

# Kernels outside CI's 90 minutes (molecule/extended): Debian sid (the newest kernel) and arm64.
test-extended: deps arm64-deps
	$(BIN)/molecule test -s extended
	$(BIN)/molecule test -s extended-arm64
	@echo "make test-extended: all passed"

ee: venv
	ee/create build/ee-context

dist: venv
	$(BIN)/ansible-galaxy collection build --force --output-path build .

changelog: venv
	changelogs/generate

clean: lab-down
	rm -rf .lab tests/output build
