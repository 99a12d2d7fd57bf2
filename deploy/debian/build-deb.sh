#!/usr/bin/env bash
# make deb: build winrmd_<version>_<arch>.deb with dpkg-deb alone (no debian/
# source tree, no debhelper): the cgo binary (PAM), the systemd unit, the PAM
# service file, the default configuration as a conffile, the maintainer
# scripts. Output: $DEB_OUT (default bin/), path printed on the last line.
set -euo pipefail
cd "$(dirname "$0")/../.."
GO=${GO:-go}
VERSION=${DEB_VERSION:-0.1.0~dev}
ARCH=$(dpkg --print-architecture)
OUT=${DEB_OUT:-bin}
SRC=deploy/debian

stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
root=$stage/winrmd
umask 022

# -buildmode=pie (lintian: hardening-no-pie); -s -w: no symbol tables
# (lintian: unstripped-binary-or-object); the binary
# keeps its module list for `go version -m`.
CGO_ENABLED=1 $GO build -trimpath -buildmode=pie -ldflags "-s -w -X main.Version=$VERSION" -o "$root/usr/sbin/winrmd" ./cmd/winrmd
"$root/usr/sbin/winrmd" version | grep -q 'PAM: yes' || { echo "make deb: the binary has no PAM (cgo off?)" >&2; exit 1; }
# The shell worker alone (cmd/winrmd-worker), which the daemon runs from
# beside itself: static and not PIE, so a worker loads nothing and relocates
# nothing at start (BENCH.md: start CPU and memory per idle shell).
CGO_ENABLED=0 $GO build -trimpath -ldflags "-s -w" -o "$root/usr/sbin/winrmd-worker" ./cmd/winrmd-worker

install -D -m 0644 "$SRC/lintian-overrides" "$root/usr/share/lintian/overrides/winrmd"
install -D -m 0644 deploy/winrmd.service "$root/lib/systemd/system/winrmd.service"
install -D -m 0644 deploy/pam.winrmd "$root/etc/pam.d/winrmd"
install -d -m 0755 "$root/etc/winrmd"
"$root/usr/sbin/winrmd" config default >"$root/etc/winrmd/winrmd.yaml"
chmod 0644 "$root/etc/winrmd/winrmd.yaml"

doc=$root/usr/share/doc/winrmd
install -D -m 0644 "$SRC/copyright" "$doc/copyright"
install -m 0644 README.md "$doc/README.md"
install -m 0644 deploy/README.md "$doc/README.deploy.md"
sed -e "s/@VERSION@/$VERSION/" -e "s/@DATE@/$(date -R -u -d "@$(git log -1 --format=%ct 2>/dev/null || date +%s)")/" \
	"$SRC/changelog" | gzip -9n >"$doc/changelog.gz"
chmod 0644 "$doc/changelog.gz"

install -d -m 0755 "$root/DEBIAN"
for f in postinst prerm postrm; do install -m 0755 "$SRC/$f" "$root/DEBIAN/$f"; done
install -m 0644 "$SRC/conffiles" "$root/DEBIAN/conffiles"
size=$(du -sk --exclude=DEBIAN "$root" | cut -f1)
sed -e "s/@VERSION@/$VERSION/" -e "s/@ARCH@/$ARCH/" -e "s/@SIZE@/$size/" "$SRC/control.in" >"$root/DEBIAN/control"
(cd "$root" && find . -path ./DEBIAN -prune -o -type f -printf '%P\n' | sort | xargs md5sum) >"$root/DEBIAN/md5sums"
chmod 0644 "$root/DEBIAN/control" "$root/DEBIAN/md5sums"

mkdir -p "$OUT"
deb=$OUT/winrmd_${VERSION}_${ARCH}.deb
dpkg-deb --root-owner-group -Zxz --build "$root" "$deb" >/dev/null
echo "$deb"
