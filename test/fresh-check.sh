#!/usr/bin/env bash
# make fresh-check: prove that the README's two commands work on a fresh
# Debian 12 machine. Not part of `make test` (it builds a root file system and
# downloads Go modules); run it by hand as root and record the result in the
# README's development table.
#
#  1. A clean Debian 12 root made by debootstrap, holding what a fresh machine
#     here holds: git, make, gcc and the libc headers, python3 (with a C
#     compiler present Go builds with cgo, so a missing PAM header fails the
#     build instead of silently producing a binary without PAM). It comes
#     from the Debian mirror apt is configured with and is cached in
#     .cache/fresh/base (gitignored); each run works on a full copy of it
#     (.cache/fresh/run/root, on this machine's file system, not an overlay:
#     the tests mount overlays of their own), so every run starts from the
#     same fresh root.
#  2. The root runs as a machine of its own, not a chroot: its own mount, pid,
#     cgroup, uts and ipc namespaces (unshare), entered with pivot_root, so
#     that "/" is a mount point of its own namespace (runc and sidecar mode
#     need that) and the suites see only their own processes. Inside: a
#     fresh /proc for its pid namespace, sysfs, the cgroup hierarchies
#     mounted as a machine mounts them, each rooted at a cgroup made for the
#     run (so nothing inside sees or touches another cgroup of this host), a
#     /dev of the usual nodes with its own devpts, /dev/shm and mqueue, a
#     tmpfs /run, its own host name and /etc/hosts. Pid 1 is a shell that
#     reaps what is orphaned to it. The network namespace is this host's:
#     make test installs packages from the registries, reachable only from it
#     (every test uses loopback with ephemeral ports or namespaces of its own).
#  3. This machine's Go toolchain is bind-mounted read-only at /usr/local/go
#     (the README asks for Go; nothing else from this machine goes in but its
#     trust store, below).
#  4. The committed HEAD is cloned inside (git bundle, then git clone).
#  5. `make run` as root inside the root, until the lab daemon answers an
#     anonymous Identify on 127.0.0.1:5985; then pywinrm (from this
#     checkout's .venv: the client is another machine) runs `id` through it
#     over NTLM with message encryption, and the output must name the lab
#     account and its group.
#  6. With FRESH_BENCH=1, `make bench BENCH_FLAGS=-quick` inside the root,
#     on what `make run` left there: bench and venv install what they need
#     themselves (sshd, the bench KDC, the venv's build packages); a row that
#     could not run is an ERROR and fails it. The log is kept in
#     .cache/fresh/make-bench.log.
#  7. With FRESH_TEST=1, `make test` inside the root as well (slow: it
#     installs Samba, Kerberos and the rest, then runs every test; its log is
#     kept in .cache/fresh/make-test.log and the go test log in
#     .cache/fresh/gotest.log).
#
# FRESH_KEEP=1 keeps the run's root (with what make test installed) for
# diagnosis; `test/fresh-check.sh enter 'go test -run X ./test/'` then runs a
# command in /root/winrmd inside it, in namespaces made as above, and
# `test/fresh-check.sh clean` removes it.
#
# Uses ports 5985/5986 (the lab daemon's); refuses to start if they are busy.
# Leaves nothing behind but the cached base root, the logs and
# .cache/fresh/last-run (and the kept root with FRESH_KEEP=1): every mount is
# made inside the run's own mount namespace and goes with it, every process
# with its pid namespace, and the run's cgroups are removed.
set -euo pipefail
SELF=$(readlink -f "$0")
PATH_IN=/usr/local/go/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin

