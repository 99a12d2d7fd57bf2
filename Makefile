# winrmd — see README.md.
SHELL   := /bin/bash
GO      ?= go
BIN     := bin/winrmd
VENV    := .venv
PY      := $(VENV)/bin/python
PKGS    := ./...
FUZZTIME ?= 20s
# The interpreter the client venv is made from (pyenv's python3 first on PATH).
PYTHON  ?= python3
# Test work area (gitignored): logs and the figures of the summary block.
WORK    := test/.work
# What building needs beyond the Go toolchain, from Debian: a C compiler, the
# libc headers and the PAM headers. winrmd uses cgo for PAM (Basic against the
# host's accounts) and for NSS lookups (sssd, winbind, LDAP accounts); without a
# C compiler Go silently builds without cgo and loses both, so `make build`
# installs these as root, names them otherwise, and refuses a cgo-less build
# unless asked for one (CGO_ENABLED=0 make build).
BUILD_APT_PKGS := gcc libc6-dev libpam0g-dev
# What the client venv needs to build (`make venv`, also before `make bench`,
# `make e2e`, `make load`, `make soak`): pywinrm's Kerberos transport needs
# pykerberos, pypsrp's and pyspnego's need gssapi and krb5, all built from
# source against libkrb5-dev with gcc and the Python headers; python3-venv
# for Debian's interpreter.
VENV_APT_PKGS := gcc libc6-dev python3-venv python3-dev libkrb5-dev
# What `make bench` runs against: a private sshd, and the MIT KDC of its
# Kerberos rows (neither started by the install: the bench runs its own).
BENCH_APT_PKGS := openssh-server openssh-client krb5-kdc krb5-admin-server krb5-user
# What the e2e and interop tests need from Debian (all of the above, and):
# samba-ad-dc + samba-ad-provision: the throwaway AD domain (test/addc);
# libnss-winbind: domain users through NSS on the joined member;
# python3-gssapi: an MIT GSSAPI initiator for the delegation checks.
# debootstrap, lintian, systemd (systemd-analyze; installing it starts nothing
# where systemd does not run), runc, umoci, busybox-static: the package and
# image tests (test/deploy). sudo: a remote shell runs it (TestSecuritySudo).
APT_PKGS := $(sort $(BUILD_APT_PKGS) $(VENV_APT_PKGS) $(BENCH_APT_PKGS) winbind samba-common-bin curl \
  samba-ad-dc samba-ad-provision libnss-winbind python3-gssapi iproute2 \
  debootstrap lintian systemd runc umoci busybox-static sudo)
PIP_PKGS := 'pywinrm[kerberos]' 'pypsrp[kerberos]' 'pyspnego[kerberos]' requests-ntlm awinrm psrpcore requests-credssp dissect.util
TEST_TIMEOUT ?= 50m
# The daemon under e2e test is built with -race too (WINRMD_E2E_RACE=1): the
# e2e run is where the daemon's goroutines really race (20 concurrent shells,
# long polls, signals). Set E2E_RACE=0 to build it plainly.
E2E_RACE ?= 1

# Installs the Debian packages of $(2) that are missing (one apt-get update),
# as root, naming itself $(1); services they ship (smbd, samba-ad-dc,
# krb5-kdc) are not started (policy-rc.d): the tests run their own instances.
define apt_ensure
missing=""; for p in $(2); do \
	  dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null | grep -q ' installed$$' || missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" != 0 ]; then echo "$(1): missing:$$missing (run as root to install them)"; exit 1; fi; \
	  echo "$(1): installing$$missing"; \
	  export DEBIAN_FRONTEND=noninteractive; \
	  rc_policy=""; if [ ! -e /usr/sbin/policy-rc.d ]; then \
	    printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d && chmod 755 /usr/sbin/policy-rc.d && rc_policy=1; fi; \
	  apt-get -o DPkg::Lock::Timeout=600 update -q && apt-get -o DPkg::Lock::Timeout=600 install -y -q --no-install-recommends $$missing < /dev/null; rc=$$?; \
	  [ -z "$$rc_policy" ] || rm -f /usr/sbin/policy-rc.d; [ $$rc = 0 ] || exit $$rc; \
	else echo "$(1): apt packages present"; fi
endef

.PHONY: all build build-deps run fresh-check deb image test unit e2e deps venv venv-deps lint fuzz bench load soak clean

all: build

build: build-deps
	$(GO) build -trimpath -o $(BIN) ./cmd/winrmd
	CGO_ENABLED=0 $(GO) build -trimpath -o bin/winrmd-worker ./cmd/winrmd-worker
	@$(BIN) version

