#!/usr/bin/env bash
# make demo: the main job on embedded defaults. Build and sign a bundle,
# install it on a simulated device, then run a fleet: start rota-server
# (SQLite and an OCI layout under ./rota-data), upload the release, start
# simulated devices, roll the release out in phases and show the progress
# until every device runs it. The server and the devices keep running.
set -euo pipefail
cd "$(dirname "$0")/.."
go build -o bin/ ./cmd/rota ./cmd/rota-server ./cmd/rota-client
go build -o bin/demo-api ./internal/demo
bin=$PWD/bin
rota=$bin/rota
dir=demo
"$(dirname "$0")/demo-stop.sh"
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
unset ROTA_CONFIG ROTA_CMDLINE

echo
echo "== start rota-server on its defaults: :8080, everything under ./rota-data"
mkdir -p rota-data/keys
cp release.pub rota-data/keys/
export ROTA_POLL_INTERVAL=2s ROTA_ENROLLMENT_TOKEN=demo-enrollment
export ROTA_LISTEN=${ROTA_LISTEN:-:8080}
setsid "$bin/rota-server" >server.log 2>&1 </dev/null &
echo $! >server.pid
port=${ROTA_LISTEN##*:}
url=http://localhost:$port
for _ in $(seq 100); do
  curl -sf "$url/readyz" >/dev/null 2>&1 && break
  if ! kill -0 "$(cat server.pid)" 2>/dev/null; then
    cat server.log >&2
    echo "rota-server did not start (is port $port taken? set ROTA_LISTEN)" >&2
    exit 1
  fi
  sleep 0.1
done
echo "rota-server is up at $url"

export ROTA_SERVER=$url
ROTA_TOKEN=$("$bin/rota-server" token create --name demo --role admin)
export ROTA_TOKEN

echo "== build release 1.1.0 and upload it (the server verifies its signature)"
echo "ROTA demo 1.1.0" >tree/etc/issue
PATH="$PATH:/usr/sbin:/sbin" mkfs.ext4 -q -F -d tree rootfs-1.1.0.img 16M >/dev/null 2>&1 ||
  { cp rootfs.img rootfs-1.1.0.img && echo "ROTA demo 1.1.0" | dd of=rootfs-1.1.0.img conv=notrunc status=none; }
"$rota" bundle create --compatible rota-sim --version 1.1.0 --rollback-index 2 \
  --description "ROTA demo fleet release" --slot rootfs=rootfs-1.1.0.img --key release.key \
  -o demo-1.1.0.rota >/dev/null
release=$("$bin/demo-api" upload demo-1.1.0.rota)
echo "release $release"

echo "== start 20 simulated devices (agents with file slots; they enroll by token)"
setsid "$bin/rota-client" simulate --server "$url" --devices 20 --dir fleet \
  --keyring release.pub --enrollment-token demo-enrollment --poll 2s \
  >fleet.log 2>&1 </dev/null &
echo $! >fleet.pid
for _ in $(seq 100); do
  n=$(curl -sf -H "Authorization: Bearer $ROTA_TOKEN" "$url/api/v1/devices?status=accepted&limit=1" |
    sed -n 's/.*"total":\([0-9]*\).*/\1/p')
  [ "${n:-0}" -ge 20 ] && break
  sleep 0.2
done
echo "devices accepted: ${n:-0}"

echo "== phased deployment: 2 canaries, then 25 %, then the rest; pause on >10 % failures"
deployment=$("$bin/demo-api" deploy "$release")
"$bin/demo-api" watch "$deployment"

password=$(sed -n 's/^Created user admin with one-time password: //p' server.log)
echo
echo "rota-server keeps running at $url with 20 simulated devices."
echo "  management API: $url/api/v1 (token: $ROTA_TOKEN)"
echo "  sign in as admin with the one-time password: $password"
echo "  metrics: $url/metrics; logs: $dir/server.log, $dir/fleet.log"
echo "  stop them with: make demo-stop"
