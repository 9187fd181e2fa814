# Atelier: developer entry points. `make` (or `make help`) lists the targets.

SHELL := bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help
MAKEFLAGS += --no-builtin-rules --no-print-directory
.DELETE_ON_ERROR:
.SUFFIXES:

CARGO ?= cargo
NPM ?= npm
JOBS ?= 2
# Where cargo puts its output: CARGO_TARGET_DIR when set (e.g. by .ci/run), else ./target.
TARGET_DIR := $(or $(CARGO_TARGET_DIR),target)
ATELIER_BIN := $(TARGET_DIR)/debug/atelier
# Extra arguments for `atelier serve`, e.g. `make run ARGS='--target processing'`.
ARGS ?=

# Real backends for the integration tests (see .ci/deps.sh).
TEST_DATABASE_URL ?= postgres://postgres@127.0.0.1:5432/postgres
TEST_REDIS_URL ?= redis://127.0.0.1:6379
TEST_S3_ENDPOINT ?= http://127.0.0.1:9000
TEST_S3_ACCESS_KEY ?= atelier-test
TEST_S3_SECRET_KEY ?= atelier-test-secret
# s3s-fs's data directory: the storage tests read it for multipart uploads in flight.
TEST_S3_FS_ROOT ?= /tmp/atelier-s3

# The test run's output, summed up in one closing line.
TEST_LOG := $(TARGET_DIR)/atelier-test.log

WEB_DIR := gateway/web
# The end-to-end tests drive the system's Chromium (/usr/bin/chromium): npm never downloads one.
export PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD := 1
# npm writes node_modules/.package-lock.json on every install: it stamps the install.
WEB_DEPS := $(WEB_DIR)/node_modules/.package-lock.json

.PHONY: help
help: ## Show this help
	@echo 'usage: make <target>'
	@echo
	@grep -hE '^[a-zA-Z0-9_-]+:.*## ' $(MAKEFILE_LIST) \
		| awk 'BEGIN {FS = ":.*## "}; {printf "  %-8s %s\n", $$1, $$2}'

.PHONY: run
run: web ## Build the web assets and the atelier binary (debug), then run `atelier serve`
	$(CARGO) build -j$(JOBS) -p atelier
	exec $(ATELIER_BIN) serve $(ARGS)

.PHONY: test
test: ## Everything CI runs: deps, web build, lint, sbom, then the workspace tests and the web app's (web-test)
	bash .ci/deps.sh
	$(MAKE) web
	$(MAKE) lint
	$(MAKE) sbom
	$(MAKE) helm-lint k8s-render
	TEST_DATABASE_URL='$(TEST_DATABASE_URL)' TEST_REDIS_URL='$(TEST_REDIS_URL)' \
		TEST_S3_ENDPOINT='$(TEST_S3_ENDPOINT)' TEST_S3_ACCESS_KEY='$(TEST_S3_ACCESS_KEY)' \
		TEST_S3_SECRET_KEY='$(TEST_S3_SECRET_KEY)' TEST_S3_FS_ROOT='$(TEST_S3_FS_ROOT)' \
		$(CARGO) test -j$(JOBS) --workspace --all-targets 2>&1 | tee $(TEST_LOG)
	$(MAKE) web-test 2>&1 | tee -a $(TEST_LOG)
	$(MAKE) client-test 2>&1 | tee -a $(TEST_LOG)
	@awk '/^test result:/ { passed += $$4; failed += $$6 } \
		/^ +Tests +[0-9]+ passed/ { passed += $$2 } /^e2e: [0-9]+ passed/ { passed += $$2; failed += $$4 } \
		/^test_[a-z0-9_]+ \(.*\) \.\.\. ok$$/ { passed += 1 } /^test_[a-z0-9_]+ \(.*\) \.\.\. (FAIL|ERROR)$$/ { failed += 1 } \
		END { printf "tests: %d passed, %d failed\n", passed, failed }' $(TEST_LOG)

# The commit whose protos `make lint` checks the current ones against for breaking changes.
PROTO_BASE ?= HEAD~1