# The build's own prerequisites (BUILD_APT_PKGS), checked by the files the
# build uses, so that it also works where dpkg does not exist.
build-deps:
	@if [ "$(origin CGO_ENABLED)" = environment ] && [ "$$CGO_ENABLED" = 0 ]; then \
	  echo "build: CGO_ENABLED=0 asked for: this binary has no PAM (Basic only against the account store) and resolves accounts from /etc/passwd and /etc/group only"; exit 0; fi; \
	missing=""; \
	command -v "$$($(GO) env CC)" >/dev/null 2>&1 || missing="$$missing gcc libc6-dev"; \
	[ -e /usr/include/stdlib.h ] || case "$$missing" in *libc6-dev*) ;; *) missing="$$missing libc6-dev";; esac; \
	[ -e /usr/include/security/pam_appl.h ] || missing="$$missing libpam0g-dev"; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then \
	    echo "build: winrmd needs the Debian packages:$$missing (a C compiler and the PAM headers, for cgo)."; \
	    echo "build: install them with:  sudo apt-get install$$missing   then run make again."; exit 1; fi; \
	  echo "build: installing$$missing (a C compiler and the PAM headers, for cgo)"; \
	  export DEBIAN_FRONTEND=noninteractive; \
	  apt-get -o DPkg::Lock::Timeout=600 update -q && \
	  apt-get -o DPkg::Lock::Timeout=600 install -y -q --no-install-recommends $$missing < /dev/null || exit 1; \
	fi; \
	if [ "$$($(GO) env CGO_ENABLED)" != 1 ]; then \
	  echo "build: cgo is off (go env CGO_ENABLED=0, CC=$$($(GO) env CC)): refusing a binary without PAM and NSS; set CGO_ENABLED=0 explicitly to build one anyway"; exit 1; fi

# A lab daemon on loopback: self-signed certificate, local account store.
run: build
	$(BIN) lab --dir .lab

# A clean Debian 12 root (debootstrap, cached in .cache/fresh) with git, make,
# gcc and python3, this machine's Go toolchain bind-mounted: the committed HEAD
# is cloned there and `make run` must answer Identify and a pywinrm `id`
# (FRESH_TEST=1: `make test` there too). Root; not part of make test.
fresh-check:
	test/fresh-check.sh

# The Debian package, with dpkg-deb alone: bin/winrmd_<version>_<arch>.deb
# (DEB_VERSION, default 0.1.0~dev). See deploy/README.md.
deb: build-deps
	deploy/debian/build-deb.sh

# The OCI image layout, without a Docker engine (umoci): bin/oci, tag latest
# (IMAGE_OUT, IMAGE_TAG). Static binary, busybox as /bin/sh, the image's
# configuration (deploy/image/winrmd.yaml). See deploy/README.md.
image:
	deploy/image/build-image.sh

# Linters, pinned, built from the Go module proxy into bin/tools/ on first
# use: staticcheck (honnef.co/go/tools) and deadcode (golang.org/x/tools).
STATICCHECK_VERSION := v0.8.2
DEADCODE_VERSION    := v0.52.0
TOOLS       := $(CURDIR)/bin/tools
STATICCHECK := $(TOOLS)/staticcheck-$(STATICCHECK_VERSION)
DEADCODE    := $(TOOLS)/deadcode-$(DEADCODE_VERSION)

$(STATICCHECK):
	@mkdir -p $(TOOLS)/.sc && GOBIN=$(TOOLS)/.sc $(GO) install honnef.co/go/tools/cmd/staticcheck@$(STATICCHECK_VERSION) && mv $(TOOLS)/.sc/staticcheck $@

$(DEADCODE):
	@mkdir -p $(TOOLS)/.dc && GOBIN=$(TOOLS)/.dc $(GO) install golang.org/x/tools/cmd/deadcode@$(DEADCODE_VERSION) && mv $(TOOLS)/.dc/deadcode $@

# gofmt, go vet, staticcheck (every report fails; a justified exception
# is a //lint:ignore comment at its site) and deadcode with tests counted as
# callers (every report fails unless .ci/deadcode.allow lists it with a reason).
lint: $(STATICCHECK) $(DEADCODE)
	@rc=0; \
	echo "== gofmt"; bad=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go' -not -path './.venv/*')); \
	  if [ -n "$$bad" ]; then echo "gofmt needed:"; echo "$$bad"; rc=1; fi; \
	echo "== go vet"; $(GO) vet $(PKGS) || rc=1; \
	echo "== staticcheck $(STATICCHECK_VERSION)"; $(STATICCHECK) $(PKGS) || rc=1; \
	echo "== deadcode $(DEADCODE_VERSION)"; out=$$($(DEADCODE) -test $(PKGS)) || rc=1; \
	  left=$$(printf '%s\n' "$$out" | sed -n 's/^\([^:]*\):[0-9]*:[0-9]*: unreachable func: \(.*\)$$/\1 \2/p' | \
	    while read -r f fn; do grep -qxF "$$f $$fn" <(sed 's/[[:space:]]*#.*//' .ci/deadcode.allow) || echo "$$f: unreachable func: $$fn"; done); \
	  if [ -n "$$left" ]; then echo "$$left"; echo "deadcode: remove it, or list it in .ci/deadcode.allow with the reason"; rc=1; fi; \
	exit $$rc

