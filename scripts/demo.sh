#!/usr/bin/env bash
# make demo: generate a signing key, build a bundle from a generated root
# filesystem image, verify it, inspect it and extract its image again.
set -euo pipefail
cd "$(dirname "$0")/.."
go build -o bin/ ./cmd/rota
rota=$PWD/bin/rota
dir=demo
rm -rf "$dir" && mkdir -p "$dir/tree/etc"
cd "$dir"

echo "== generate a signing key"
"$rota" key generate --out release

echo "== make a 64 MiB root filesystem image"
echo "ROTA demo 1.0.0" >tree/etc/issue
if command -v mkfs.ext4 >/dev/null 2>&1 || [ -x /usr/sbin/mkfs.ext4 ] || [ -x /sbin/mkfs.ext4 ]; then
  PATH="$PATH:/usr/sbin:/sbin" mkfs.ext4 -q -F -d tree rootfs.img 64M
else
  # No e2fsprogs: a plain image does just as well for the bundle.
  head -c 64M /dev/zero >rootfs.img
  dd if=tree/etc/issue of=rootfs.img conv=notrunc status=none
fi

echo "== build and sign the bundle"
"$rota" bundle create --compatible rota-demo-board --version 1.0.0 --rollback-index 1 \
  --description "ROTA demo release" --slot rootfs=rootfs.img --key release.key -o demo.rota

echo "== verify it (signature, metadata and every image digest)"
"$rota" bundle verify --keyring release.pub demo.rota

echo "== inspect it"
"$rota" bundle inspect demo.rota

echo "== extract the rootfs image and compare"
"$rota" bundle extract --keyring release.pub demo.rota --slot rootfs -o rootfs.out
cmp rootfs.img rootfs.out && echo "extracted image is identical"

echo "== a bundle signed by another key is refused"
"$rota" key generate --out stranger >/dev/null
if "$rota" bundle verify --keyring stranger.pub demo.rota; then
  echo "unexpected: verified with an untrusted key" >&2
  exit 1
fi
echo "== install it on a simulated device: two file slots and a simulated boot loader"
mkdir -p device
cat >device/system.toml <<'TOML'
compatible = "rota-demo-board"
data-dir = "data"

[bootloader]
backend = "file"

[install]
keyring = "../release.pub"

[[slot]]
name = "rootfs.0"
class = "rootfs"
device = "rootfs-a.img"
bootname = "A"

[[slot]]
name = "rootfs.1"
class = "rootfs"
device = "rootfs-b.img"
bootname = "B"
TOML
echo "factory image" >device/rootfs-a.img
: >device/rootfs-b.img
: >device/cmdline
export ROTA_CONFIG=$PWD/device/system.toml ROTA_CMDLINE=$PWD/device/cmdline
"$rota" install demo.rota
"$rota" slot simulate-reboot
"$rota" slot mark-good
"$rota" slot status
echo
echo "demo files are in $dir/"