# ---- stage 2: pid 1 of the new namespaces (see ns_run) ----------------------
if [ "${1:-}" = __inside ]; then
	ROOT=$2 GOROOT_HOST=$3 CMD=$4
	mount --make-rprivate /
	mount --bind "$ROOT" "$ROOT" # pivot_root needs the new root to be a mount point
	mount -t proc -o nosuid,nodev,noexec proc "$ROOT/proc"
	mount -t sysfs -o nosuid,nodev,noexec sysfs "$ROOT/sys"
	# The cgroup hierarchies as this host mounts them, seen through the
	# run's cgroup namespace: each is rooted at the run's own cgroup.
	mount -t tmpfs -o nosuid,nodev,noexec,mode=755 cgroup "$ROOT/sys/fs/cgroup"
	while read -r target fstype opts; do
		[ "${target#/sys/fs/cgroup/}" != "$target" ] || continue
		dst=$ROOT/sys/fs/cgroup/${target#/sys/fs/cgroup/}
		mkdir -p "$dst"
		if [ "$fstype" = cgroup2 ]; then
			mount -t cgroup2 -o nosuid,nodev,noexec cgroup2 "$dst"
		else
			keep=$(tr ',' '\n' <<<"$opts" | grep -vxE 'rw|ro|relatime|noatime|nosuid|nodev|noexec' | paste -sd, -)
			case ",$keep," in *,name=*) [ "$(tr ',' '\n' <<<"$keep" | grep -vc '^name=')" != 0 ] || keep="none,$keep" ;; esac
			mount -t cgroup -o "nosuid,nodev,noexec,$keep" cgroup "$dst"
		fi
	done < <(findmnt -rn -t cgroup,cgroup2 -o TARGET,FSTYPE,OPTIONS)
	mount -t tmpfs -o nosuid,mode=755 dev "$ROOT/dev"
	for n in null zero full random urandom tty; do
		touch "$ROOT/dev/$n"
		mount --bind "/dev/$n" "$ROOT/dev/$n"
	done
	mkdir -p "$ROOT/dev/pts" "$ROOT/dev/shm" "$ROOT/dev/mqueue"
	mount -t devpts -o newinstance,nosuid,noexec,gid=5,mode=620,ptmxmode=0666 devpts "$ROOT/dev/pts"
	ln -s pts/ptmx "$ROOT/dev/ptmx"
	mount -t tmpfs -o nosuid,nodev,mode=1777 shm "$ROOT/dev/shm"
	mount -t mqueue -o nosuid,nodev,noexec mqueue "$ROOT/dev/mqueue"
	ln -s /proc/self/fd "$ROOT/dev/fd"
	ln -s /proc/self/fd/0 "$ROOT/dev/stdin"
	ln -s /proc/self/fd/1 "$ROOT/dev/stdout"
	ln -s /proc/self/fd/2 "$ROOT/dev/stderr"
	mount -t tmpfs -o nosuid,nodev,mode=755 run "$ROOT/run"
	mkdir -m 1777 "$ROOT/run/lock"
	mkdir -p "$ROOT/usr/local/go"
	mount --bind "$GOROOT_HOST" "$ROOT/usr/local/go"
	mount -o remount,bind,ro "$ROOT/usr/local/go"
	hostname "$(cat "$ROOT/etc/hostname")"
	mkdir -p "$ROOT/.fresh-oldroot"
	cd "$ROOT"
	pivot_root . .fresh-oldroot
	cd /
	umount -l /.fresh-oldroot
	rmdir /.fresh-oldroot
	# bash stays pid 1 (it reaps what is orphaned to it while it waits).
	exec /usr/bin/env -i HOME=/root TERM=dumb LANG=C.UTF-8 PATH="$PATH_IN" \
		/bin/bash -c "cd /root/winrmd && { $CMD; }; exit \$?"
fi

cd "$(dirname "$SELF")/.."
REPO=$PWD
CACHE=${FRESH_CACHE:-$REPO/.cache/fresh}
BASE=$CACHE/base
RUN=$CACHE/run
ROOT=$RUN/root
FRESH_TEST=${FRESH_TEST:-0}
FRESH_BENCH=${FRESH_BENCH:-0}
FRESH_KEEP=${FRESH_KEEP:-0}
BUILD_WAIT=${FRESH_BUILD_WAIT:-1200} # seconds for apt + go mod download + build
SUITE=bookworm
INCLUDE=git,make,gcc,libc6-dev,python3,ca-certificates
HOSTNAME_IN=fresh-debian

say() { printf 'fresh-check: %s\n' "$*"; }
die() { say "FAIL: $*"; exit 1; }

[ "$(id -u)" = 0 ] || die "run as root (debootstrap, namespaces, mounts)"
command -v debootstrap >/dev/null || die "debootstrap is not installed (apt-get install debootstrap)"
command -v unshare >/dev/null && command -v pivot_root >/dev/null || die "unshare and pivot_root (util-linux) are needed"
GOROOT_HOST=$(go env GOROOT) || die "no Go toolchain on PATH"