.PHONY: lint
lint: ## cargo fmt --check, clippy -D warnings, buf lint, buf breaking against PROTO_BASE, deny, npm-audit
	$(CARGO) fmt --all --check
	$(CARGO) clippy -j$(JOBS) --workspace --all-targets -- -D warnings
	cd proto && buf lint
	base=$$(mktemp -d) && trap 'rm -rf "$$base"' EXIT && \
		git archive '$(PROTO_BASE)' proto | tar -x -C "$$base" && \
		cd proto && buf breaking --against "$$base/proto"
	$(MAKE) deny npm-audit

# Where cargo-deny looks for the RustSec advisory database (deny.toml's default db-path).
# It cannot be fetched from every network: put a copy there (see README, "Dependency
# hygiene") and `make deny` checks advisories against it without fetching.
ADVISORY_DBS ?= $(or $(CARGO_HOME),$(HOME)/.cargo)/advisory-dbs

.PHONY: deny
deny: ## cargo deny: licences, bans, sources; advisories against a local RustSec copy (a loud skip and a self-test without one)
	$(CARGO) deny --log-level error check licenses bans sources
	ADVISORY_DBS='$(ADVISORY_DBS)' bash .ci/deny-advisories

.PHONY: npm-audit
npm-audit: ## npm audit of the web app's production dependencies, with its justified allowlist (a loud skip where the registry does not answer)
	cd $(WEB_DIR) && node scripts/audit.mjs

SBOM_DIR := $(abspath $(TARGET_DIR))/sbom

.PHONY: sbom
sbom: $(WEB_DEPS) ## CycloneDX SBOMs of the atelier binary (its crates) and the web app (npm) into $(TARGET_DIR)/sbom
	rm -rf '$(SBOM_DIR)' && mkdir -p '$(SBOM_DIR)'
	$(CARGO) cyclonedx --manifest-path services/atelier/Cargo.toml --format json --spec-version 1.5 \
		--target x86_64-unknown-linux-gnu --override-filename atelier.cdx
	mv services/atelier/atelier.cdx.json '$(SBOM_DIR)/'
	# cargo-cyclonedx describes every workspace member: the binary's document names them all.
	find . -name atelier.cdx.json -not -path './$(WEB_DIR)/node_modules/*' -delete
	cd $(WEB_DIR) && $(NPM) sbom --sbom-format cyclonedx --omit dev > '$(SBOM_DIR)/atelier-web.cdx.json'
	python3 .ci/check-sbom '$(SBOM_DIR)/atelier.cdx.json' '$(SBOM_DIR)/atelier-web.cdx.json'

.PHONY: helm-lint
helm-lint: ## Lint and render helm/atelier offline, validate it against the Kubernetes schemas; check the Dockerfile
	PYTHONDONTWRITEBYTECODE=1 python3 -m unittest discover -s helm/tests

.PHONY: k8s-render
k8s-render: ## Render the kustomize overlays (k8s/) and validate them against the Kubernetes schemas
	PYTHONDONTWRITEBYTECODE=1 python3 -m unittest discover -s k8s/tests

.PHONY: fmt
fmt: ## Format the Rust code
	$(CARGO) fmt --all

.PHONY: web
web: $(WEB_DEPS) ## Build the web assets into gateway/web/dist
	cd $(WEB_DIR) && $(NPM) run build --silent

.PHONY: web-test
web-test: web ## Web app: typecheck, eslint, Vitest, then end-to-end (Playwright, Chromium) against atelier serve
	$(CARGO) build -j$(JOBS) -p atelier
	cd $(WEB_DIR) && $(NPM) run typecheck --silent && $(NPM) run lint --silent && $(NPM) test --silent
	cd $(WEB_DIR) && ATELIER_BIN='$(abspath $(ATELIER_BIN))' $(NPM) run e2e --silent

# Cases per operation of the contract run (Schemathesis): short in `make test`.
CONTRACT_MAX_EXAMPLES ?= 15

