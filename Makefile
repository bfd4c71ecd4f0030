# grayrelease.canary developer entry points.
#   make rollout   the main job: bring up the local fleet and roll it v1 -> v2
#   make test      everything CI runs (unit, sanity, lint, molecule)
# Narrower targets for quick iteration: unit, sanity, lint, molecule-<scenario>,
# matrix (unit + sanity on ansible-core 2.16-2.18), fleet, bench, fault-matrix.
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

REPO := $(CURDIR)
VENV := $(REPO)/.venv
PY := $(VENV)/bin/python
# The venv is rebuilt only when its recipe changes.
VENV_STAMP := $(VENV)/.recipe-$(shell cat requirements.txt requirements-test.txt | sha256sum | cut -c1-12)
COLL_ROOT := $(REPO)/.build/collections
COLL_LINK := $(COLL_ROOT)/ansible_collections/grayrelease/canary
export PATH := $(VENV)/bin:$(PATH)
export ANSIBLE_COLLECTIONS_PATH := $(COLL_ROOT)
export ANSIBLE_COLLECTIONS_SCAN_SYS_PATH := true
export PYTHONPATH := $(COLL_ROOT)
export ANSIBLE_FORCE_COLOR := false
export ANSIBLE_NOCOLOR := true
export PY_COLORS := 0
export MOLECULE_NO_LOG := false

# Every scenario once. default is not among them: the rollout scenario runs its
# tests on the same fleet (molecule/rollout/molecule.yml); make molecule-default
# still runs it alone.
SCENARIOS ?= rollout balancer release faults adopt judge containers routing nginx ssh

.PHONY: help venv link unit sanity lint build docker images fleet fleet-down \
	molecule test rollout bench bench-rollout bench-balancers bench-calibrate bench-scale clean

help:
	@sed -n '1,6p' Makefile

venv: $(VENV_STAMP)
$(VENV_STAMP): requirements.txt requirements-test.txt
	scripts/ensure-venv.sh "$(VENV)" "$(VENV_STAMP)"

link: $(COLL_LINK)
$(COLL_LINK):
	mkdir -p $(dir $(COLL_LINK))
	ln -sfn $(REPO) $(COLL_LINK)

unit: venv link
	scripts/run-pytest.sh tests/unit demoapp/tests

sanity: venv
	scripts/sanity.sh

lint: venv link
	ansible-lint --profile production

build: venv
	scripts/build-collection.sh

docker:
	scripts/ensure-docker.sh

images: docker
	scripts/build-images.sh

molecule: venv link images
	for s in $(SCENARIOS); do (cd $(REPO) && molecule test -s $$s) || exit 1; done

molecule-%: venv link images
	molecule test -s $*

# Every fault of the matrix under mixed load on the faults fleet (molecule/faults),
# then its table (detect/restore seconds, failed requests, servers out).
.PHONY: fault-matrix
fault-matrix: venv link images
	molecule test -s faults
	$(PY) scripts/fault-matrix.py

fleet: venv link images
	molecule converge -s default

fleet-down: venv link
	molecule destroy -s default

test: venv link
	scripts/test-all.sh

# The ansible-core matrix (part of make test): unit tests and ansible-test
# sanity on each core meta/runtime.yml allows besides the main venv's 2.19,
# each in a venv of its own (.cache/venv-core-VERSION, built once per recipe
# by scripts/ensure-matrix-venv.sh from tests/matrix/core-VERSION.txt).
# matrix-scenario: a fleet scenario (adopt: the adopt, rollout and rollback
# playbooks under load) on the oldest core.
MATRIX_CORES ?= 2.16 2.17 2.18
MATRIX_SCENARIO ?= adopt
.PHONY: matrix matrix-scenario
matrix: link
	rc=0; for v in $(MATRIX_CORES); do for w in unit sanity; do scripts/matrix.sh $$w $$v || rc=1; done; done; exit $$rc

matrix-scenario: link images
	scripts/matrix.sh molecule 2.16 $(MATRIX_SCENARIO)

rollout: venv link images
	scripts/rollout-demo.sh

bench: venv link
	scripts/bench.sh

# The balancer role on 1 vs 4 real loopback HAProxies: on-self (parallel) vs delegate.
bench-balancers: venv link
	python bench/bench_balancers.py

# The canary judge's false alarms and detection power: real demo app traffic
# recorded on loopback, replayed through the judge (bench/results/calibration.txt).
bench-calibrate: venv link
	python bench/calibrate.py

# Baseline serial rolling update vs grayrelease.canary.rollout on the local
# fleet under mixed load (BENCH_WHICH=baseline|ours|both, BENCH_COLLECTION_ROOT).
bench-rollout: venv link images
	scripts/bench-rollout.sh

# The real rollout on simulated fleets of N = 10, 100, 300, 1000 app hosts (one real
# HAProxy in container scale-lb1, N stand-in hosts on loopback): wall time, tasks,
# coordinator seconds per batch, controller memory, largest fact and runner event,
# a profile (bench/bench_scale.py, bench/results/scale-*.txt).
# SCALE_ARGS=--quick (N=10, 100) or e.g. "--sizes 10,300"; "--sizes 20 --balancers 2,4,2,4"
# times each N on 2 and on 4 balancers in turn and prints the ratio; SCALE_ENGINE_REF=REF.
bench-scale: venv link images
	scripts/ensure-docker.sh >/dev/null
	python bench/bench_scale.py $(SCALE_ARGS)

clean:
	rm -rf .build dist tests/output
