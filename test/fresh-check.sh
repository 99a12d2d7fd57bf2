#!/usr/bin/env bash
# make fresh-check: prove that the README's first command works on a fresh
# Debian 12 machine. Not part of `make test` (it builds a root file system and
# downloads Go modules); run it by hand as root and record the result in the
# README's development table.
#
#  1. A clean Debian 12 root made by debootstrap, holding what a fresh machine
#     here holds: git, make, gcc and the libc headers, python3 (with a C
#     compiler present Go builds with cgo, so a missing PAM header fails the
#     build instead of silently producing a binary without PAM). It comes
#     from the Debian mirror apt is configured with and is cached in
#     .cache/fresh/base (gitignored); each run works on an overlay of it, so
#     every run starts from the same fresh root.
#  2. This machine's Go toolchain is bind-mounted read-only at /usr/local/go
#     (the README asks for Go; nothing else from this machine goes in).
#  3. The committed HEAD is cloned inside (git bundle, then git clone).
#  4. `make run` as root inside the root, until the lab daemon answers an
#     anonymous Identify on 127.0.0.1:5985; then pywinrm (from this
#     checkout's .venv: the client is another machine) runs `id` through it
#     over NTLM with message encryption, and the output must name the lab
#     account and its group.
#  5. With FRESH_TEST=1, `make test` inside the root as well (slow: it
#     installs Samba, Kerberos and the rest, then runs every test).
#
# Uses ports 5985/5986 (the lab daemon's); refuses to start if they are busy.
# Leaves nothing behind but the cached base root and .cache/fresh/last-run.
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$PWD
CACHE=${FRESH_CACHE:-$REPO/.cache/fresh}
BASE=$CACHE/base
RUN=$CACHE/run
ROOT=$RUN/root
FRESH_TEST=${FRESH_TEST:-0}
BUILD_WAIT=${FRESH_BUILD_WAIT:-1200} # seconds for apt + go mod download + build
SUITE=bookworm
INCLUDE=git,make,gcc,libc6-dev,python3,ca-certificates

say() { printf 'fresh-check: %s\n' "$*"; }
die() { say "FAIL: $*"; exit 1; }

[ "$(id -u)" = 0 ] || die "run as root (debootstrap, chroot, mounts)"
command -v debootstrap >/dev/null || die "debootstrap is not installed (apt-get install debootstrap)"
GOROOT_HOST=$(go env GOROOT) || die "no Go toolchain on PATH"

