# The two commands of the README: `make run` and `make test`. Everything they need is
# built or installed from here; only the Rust toolchain has to be present.

CARGO    ?= cargo
DATA_DIR ?= data
# Extra flags for the hub, e.g. `make run HUB_FLAGS="--brokers kafka:9092"`.
HUB_FLAGS ?=

.PHONY: run test lint ci tour tools build clean help

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

ci: lint test tour ## everything CI runs

tour: tools ## run the README tour against a fresh hub and check its answer
	bash tests/tour.sh

tools: ## install kcat (Debian) for the tour, if missing
	@command -v kcat >/dev/null 2>&1 || { \
	  echo "installing kcat"; \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && $$SUDO apt-get install -y -qq kcat; }

build: ## release build of both binaries
	$(CARGO) build --release -p cmdm-hub -p cmdm-cli

clean: ## remove build output and the default data directory
	$(CARGO) clean
	rm -rf $(DATA_DIR)