# ---- the run's cgroups and namespaces ---------------------------------------
# One cgroup per hierarchy, below this shell's own, for everything inside.
CGNAME=winrmd-fresh-$$
CGDIRS=()
make_cgroups() {
	local target fstype own d
	while read -r target fstype _; do
		[ "${target#/sys/fs/cgroup}" != "$target" ] || continue
		if [ "$fstype" = cgroup2 ]; then
			own=$(sed -n 's/^0::\(.*\)/\1/p' /proc/self/cgroup)
		else
			own=$(awk -F: -v c="$(basename "$target")" '{ n = split($2, a, ","); for (i = 1; i <= n; i++) if (a[i] == c || a[i] == "name=" c) print $3 }' /proc/self/cgroup | head -n1)
		fi
		d=$target${own%/}/$CGNAME
		mkdir -p "$d"
		# cpuset: a new v1 group has no cpus or mems until given its parent's.
		if [ -e "$d/cpuset.cpus" ]; then
			cat "$(dirname "$d")/cpuset.cpus" >"$d/cpuset.cpus"
			cat "$(dirname "$d")/cpuset.mems" >"$d/cpuset.mems"
		fi
		CGDIRS+=("$d")
	done < <(findmnt -rn -t cgroup,cgroup2 -o TARGET,FSTYPE,OPTIONS)
}
remove_cgroups() {
	local d
	for d in "${CGDIRS[@]}"; do
		[ -d "$d" ] && find "$d" -depth -type d -exec rmdir {} + 2>/dev/null
		[ ! -d "$d" ] || say "WARNING: cgroup $d is still there"
	done
}

# ns_run CMD: run the shell line CMD in /root/winrmd inside the root, in
# namespaces of its own (stage 2 above); the whole pid namespace ends with it.
ns_run() {
	CGPROCS="$(printf '%s/cgroup.procs\n' "${CGDIRS[@]}")" bash -c '
		while read -r f; do echo $$ >"$f"; done <<<"$CGPROCS"
		exec unshare --mount --pid --cgroup --uts --ipc --fork --kill-child --propagation private "$@"' \
		ns_run "$SELF" __inside "$ROOT" "$GOROOT_HOST" "$1"
}

# Accounts made inside the root get uids and gids from 30000 up, not from
# 1000 as on the host: the kernel knows processes by number, and this host's
# own test suites (other checkouts, run at the same time) kill every process
# of their test accounts' uids, which would otherwise be the root's accounts
# too (seen: the root's workers killed by SIGKILL mid-test). Below the fixed
# uids of the container-only accounts of test/deploy (47311...).
set_uid_range() {
	sed -i -E 's/^(UID_MIN|GID_MIN)([[:space:]]+).*/\1\230000/; s/^(UID_MAX|GID_MAX)([[:space:]]+).*/\1\239999/' "$ROOT/etc/login.defs"
	grep -qE '^UID_MIN[[:space:]]+30000$' "$ROOT/etc/login.defs" || die "could not set the uid range in $ROOT/etc/login.defs"
}

LABPID=""
# stop_lab ends `make run`'s process group: SIGTERM first (the lab daemon
# stops cleanly), then SIGKILL after 20 s, because make runs as pid 1 of its
# pid namespace, where a signal it has no handler for (SIGTERM) is dropped,
# and unshare waits for it (seen: both left running after a SIGTERM alone).
# With --kill-child, unshare's death takes the namespace with it.
stop_lab() {
	[ -n "$LABPID" ] || return 0
	if kill -0 "$LABPID" 2>/dev/null; then
		kill -TERM -- "-$LABPID" 2>/dev/null || true
		for _ in $(seq 1 100); do kill -0 "$LABPID" 2>/dev/null || break; sleep 0.2; done
		kill -KILL -- "-$LABPID" 2>/dev/null || true
	fi
	wait "$LABPID" 2>/dev/null || true
	LABPID=""
}
cleanup() {
	set +e
	stop_lab
	remove_cgroups
	[ "$FRESH_KEEP" = 1 ] || rm -rf "$RUN"
}

if [ "${1:-}" = enter ] || [ "${1:-}" = clean ]; then
	[ "$1" = clean ] && { rm -rf "$RUN"; exit 0; }
	[ -d "$ROOT/root/winrmd" ] || die "no kept root in $ROOT (run with FRESH_KEEP=1 first)"
	FRESH_KEEP=1
	trap cleanup EXIT
	make_cgroups
	ns_run "${2:-bash -l}"
	exit $?
fi