.PHONY: client-test
client-test: ## Clients generated from the contracts (OpenAPI, protos) drive the platform; Schemathesis checks the API
	$(CARGO) build -j$(JOBS) -p atelier
	ATELIER_BIN='$(abspath $(ATELIER_BIN))' CONTRACT_MAX_EXAMPLES='$(CONTRACT_MAX_EXAMPLES)' PYTHONDONTWRITEBYTECODE=1 \
		python3 -m unittest discover -v -s gateway/tests/clients

.PHONY: contract
contract: ## A long Schemathesis run (CONTRACT_MAX_EXAMPLES=300, a new seed) against the served OpenAPI document
	$(CARGO) build -j$(JOBS) -p atelier
	ATELIER_BIN='$(abspath $(ATELIER_BIN))' CONTRACT_MAX_EXAMPLES=300 CONTRACT_SEED=random PYTHONDONTWRITEBYTECODE=1 \
		python3 -m unittest discover -v -s gateway/tests/clients -p test_contract.py

.PHONY: openapi
openapi: ## Rewrite gateway/web/openapi.json (the web app's API types come from it)
	UPDATE_OPENAPI=1 $(CARGO) test -j$(JOBS) -p atelier-gateway --test openapi_snapshot

$(WEB_DEPS): $(WEB_DIR)/package.json $(wildcard $(WEB_DIR)/package-lock.json)
	cd $(WEB_DIR) && if [[ -f package-lock.json ]]; then \
		$(NPM) ci --no-audit --no-fund; else $(NPM) install --no-audit --no-fund; fi
	touch $@

# The benchmarks, as <package>:<bench>. Each full run (release) prints its rows (ours, the
# peer or limit measured in the same run, the ratio, the target) and writes them to
# BENCH_RESULTS; `make bench` gathers them into BENCHMARKS.md. `cargo test` (make test) runs
# each one briefly, as a smoke run. Benches are picked by name over the whole workspace
# (not with -p), so every one shares the workspace's build of the dependencies.
BENCHES := atelier-queue:queue atelier-gateway:status atelier:upload atelier-image:thumbnail atelier-user:history \
	atelier-processing:event_latency atelier-processing:throughput
BENCH_RESULTS := $(abspath $(TARGET_DIR))/bench

.PHONY: bench
bench: ## Run every benchmark in release mode against its peers and write BENCHMARKS.md
	bash .ci/deps.sh
	rm -rf '$(BENCH_RESULTS)' && mkdir -p '$(BENCH_RESULTS)'
	failed=; for bench in $(BENCHES); do \
		TEST_DATABASE_URL='$(TEST_DATABASE_URL)' TEST_REDIS_URL='$(TEST_REDIS_URL)' \
		TEST_S3_ENDPOINT='$(TEST_S3_ENDPOINT)' TEST_S3_ACCESS_KEY='$(TEST_S3_ACCESS_KEY)' \
		TEST_S3_SECRET_KEY='$(TEST_S3_SECRET_KEY)' TEST_S3_FS_ROOT='$(TEST_S3_FS_ROOT)' \
		BENCH_RESULTS='$(BENCH_RESULTS)' \
			$(CARGO) bench -j$(JOBS) --workspace --bench "$${bench##*:}" \
			|| failed="$$failed $${bench##*:}"; \
	done; \
	$(MAKE) contract || failed="$$failed contract"; \
	bash .ci/bench-report '$(BENCH_RESULTS)' $(BENCHES) > BENCHMARKS.md; \
	echo 'bench: results in BENCHMARKS.md'; \
	if [[ -n $$failed ]]; then echo "bench: missed a target or failed:$$failed" >&2; exit 1; fi

.PHONY: chaos
chaos: ## Kill and break services, Redis, PostgreSQL and fal under load; print what was lost
	bash .ci/deps.sh
	$(CARGO) bench -j$(JOBS) --workspace --bench chaos

.PHONY: clean
clean: ## Remove build output (cargo target dir, web dist and node_modules)
	$(CARGO) clean
	rm -rf $(WEB_DIR)/dist $(WEB_DIR)/node_modules
