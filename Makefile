# paycycle — the two set-up commands are `make demo` and `make test`; everything else is for
# developers. Every target installs what it needs (make bootstrap) and binds 127.0.0.1 only.

SHELL := bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

CARGO ?= cargo
export CARGO_TERM_COLOR ?= never
export SAM_CLI_TELEMETRY := 0
NOW ?=

.PHONY: help bootstrap build demo dev tick test test-rust lint lint-rust lint-template lint-openapi fuzz-api bench chaos fuzz package deploy clean

help:
	@echo "make demo    run the local stack end to end and print a summary"
	@echo "make test    run every test (unit, property, moto-backed, end to end, template lint)"
	@echo "make dev     keep the local stack up on http://127.0.0.1:3000 (PG=external: real PG test servers from the environment)"
	@echo "make tick NOW=2027-02-28T00:00:00+09:00   one renew tick on the dev stack"
	@echo "make lint    rustfmt, clippy and the template linters"
	@echo "make fuzz-api  schemathesis against the local stack from openapi.yaml"
	@echo "make fuzz    the PG-facing parsers under proptest, FUZZ_CASES (10,000) cases per target"
	@echo "make package sam build (cargo-lambda) and each function's zip size (ARCH=arm64 for Graviton)"
	@echo "make deploy ENV=dev|staging|prod [PARAMS=\"Key=Value ...\"]  checks, then sam deploy of what make package built"
	@echo "make bench   benchmarks and BENCHMARKS.md"
	@echo "make chaos   10,000 seeded chaos scenarios reconciled with the PG ledger (SEED= COUNT= JOBS=)"

bootstrap:
	@tools/scripts/bootstrap.sh

build: bootstrap
	$(CARGO) build --workspace --bins

demo: build
	$(CARGO) run --quiet -p paycycle-dev -- demo

PG ?= sandbox
dev: build
	$(CARGO) run --quiet -p paycycle-dev -- serve --pg $(PG)

tick:
	$(CARGO) run --quiet -p paycycle-dev -- tick $(if $(NOW),--now $(NOW),)

test: bootstrap lint test-rust

test-rust:
	tools/scripts/with-moto.sh $(CARGO) nextest run --workspace --all-targets --no-fail-fast

lint: bootstrap lint-rust lint-template lint-openapi

lint-rust:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets --quiet -- -D warnings

lint-openapi:
	.venv/bin/openapi-spec-validator openapi.yaml

FUZZ_CASES ?= 10000
fuzz:
	FUZZ_CASES=$(FUZZ_CASES) $(CARGO) nextest run -p paycycle --test fuzz --no-fail-fast

fuzz-api: bootstrap
	tools/scripts/fuzz-api.sh

lint-template:
	.venv/bin/cfn-lint template.yaml
	.venv-iac/bin/cfn-lint template.yaml -a cfn_lint_serverless.rules
	.venv/bin/sam validate --lint --template template.yaml --region ap-northeast-2
	.venv/bin/sam validate --lint --template template.yaml --config-file infra/samconfig.toml --config-env prod
	.venv-iac/bin/checkov -f template.yaml --framework cloudformation --skip-download --compact --quiet

bench: bootstrap
	tools/scripts/bench.sh

chaos: bootstrap
	tools/scripts/chaos.sh

package: bootstrap
	tools/scripts/package.sh

ENV ?=
PARAMS ?=
deploy: bootstrap
	tools/scripts/deploy.sh $(ENV) $(PARAMS)

clean:
	$(CARGO) clean
	rm -rf .venv .venv-iac .aws-sam