# The mirror apt is configured with (deb822 sources first, then the one-line
# format): the only Debian mirror this machine is meant to reach.
mirror() {
	local f
	for f in /etc/apt/sources.list.d/*.sources; do
		[ -e "$f" ] || continue
		awk -v suite="$SUITE" '
			/^[[:space:]]*$/ { if (uri != "" && hit) { print uri; exit } uri = ""; hit = 0; next }
			/^URIs:/ { uri = $2 }
			/^Suites:/ { for (i = 2; i <= NF; i++) if ($i == suite) hit = 1 }
			END { if (uri != "" && hit) print uri }' "$f" | head -n1
	done
	for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
		[ -e "$f" ] || continue
		awk -v suite="$SUITE" '$1 == "deb" && $3 == suite { print $2; exit }' "$f"
	done
}
MIRROR=$(mirror | head -n1)
[ -n "$MIRROR" ] || die "no Debian $SUITE mirror in /etc/apt/sources.list*"

if [ ! -e "$BASE/.fresh-complete" ]; then
	say "building the base root with debootstrap from $MIRROR (cached in $BASE)"
	rm -rf "$BASE.tmp"
	mkdir -p "$CACHE"
	debootstrap --include="$INCLUDE" "$SUITE" "$BASE.tmp" "$MIRROR" >"$CACHE/debootstrap.log" 2>&1 ||
		die "debootstrap failed; see $CACHE/debootstrap.log"
	touch "$BASE.tmp/.fresh-complete"
	rm -rf "$BASE"
	mv "$BASE.tmp" "$BASE"
fi

for p in 5985 5986; do
	if ss -Hltn "sport = :$p" | grep -q .; then die "port $p is in use"; fi
done

LABPID=""
cleanup() {
	set +e
	if [ -n "$LABPID" ] && kill -0 "$LABPID" 2>/dev/null; then
		kill -TERM -- "-$LABPID" 2>/dev/null
		for _ in $(seq 1 100); do kill -0 "$LABPID" 2>/dev/null || break; sleep 0.2; done
		kill -KILL -- "-$LABPID" 2>/dev/null
	fi
	# Anything still running from inside the root (there should be nothing).
	for pid in $(ls /proc | grep -E '^[0-9]+$'); do
		[ "$(readlink "/proc/$pid/root" 2>/dev/null)" = "$ROOT" ] && { say "killing leftover pid $pid"; kill -KILL "$pid"; }
	done
	if mountpoint -q "$ROOT"; then
		umount -R "$ROOT" 2>/dev/null || umount -R -l "$ROOT"
	fi
	rm -rf "$RUN"
}
trap cleanup EXIT
cleanup
trap cleanup EXIT
mkdir -p "$RUN/upper" "$RUN/work" "$ROOT"
mount -t overlay overlay -o "lowerdir=$BASE,upperdir=$RUN/upper,workdir=$RUN/work" "$ROOT"
mount --make-rprivate "$ROOT"
mount -t proc proc "$ROOT/proc"
mount --rbind /sys "$ROOT/sys" && mount --make-rslave "$ROOT/sys"
mount --rbind /dev "$ROOT/dev" && mount --make-rslave "$ROOT/dev"
mkdir -p "$ROOT/usr/local/go"
mount --bind "$GOROOT_HOST" "$ROOT/usr/local/go" && mount -o remount,bind,ro "$ROOT/usr/local/go"
cp -L /etc/resolv.conf "$ROOT/etc/resolv.conf"
# This machine's trust store belongs to "what a fresh machine here holds": the
# package registries are reached through a TLS proxy whose CA is in it. Kept
# in /usr/local/share/ca-certificates too, so that an update-ca-certificates
# run by apt inside the root keeps it.
cp -L /etc/ssl/certs/ca-certificates.crt "$ROOT/etc/ssl/certs/ca-certificates.crt"
cp -L /etc/ssl/certs/ca-certificates.crt "$ROOT/usr/local/share/ca-certificates/this-machine.crt"

git bundle create "$ROOT/tmp/winrmd.bundle" HEAD >/dev/null 2>&1 || die "git bundle failed"
COMMIT=$(git rev-parse --short HEAD)

inroot() {
	chroot "$ROOT" /usr/bin/env -i HOME=/root TERM=dumb LANG=C.UTF-8 \
		PATH=/usr/local/go/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
		"$@"
}
inroot git -c advice.detachedHead=false clone -q /tmp/winrmd.bundle /root/winrmd || die "git clone inside the root failed"
say "fresh root ready: Debian $(cat "$ROOT/etc/debian_version"), $(inroot go version), winrmd at $COMMIT"
if inroot test -e /usr/include/security/pam_appl.h; then die "the base root already has the PAM headers: not a fresh machine"; fi

# The client side: this checkout's venv (pywinrm), made if missing.
make -s venv >/dev/null || die "make venv failed (the client side)"

say "make run (inside the root, as root)"
start=$(date +%s)
setsid chroot "$ROOT" /usr/bin/env -i HOME=/root TERM=dumb LANG=C.UTF-8 \
	PATH=/usr/local/go/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
	sh -c 'cd /root/winrmd && exec make run' </dev/null >"$CACHE/make-run.log" 2>&1 &
LABPID=$!
ready=$ROOT/root/winrmd/.lab/ready.json
while [ ! -s "$ready" ]; do
	kill -0 "$LABPID" 2>/dev/null || { tail -n 30 "$CACHE/make-run.log"; die "make run exited before the daemon was ready (log: $CACHE/make-run.log)"; }
	[ $(($(date +%s) - start)) -lt "$BUILD_WAIT" ] || die "make run: no ready file after ${BUILD_WAIT}s"
	sleep 1
done
say "make run: daemon ready after $(($(date +%s) - start))s"

identify='<s:Envelope xmlns:s="http://www.w3.org/2003/05/soap-envelope" xmlns:wsmid="http://schemas.dmtf.org/wbem/wsman/identity/1/wsmanidentity.xsd"><s:Header/><s:Body><wsmid:Identify/></s:Body></s:Envelope>'
resp=$(curl -sS --max-time 30 -H 'WSMANIDENTIFY: unauthenticated' -H 'Content-Type: application/soap+xml;charset=UTF-8' \
	--data "$identify" http://127.0.0.1:5985/wsman) || die "Identify: curl failed"
grep -q 'IdentifyResponse' <<<"$resp" || die "Identify: no IdentifyResponse in: $resp"
say "Identify answered: $(grep -o '<wsmid:ProductVendor>[^<]*' <<<"$resp" | sed 's/.*>//') $(grep -o '<wsmid:ProductVersion>[^<]*' <<<"$resp" | sed 's/.*>//')"

password=$(tr -d '\n' <"$ROOT/root/winrmd/.lab/password")
out=$(WINRMD_PW=$password "$REPO/.venv/bin/python" -c '
import os, winrm
s = winrm.Session("http://127.0.0.1:5985/wsman", auth=("winrmd-lab", os.environ["WINRMD_PW"]), transport="ntlm")
r = s.run_cmd("id")
print(r.status_code, r.std_out.decode().strip())
') || die "pywinrm id failed"
say "pywinrm id: $out"
grep -q '^0 uid=[0-9]*(winrmd-lab).*(winrm-remote-users)' <<<"$out" || die "pywinrm id: unexpected output"
grep -q 'PAM: yes' "$CACHE/make-run.log" || die "the built binary has no PAM (see $CACHE/make-run.log)"

kill -TERM -- "-$LABPID"
wait "$LABPID" 2>/dev/null || true
LABPID=""
result="make run OK (build deps installed by make, Identify, pywinrm NTLM id)"

if [ "$FRESH_TEST" = 1 ]; then
	say "make test (inside the root; this takes a while)"
	tstart=$(date +%s)
	if inroot sh -c 'cd /root/winrmd && CI=true make test' </dev/null >"$CACHE/make-test.log" 2>&1; then
		result="$result; make test PASS in $(($(date +%s) - tstart))s"
	else
		result="$result; make test FAIL after $(($(date +%s) - tstart))s (log $CACHE/make-test.log)"
	fi
	tail -n 25 "$CACHE/make-test.log"
fi

line="$(date -u +%Y-%m-%d) $COMMIT: $result"
echo "$line" >"$CACHE/last-run"
say "$line"
