# The two commands of the README: `make run` and `make test`. Everything they need is
# built or installed from here; only the Rust toolchain has to be present.

CARGO    ?= cargo
DATA_DIR ?= data
# Extra flags for the hub, e.g. `make run HUB_FLAGS="--brokers kafka:9092"`.
HUB_FLAGS ?=

# The real broker and the Python spokes of `make e2e`, pinned.
TANSU_VERSION ?= 0.6.0
# A second tansu, built with its sqlite engine, which compacts topics (the erasure check
# of the raw change feed); installed once per machine outside the checkout.
TANSU_COMPACTING_ROOT ?= $(HOME)/.cache/cmdm-tools/tansu-$(TANSU_VERSION)-libsql
TANSU_COMPACTING ?= $(TANSU_COMPACTING_ROOT)/bin/tansu
E2E_PY_PACKAGES ?= confluent-kafka==2.16.1 kafka-python==3.0.12 grpcio-tools==1.85.1
E2E_VENV ?= .venv-e2e

.PHONY: run test lint ci tour tools e2e e2e-tools build clean help

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed 's/:.*## /\t/'

run: ## build and start the hub on its embedded defaults (embedded broker, ./data, gRPC on 127.0.0.1:50051)
	$(CARGO) build --release -p cmdm-hub -p cmdm-cli
	./target/release/cmdm-hub --data-dir $(DATA_DIR) $(HUB_FLAGS)

test: ## run the whole test suite (unit, property and in-process end-to-end tests)
	$(CARGO) test --workspace

lint: ## formatting and clippy, as CI checks them
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --all-targets -- -D warnings

ci: lint test e2e tour ## everything CI runs

tour: tools ## run the README tour against a fresh hub and check its answer
	bash tests/tour.sh

tools: ## install kcat (Debian) for the tour, if missing
	@command -v kcat >/dev/null 2>&1 || { \
	  echo "installing kcat"; \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && $$SUDO apt-get install -y -qq kcat; }

e2e: e2e-tools ## end to end against a real Kafka-compatible broker (tansu) with Python spokes
	PYTHON=$(E2E_VENV)/bin/python bash tests/real-broker/run.sh
	PYTHON=$(E2E_VENV)/bin/python TANSU_COMPACTING=$(TANSU_COMPACTING) bash tests/real-broker/compaction.sh

e2e-tools: ## install tansu twice (in-memory, and sqlite which compacts; cargo install, ~12 min each, once per machine) and the Python Kafka clients (pip, in .venv-e2e)
	@command -v tansu >/dev/null 2>&1 || { \
	  echo "installing tansu $(TANSU_VERSION) (about 12 minutes on 2 cores, once per machine)"; \
	  $(CARGO) install --locked tansu@$(TANSU_VERSION) --features dynostore; }
	@[ -x $(TANSU_COMPACTING) ] || { \
	  echo "installing tansu $(TANSU_VERSION) with its sqlite engine into $(TANSU_COMPACTING_ROOT) (once per machine)"; \
	  $(CARGO) install --locked tansu@$(TANSU_VERSION) --features libsql --root $(TANSU_COMPACTING_ROOT); }
	@[ -x $(E2E_VENV)/bin/python ] || python3 -m venv $(E2E_VENV)
	@$(E2E_VENV)/bin/python -c 'import confluent_kafka, kafka, grpc_tools' 2>/dev/null || \
	  $(E2E_VENV)/bin/pip install -q $(E2E_PY_PACKAGES)

build: ## release build of both binaries
	$(CARGO) build --release -p cmdm-hub -p cmdm-cli

clean: ## remove build output, the default data directory and the e2e Python environment
	$(CARGO) clean
	rm -rf $(DATA_DIR) $(E2E_VENV)