# ---- the base root ----------------------------------------------------------
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

trap cleanup EXIT
rm -rf "$RUN"
mkdir -p "$RUN"
cp -a "$BASE" "$ROOT"
rm -f "$ROOT/.fresh-complete"
# A machine's name, as the Debian installer writes it.
echo "$HOSTNAME_IN" >"$ROOT/etc/hostname"
printf '127.0.0.1\tlocalhost\n127.0.1.1\t%s\n\n::1\tlocalhost ip6-localhost ip6-loopback\nff02::1\tip6-allnodes\nff02::2\tip6-allrouters\n' \
	"$HOSTNAME_IN" >"$ROOT/etc/hosts"
cp -L /etc/resolv.conf "$ROOT/etc/resolv.conf"
set_uid_range
# This machine's trust store belongs to "what a fresh machine here holds": the
# package registries are reached through a TLS proxy whose CA is in it. Kept
# in /usr/local/share/ca-certificates too, so that an update-ca-certificates
# run by apt inside the root keeps it.
cp -L /etc/ssl/certs/ca-certificates.crt "$ROOT/etc/ssl/certs/ca-certificates.crt"
cp -L /etc/ssl/certs/ca-certificates.crt "$ROOT/usr/local/share/ca-certificates/this-machine.crt"
git bundle create "$ROOT/tmp/winrmd.bundle" HEAD >/dev/null 2>&1 || die "git bundle failed"
COMMIT=$(git rev-parse --short HEAD)
chroot "$ROOT" git -c advice.detachedHead=false clone -q /tmp/winrmd.bundle /root/winrmd || die "git clone inside the root failed"
rm -f "$ROOT/tmp/winrmd.bundle"
[ ! -e "$ROOT/usr/include/security/pam_appl.h" ] || die "the base root already has the PAM headers: not a fresh machine"
make_cgroups
say "fresh root ready: Debian $(cat "$ROOT/etc/debian_version"), $("$GOROOT_HOST/bin/go" version), winrmd at $COMMIT"

# The client side: this checkout's venv (pywinrm), made if missing.
make -s venv >/dev/null || die "make venv failed (the client side)"

say "make run (inside the root, as root)"
start=$(date +%s)
setsid bash -c "$(declare -p CGDIRS SELF ROOT GOROOT_HOST); $(declare -f ns_run); ns_run 'exec make run'" \
	</dev/null >"$CACHE/make-run.log" 2>&1 &
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
r = s.run_cmd("id; hostname")
print(r.status_code, " ".join(r.std_out.decode().split()))
') || die "pywinrm id failed"
say "pywinrm id: $out"
grep -q '^0 uid=[0-9]*(winrmd-lab).*(winrm-remote-users).* '"$HOSTNAME_IN"'$' <<<"$out" || die "pywinrm id: unexpected output"
grep -q 'PAM: yes' "$CACHE/make-run.log" || die "the built binary has no PAM (see $CACHE/make-run.log)"

stop_lab
result="make run OK (build deps installed by make, Identify, pywinrm NTLM id)"

# inside NAME LOG CMD: runs CMD in the root as a step of this check, its
# output in $CACHE/LOG, and adds its verdict and time to $result.
inside() {
	local name=$1 log=$2 cmd=$3 t0
	say "$name (inside the root; this takes a while)"
	t0=$(date +%s)
	if ns_run "$cmd" </dev/null >"$CACHE/$log" 2>&1; then
		result="$result; $name PASS in $(($(date +%s) - t0))s"
	else
		result="$result; $name FAIL after $(($(date +%s) - t0))s (log $CACHE/$log)"
	fi
}

if [ "$FRESH_BENCH" = 1 ]; then
	inside "make bench -quick" make-bench.log 'make bench BENCH_FLAGS="-quick -out /tmp/fresh-bench.json"'
	grep -E '^(venv|bench):|ERROR|GOALS|all goals' "$CACHE/make-bench.log" || true
fi

if [ "$FRESH_TEST" = 1 ]; then
	inside "make test" make-test.log 'CI=true make test'
	cp "$ROOT/root/winrmd/test/.work/gotest.log" "$CACHE/gotest.log" 2>/dev/null || true
	tail -n 25 "$CACHE/make-test.log"
fi

line="$(date -u +%Y-%m-%d) $COMMIT: $result"
echo "$line" >"$CACHE/last-run"
say "$line"