clean:
	rm -rf bin .lab

# ---- tests (owned by test/infra) -------------------------------------------

# Everything the tests need, on a fresh Debian 12 as root: the apt packages
# that are missing (apt_ensure), then the Go modules.
deps:
	@$(call apt_ensure,deps,$(APT_PKGS))
	$(GO) mod download

# Checked by what the builds use (a C compiler, krb5-config, the
# interpreter's venv module and Python.h), so that a machine that has them
# without dpkg, or from elsewhere (pyenv's interpreter), is not sent to apt.
venv-deps:
	@if command -v "$$($(GO) env CC)" >/dev/null 2>&1 && command -v krb5-config >/dev/null 2>&1 && \
	  $(PYTHON) -c 'import ensurepip, os, sys, sysconfig; sys.exit(not os.path.exists(os.path.join(sysconfig.get_paths()["include"], "Python.h")))' 2>/dev/null; then \
	  echo "venv: build prerequisites present"; \
	else $(call apt_ensure,venv,$(VENV_APT_PKGS)); fi

# The client virtualenv: the latest pywinrm, pypsrp, pyspnego, requests-ntlm,
# awinrm, psrpcore (the PSRP stand-in's server classes), dissect.util (an
# independent LZ77+Huffman decoder the xpress interop test reads the daemon's
# compressed streams with)
# from PyPI (not Debian's python3-* packages). Re-made when it cannot import
# them (a fresh clone, a changed interpreter). Building gssapi, krb5 and
# pykerberos needs a C compiler, krb5-config and the Python headers
# (VENV_APT_PKGS), installed first, so that `make bench`, `make e2e`, `make
# load` and `make soak` work on a fresh machine too, not only after `make test`.
venv: venv-deps
	@if $(PY) -c 'import winrm, pypsrp, spnego, requests_ntlm, awinrm, psrpcore, kerberos, gssapi, krb5, requests_credssp, dissect.util.compression.lzxpress_huffman' 2>/dev/null; then \
	  echo "venv: $(VENV) ready ($$($(PY) -m pip list 2>/dev/null | grep -iE '^(pywinrm|pypsrp|pyspnego|requests.ntlm|awinrm|psrpcore|requests.credssp) ' | tr -s ' ' | paste -sd, -))"; \
	else \
	  rm -rf $(VENV) && $(PYTHON) -m venv $(VENV) && \
	  $(PY) -m pip install -q --disable-pip-version-check --upgrade pip && \
	  $(PY) -m pip install -q --disable-pip-version-check --upgrade $(PIP_PKGS) && \
	  $(PY) -c 'import winrm, pypsrp, spnego, requests_ntlm, awinrm, psrpcore, kerberos, gssapi, krb5, requests_credssp, dissect.util.compression.lzxpress_huffman' && \
	  echo "venv: installed $$($(PY) -m pip list 2>/dev/null | grep -iE '^(pywinrm|pypsrp|pyspnego|requests.ntlm|awinrm|psrpcore|requests.credssp) ' | tr -s ' ' | paste -sd, -)"; \
	fi

# Unit tests only (every package but the e2e one), with the race detector.
unit:
	$(GO) test -race -count=1 -timeout $(TEST_TIMEOUT) $$($(GO) list ./... | grep -v '/test$$' | grep -v '/test/')

# End-to-end tests only (real daemon, real users, real clients; root).
e2e: venv
	@mkdir -p $(WORK)
	WINRMD_E2E_RACE=$(E2E_RACE) WINRMD_E2E_STATS=$(CURDIR)/$(WORK)/stats.jsonl \
	  $(GO) test -race -count=1 -v -timeout $(TEST_TIMEOUT) ./test/

