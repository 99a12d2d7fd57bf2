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
