# winrmd — see README.md.
GO      ?= go
BIN     := bin/winrmd
VENV    := .venv
PY      := $(VENV)/bin/python
PKGS    := ./...
FUZZTIME ?= 20s

.PHONY: all build run test unit e2e deps venv lint fuzz bench load clean

all: build

build:
	$(GO) build -trimpath -o $(BIN) ./cmd/winrmd

# A lab daemon on loopback: self-signed certificate, local account store.
run: build
	$(BIN) lab --dir .lab

lint:
	@test -z "$$(gofmt -l $$(git ls-files '*.go'))" || { gofmt -l $$(git ls-files '*.go'); echo 'gofmt needed'; exit 1; }
	$(GO) vet $(PKGS)

clean:
	rm -rf bin .lab

# ---- bench (owned by cmd/winrmd-bench, issue 5) -----------------------------
# winrmd against a private OpenSSH server on loopback, one run, alternating
# samples; see BENCH.md. As root: installs openssh-server/-client if missing
# (without starting the system sshd), creates and removes the account
# wrmdbench. `make bench BENCH_FLAGS=-quick` is the < 2 minute CI variant.
BENCH_FLAGS ?=
bench: build
	@if [ "$$(id -u)" != 0 ]; then echo "bench: run as root (it creates a user and starts sshd)"; exit 1; fi
	@if ! [ -x /usr/sbin/sshd ] || ! command -v ssh >/dev/null 2>&1; then \
	  echo "bench: installing openssh-server openssh-client"; \
	  rc_policy=""; if [ ! -e /usr/sbin/policy-rc.d ]; then \
	    printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d && chmod 755 /usr/sbin/policy-rc.d && rc_policy=1; fi; \
	  export DEBIAN_FRONTEND=noninteractive; \
	  apt-get update -q && apt-get install -y -q --no-install-recommends openssh-server openssh-client < /dev/null; rc=$$?; \
	  [ -z "$$rc_policy" ] || rm -f /usr/sbin/policy-rc.d; exit $$rc; \
	fi
	$(GO) build -trimpath -o bin/winrmd-bench ./cmd/winrmd-bench
	bin/winrmd-bench -winrmd $(BIN) $(BENCH_FLAGS)
