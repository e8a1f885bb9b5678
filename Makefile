# Omni — one entry point for installing, generating, checking, running and testing the mesh.
SHELL := bash
.SHELLFLAGS := -eu -o pipefail -c
.DELETE_ON_ERROR:
.DEFAULT_GOAL := help
MAKEFLAGS += --warn-undefined-variables --no-builtin-rules

PYTHON_BOOT ?= python3
VENV := .venv
PY := $(VENV)/bin/python
BUF := tools/node_modules/.bin/buf
PYTEST_ARGS ?=

.PHONY: help install generate check-generated proto-lint proto-format proto-format-check proto-breaking \
	lint format typecheck test test-fast run demo bench ci clean rotate-secrets

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed -E 's/:.*## /\t/' | expand -t 22

$(PY):
	$(PYTHON_BOOT) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip

install: $(PY) ## create .venv, install the project, buf and a development .env
	$(PY) -m pip install --quiet -e gen/python -e '.[dev]'
	cd tools && npm install --silent --no-audit --no-fund
	@if [ ! -f .env ]; then \
	  key=$$($(PY) -c 'import secrets; print(secrets.token_urlsafe(32))'); \
	  mesh=$$($(PY) -c 'import secrets; print(secrets.token_urlsafe(32))'); \
	  sed -e "s|^AUTOMAGIK_OMNI_API_KEY=.*|AUTOMAGIK_OMNI_API_KEY=$$key|" \
	      -e "s|^# AUTOMAGIK_OMNI_MESH_TOKEN=.*|AUTOMAGIK_OMNI_MESH_TOKEN=$$mesh|" .env.example > .env; \
	  echo "wrote .env with a fresh AUTOMAGIK_OMNI_API_KEY and AUTOMAGIK_OMNI_MESH_TOKEN (see .env)"; \
	fi

generate: ## regenerate the Python stubs from protos/
	PYTHON=$(PY) scripts/generate_protos.sh >/dev/null

check-generated: generate ## fail when the committed stubs are not what the protos generate
	@git diff --exit-code --stat -- gen/python || { echo "generated code is stale: run make generate and commit"; exit 1; }
	@test -z "$$(git status --porcelain -- gen/python)" || { git status --porcelain -- gen/python; echo "untracked generated files: run make generate and commit"; exit 1; }

proto-lint: ## buf lint (STANDARD)
	$(BUF) lint

proto-format: ## buf format in place
	$(BUF) format -w

proto-format-check: ## fail when protos are not buf-formatted
	$(BUF) format --diff --exit-code

proto-breaking: ## buf breaking against the previous commit
	@if git rev-parse -q --verify HEAD~1 >/dev/null; then $(BUF) breaking --against '.git#ref=HEAD~1'; else echo "no previous commit"; fi

lint: ## ruff check and format check
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

format: ## ruff fix and format
	$(PY) -m ruff check --fix .
	$(PY) -m ruff format .

typecheck: ## mypy --strict outside generated code
	$(PY) -m mypy servicekit services gateway launcher simulators examples bench

test: ## the whole suite, on SQLite and PostgreSQL
	$(PY) -m pytest $(PYTEST_ARGS)

test-fast: ## the suite without the end-to-end mesh tests
	$(PY) -m pytest -m "not e2e" $(PYTEST_ARGS)

run: ## start the whole mesh in the foreground (SQLite under ./data unless AUTOMAGIK_OMNI_DATABASE_URL is set)
	$(PY) -m launcher

rotate-secrets: ## re-encrypt every stored secret with the newest key of AUTOMAGIK_OMNI_SECRET_KEYS
	$(PY) -m services.router.rotate_secrets

demo: ## mesh + echo agent + Evolution, Discord and Slack simulators: a WhatsApp message, Discord and Slack DMs and mentions, with traces
	$(PY) -m examples.demo

bench: ## WhatsApp webhooks, Discord bot messages and Slack events through the mesh vs. the direct pipeline; 100 bots in one ingress
	$(PY) -m bench

ci: check-generated proto-lint proto-format-check lint typecheck test ## everything CI runs

clean: ## remove local data and caches
	rm -rf data .mypy_cache .ruff_cache .pytest_cache
