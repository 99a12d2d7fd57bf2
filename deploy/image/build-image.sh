#!/usr/bin/env bash
# make image: an OCI image layout of winrmd, built without a Docker engine
# (umoci, from Debian). One layer:
#   /usr/sbin/winrmd            static (CGO_ENABLED=0: no PAM, accounts from
#                               /etc/passwd and /etc/group; `winrmd version`
#                               says so)
#   /usr/sbin/winrmd-worker     the shell worker alone, static (cmd/winrmd-worker)
#   /bin/busybox, /bin/sh       the shell the worker starts commands with
#                               (`/bin/sh -c`), busybox-static: nothing else
#   /etc/winrmd/winrmd.yaml     deploy/image/winrmd.yaml
#   /etc/passwd, /etc/group     root and nobody; the group winrm-remote-users
#   /tmp                        1777
# Config: entrypoint winrmd, cmd `serve --config /etc/winrmd/winrmd.yaml`,
# ports 5985, 5986, 9985 (metrics). Output: $IMAGE_OUT (default bin/oci),
# tag $IMAGE_TAG (default latest); the layout path:tag is the last line.
set -euo pipefail
cd "$(dirname "$0")/../.."
GO=${GO:-go}
OUT=${IMAGE_OUT:-bin/oci}
TAG=${IMAGE_TAG:-latest}
VERSION=${IMAGE_VERSION:-0.1.0-dev}
BUSYBOX=${BUSYBOX:-/bin/busybox}
for tool in umoci tar; do
	command -v "$tool" >/dev/null || { echo "make image: $tool is not installed (apt-get install $tool)" >&2; exit 1; }
done
[ -x "$BUSYBOX" ] || { echo "make image: $BUSYBOX missing (apt-get install busybox-static)" >&2; exit 1; }
if ! file -L "$BUSYBOX" 2>/dev/null | grep -q 'statically linked' && ldd "$BUSYBOX" >/dev/null 2>&1; then
	echo "make image: $BUSYBOX is not static (install busybox-static)" >&2; exit 1
fi

stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
rootfs=$stage/rootfs
umask 022
mkdir -p "$rootfs"/{bin,usr/sbin,etc/winrmd,root,home,proc,sys,dev,run}
install -d -m 1777 "$rootfs/tmp"
CGO_ENABLED=0 $GO build -trimpath -ldflags "-s -w -X main.Version=$VERSION" -o "$rootfs/usr/sbin/winrmd" ./cmd/winrmd
if ldd "$rootfs/usr/sbin/winrmd" >/dev/null 2>&1; then echo "make image: winrmd is not static" >&2; exit 1; fi
CGO_ENABLED=0 $GO build -trimpath -ldflags "-s -w" -o "$rootfs/usr/sbin/winrmd-worker" ./cmd/winrmd-worker
install -m 0755 "$BUSYBOX" "$rootfs/bin/busybox"
ln -s busybox "$rootfs/bin/sh"
install -m 0644 deploy/image/winrmd.yaml "$rootfs/etc/winrmd/winrmd.yaml"
"$rootfs/usr/sbin/winrmd" config check --config "$rootfs/etc/winrmd/winrmd.yaml" >/dev/null
printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n' >"$rootfs/etc/passwd"
printf 'root:x:0:\nnogroup:x:65534:\nwinrm-remote-users:x:999:\n' >"$rootfs/etc/group"
chmod 0700 "$rootfs/root"

# Reproducible layer: fixed owner and times.
epoch=$(git log -1 --format=%ct 2>/dev/null || date +%s)
tar --sort=name --numeric-owner --owner=0 --group=0 --mtime="@$epoch" -C "$rootfs" -cf "$stage/layer.tar" .

rm -rf "$OUT"
mkdir -p "$(dirname "$OUT")"
umoci init --layout "$OUT"
umoci new --image "$OUT:$TAG"
umoci raw add-layer --image "$OUT:$TAG" "$stage/layer.tar"
umoci config --image "$OUT:$TAG" \
	--author "winrmd" \
	--config.entrypoint /usr/sbin/winrmd \
	--config.cmd serve --config.cmd --config --config.cmd /etc/winrmd/winrmd.yaml \
	--config.env PATH=/usr/sbin:/bin \
	--config.workingdir / \
	--config.user 0:0 \
	--config.exposedports 5985/tcp --config.exposedports 5986/tcp --config.exposedports 9985/tcp \
	--config.stopsignal SIGTERM \
	--config.label org.opencontainers.image.title=winrmd \
	--config.label org.opencontainers.image.version="$VERSION" \
	--config.label org.opencontainers.image.description="WinRM-compatible remoting server"
umoci gc --layout "$OUT"
echo "$OUT:$TAG"