# Everything, then the figures: lint, a short fuzz pass, then go test -race over every
# package (unit and e2e together, so package parallelism overlaps them), and
# the summary block. The summary prints even when tests fail.
test: deps venv
	@mkdir -p $(WORK); rm -f $(WORK)/stats.jsonl; start=$$(date +%s); rc=0; \
	$(MAKE) --no-print-directory lint || rc=1; \
	$(MAKE) --no-print-directory fuzz FUZZTIME=$(FUZZ_QUICK) || rc=1; \
	echo "== go test -race ./... (unit + e2e)"; \
	WINRMD_E2E_RACE=$(E2E_RACE) WINRMD_E2E_STATS=$(CURDIR)/$(WORK)/stats.jsonl \
	  $(GO) test -race -count=1 -v -timeout $(TEST_TIMEOUT) $(PKGS) 2>&1 | tee $(WORK)/gotest.log; \
	  [ "$${PIPESTATUS[0]}" = 0 ] || rc=1; \
	$(GO) run ./test/cmd/e2esummary -stats $(WORK)/stats.jsonl -log $(WORK)/gotest.log -started $$start || rc=1; \
	exit $$rc

# Every Fuzz* target in the repository, FUZZTIME each (make test runs them
# for FUZZ_QUICK each: a count, not a duration, because a duration shorter
# than the run of a target's seed corpus fails with "context deadline
# exceeded" on a busy machine, a failure that says nothing about the code).
# Targets are found by their declarations, so listing them compiles nothing.
FUZZ_QUICK ?= 20000x
fuzz:
	@set -e; n=0; start=$$(date +%s); \
	for file in $$(git ls-files '*_test.go' 2>/dev/null || find . -name '*_test.go' -not -path './.venv/*'); do \
	  for f in $$(sed -n 's/^func \(Fuzz[A-Za-z0-9_]*\)(.*/\1/p' $$file); do \
	    n=$$((n+1)); echo "== fuzz ./$$(dirname $$file) $$f for $(FUZZTIME)"; \
	    $(GO) test -run '^$$' -fuzz "^$$f\$$" -fuzztime $(FUZZTIME) ./$$(dirname $$file) 2>&1 | grep -v '^fuzz: elapsed'; \
	    [ "$${PIPESTATUS[0]}" = 0 ] || exit 1; \
	  done; \
	done; echo "fuzz: $$n targets ran for $(FUZZTIME) each in $$(( $$(date +%s) - start )) s"

# Load (test/load_test.go): 200 shells across 20 users held at once,
# NTLM-sealed HTTP and HTTPS Basic, output checked by sha256 and byte-exact,
# stdin round trips, RSS and goroutines back to baseline (the short version,
# 40 shells across 4 users, runs inside make test).
load: venv
	@mkdir -p $(WORK); rm -f $(WORK)/load-stats.jsonl; rc=0; \
	WINRMD_LOAD=full WINRMD_E2E_STATS=$(CURDIR)/$(WORK)/load-stats.jsonl \
	  $(GO) test -count=1 -v -timeout 60m -run '^TestLoad$$' ./test/ 2>&1 | tee $(WORK)/load.log; \
	  [ "$${PIPESTATUS[0]}" = 0 ] || rc=1; \
	$(GO) run ./test/cmd/e2esummary -stats $(WORK)/load-stats.jsonl -log $(WORK)/load.log || rc=1; \
	exit $$rc

# Soak (test/soak_test.go): the load workload for SOAK (default 10m), printing
# RSS, open fds, goroutines and Receive latency percentiles every 30 s.
SOAK ?= 10m
soak: venv
	@mkdir -p $(WORK); rm -f $(WORK)/soak-stats.jsonl; rc=0; \
	WINRMD_SOAK=$(SOAK) WINRMD_E2E_STATS=$(CURDIR)/$(WORK)/soak-stats.jsonl \
	  $(GO) test -count=1 -v -timeout 0 -run '^TestSoak$$' ./test/ 2>&1 | tee $(WORK)/soak.log; \
	  [ "$${PIPESTATUS[0]}" = 0 ] || rc=1; \
	$(GO) run ./test/cmd/e2esummary -stats $(WORK)/soak-stats.jsonl -log $(WORK)/soak.log || rc=1; \
	exit $$rc

# ---- bench (owned by cmd/winrmd-bench, issue 5) -----------------------------
# winrmd against a private OpenSSH server on loopback, one run, alternating
# samples; see BENCH.md. As root: installs BENCH_APT_PKGS if missing,
# creates and removes the account wrmdbench. `make bench BENCH_FLAGS=-quick` is the < 2 minute CI variant.
BENCH_FLAGS ?=
bench: build venv
	@if [ "$$(id -u)" != 0 ]; then echo "bench: run as root (it creates a user and starts sshd)"; exit 1; fi
	@$(call apt_ensure,bench,$(BENCH_APT_PKGS))
	$(GO) build -trimpath -o bin/winrmd-bench ./cmd/winrmd-bench
	bin/winrmd-bench -winrmd $(BIN) $(BENCH_FLAGS)
