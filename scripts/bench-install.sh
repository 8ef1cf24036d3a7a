#!/usr/bin/env bash
# make bench (second half): measure installs and the agent on the
# realistic 400 MiB ext4 image.
#
#   scripts/bench-install.sh [WORKDIR]
#
# 1. `rota install http://127.0.0.1:PORT/files/v2.rota` (the bundle served
#    by internal/benchtool/installbench, with Range support) against
#    `dd ... conv=fsync` writing the raw image, into the same slot: a
#    preallocated file, then a loop device. Both include the flush to the
#    slot. The two run alternately, RUNS times each; figures are medians.
#    The slot is compared with the image after the first ROTA run of each
#    kind.
# 2. rota-client's memory (VmRSS, VmHWM from /proc/PID/status) while idle
#    after three polls of the installbench device-API stub, and its peak
#    while it installs the same bundle; AGENT_RUNS runs.
# 3. The size of a stripped rota-client.
#
# Needs root for the loop device (NO_LOOP=1 skips it). Input files are read
# once first, so every run reads them from the page cache. Prints a
# Markdown table for docs/benchmarks.md.
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$PWD
work=${1:-$PWD/.bench}
runs=${RUNS:-5}
agent_runs=${AGENT_RUNS:-5}
mkdir -p "$work"
work=$(cd "$work" && pwd)

# The corpus: $CORPUS, else the shared one next to the repository, else
# built into the bench directory as scripts/bench.sh does.
corpus=${CORPUS:-}
if [ -z "$corpus" ]; then
  if [ -f ../corpus/v2.ext4 ]; then corpus=$(cd ../corpus && pwd); else corpus=$work/corpus; fi
fi
if [ ! -f "$corpus/v2.ext4" ]; then
  echo "building the rootfs corpus in $corpus (about two minutes)" >&2
  bash ../shared/corpus/make-rootfs-pair.sh "$corpus" >&2
fi
img=$corpus/v2.ext4
old=$corpus/v1.ext4
size=$(stat -c %s "$img")

bin=$work/bin
go build -o "$bin/" ./cmd/rota ./cmd/rota-client ./internal/benchtool/installbench
go build -trimpath -ldflags='-s -w' -o "$bin/rota-client.stripped" ./cmd/rota-client
rota=$bin/rota

ib=$work/install
mkdir -p "$ib"
cd "$ib"
[ -f k.key ] || "$rota" key generate --out k >/dev/null
if [ ! -f v2.rota ] || [ "$img" -nt v2.rota ] || [ k.key -nt v2.rota ]; then
  "$rota" bundle create --compatible bench --version 2.0.0 --rollback-index 2 \
    --slot rootfs="$img" --key k.key -o v2.rota >/dev/null
fi

# Everything started here is stopped on exit, however the script ends.
server_pid='' agent_pid='' loop=''
cleanup() {
  [ -n "$agent_pid" ] && kill "$agent_pid" 2>/dev/null && wait "$agent_pid" 2>/dev/null
  [ -n "$server_pid" ] && kill "$server_pid" 2>/dev/null && wait "$server_pid" 2>/dev/null
  [ -n "$loop" ] && losetup -d "$loop"
  return 0
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# A loop device left by an interrupted run still holds the backing file.
for stale in $(losetup -j "$ib/loop-backing.img" -O NAME -n 2>/dev/null); do
  losetup -d "$stale"
done

rm -f addr
"$bin/installbench" serve --dir "$ib" --addr-file addr --bundle v2.rota 2>server.log &
server_pid=$!
for _ in $(seq 50); do [ -s addr ] && break; sleep 0.1; done
[ -s addr ] || { echo "installbench did not start; see $ib/server.log" >&2; exit 1; }
url=$(cat addr)
cat "$img" "$old" v2.rota >/dev/null

# median prints the middle value of its arguments.
median() { printf '%s\n' "$@" | sort -g | sed -n "$(( ($# + 1) / 2 ))p"; }

# timed OUT CMD...: run CMD, append "wall_s maxrss_kib cpu_s" to OUT.
timed() {
  local out=$1; shift
  local t0 t1
  t0=$(date +%s%N)
  /usr/bin/time -f '%M %U %S' -o time.out "$@" >run.log 2>&1 ||
    { cat run.log >&2; return 1; }
  t1=$(date +%s%N)
  read -r rss u s <time.out
  echo "$(( (t1 - t0) / 1000 )) $rss $u $s" |
    awk '{printf "%.3f %d %.2f\n", $1 / 1e6, $2, $3 + $4}' >>"$out"
}

# device_config DIR SLOT_B VERIFY: a simulated device whose booted slot A
# is a small file and whose passive slot B is SLOT_B.
device_config() {
  mkdir -p "$1"
  printf 'factory\n' >"$1/a.img"
  : >"$1/cmdline"
  cat >"$1/system.toml" <<EOF
compatible = "bench"
data-dir = "data"

[bootloader]
backend = "file"

[install]
keyring = "$ib/k.pub"
verify-after-write = $3

[[slot]]
name = "rootfs.0"
class = "rootfs"
device = "a.img"
bootname = "A"

[[slot]]
name = "rootfs.1"
class = "rootfs"
device = "$2"
bootname = "B"
EOF
}

# install_timed OUT DEVDIR: time rota install into the device of DEVDIR,
# from a fresh data directory.
install_timed() {
  rm -rf "$2/data"
  ROTA_CMDLINE=$2/cmdline timed "$1" "$rota" install --config "$2/system.toml" \
    "$url/files/v2.rota"
}

# bench_kind KIND SLOT DDCMD: alternate ROTA and dd into SLOT, then ROTA
# with verify-after-write.
bench_kind() {
  local kind=$1 slot=$2 dd_cmd=$3 i
  device_config "$ib/dev-$kind" "$slot" false
  device_config "$ib/dev-$kind-verify" "$slot" true
  rm -f "$kind".rota.txt "$kind".dd.txt "$kind".verify.txt
  # The slot starts with other content, so the check below sees ROTA's
  # bytes.
  dd if="$old" of="$slot" bs=4M conv=fsync,notrunc status=none
  for i in $(seq "$runs"); do
    # Alternate who goes first, so that neither always follows the other.
    if [ $((i % 2)) = 1 ]; then
      install_timed "$kind.rota.txt" "$ib/dev-$kind"
      if [ "$i" = 1 ]; then
        cmp -n "$size" "$slot" "$img" || { echo "$kind slot differs from the image" >&2; exit 1; }
        echo "$kind slot: matches v2.ext4 after rota install" >&2
      fi
      timed "$kind.dd.txt" bash -c "$dd_cmd"
    else
      timed "$kind.dd.txt" bash -c "$dd_cmd"
      install_timed "$kind.rota.txt" "$ib/dev-$kind"
    fi
    install_timed "$kind.verify.txt" "$ib/dev-$kind-verify"
  done
}

dd_file="dd if=$img of=$ib/slot-b.img bs=4M conv=fsync,notrunc status=none"
rm -f slot-b.img
fallocate -l "$size" slot-b.img
bench_kind file "$ib/slot-b.img" "$dd_file"

have_loop=false
if [ -z "${NO_LOOP:-}" ] && [ -e /dev/loop-control ]; then
  rm -f loop-backing.img
  fallocate -l "$size" loop-backing.img
  loop=$(losetup --find --show loop-backing.img)
  dd_loop="dd if=$img of=$loop bs=4M conv=fsync status=none"
  bench_kind loop "$loop" "$dd_loop"
  losetup -d "$loop"
  loop=''
  have_loop=true
fi

# status_kib PID FIELD: a field of /proc/PID/status, in KiB.
status_kib() { awk -v f="$2:" '$1 == f {print $2}' "/proc/$1/status"; }

# state_checks: the number of checks the stub answered since its reset.
state_checks() { curl -sf "$url/bench/state" | sed 's/.*"checks":\([0-9]*\).*/\1/'; }

ag=$ib/agent
rm -f agent.txt
for i in $(seq "$agent_runs"); do
  rm -rf "$ag"
  device_config "$ag" slot-b.img true
  : >"$ag/slot-b.img"
  cat >"$ag/client.toml" <<EOF
server = "$url"
system-config = "system.toml"
keyring = "$ib/k.pub"
reboot-command = ["touch", "$ag/rebooted"]
log-level = "warn"

[identity]
serial = "bench-0001"
EOF
  curl -sf -X POST "$url/bench/reset"
  ROTA_CMDLINE=$ag/cmdline "$bin/rota-client" --config "$ag/client.toml" 2>"$ag/agent.log" &
  agent_pid=$!
  # Three checks: the first at start, then two poll intervals (>= 5 s).
  for _ in $(seq 300); do
    [ "$(state_checks)" -ge 3 ] && break
    sleep 0.1
  done
  [ "$(state_checks)" -ge 3 ] || { cat "$ag/agent.log" >&2; exit 1; }
  idle_rss=$(status_kib "$agent_pid" VmRSS)
  idle_hwm=$(status_kib "$agent_pid" VmHWM)
  curl -sf -X POST "$url/bench/offer"
  for _ in $(seq 1200); do
    [ -e "$ag/rebooted" ] && break
    sleep 0.1
  done
  [ -e "$ag/rebooted" ] || { echo "agent did not install" >&2; cat "$ag/agent.log" >&2; exit 1; }
  peak_hwm=$(status_kib "$agent_pid" VmHWM)
  kill "$agent_pid"
  wait "$agent_pid" || true
  agent_pid=''
  if [ "$i" = 1 ]; then
    cmp "$ag/slot-b.img" "$img" || { echo "agent slot differs from the image" >&2; exit 1; }
    echo "agent: slot matches v2.ext4 after rota-client install" >&2
  fi
  echo "$idle_rss $idle_hwm $peak_hwm" >>agent.txt
done

# Results.
mib() { awk -v k="$1" 'BEGIN {printf "%.1f", k / 1024}'; }
col() { awk -v c="$2" '{print $c}' "$1"; }
# shellcheck disable=SC2046
{
  echo "| measurement | ROTA | baseline | ROTA / baseline | target | met |"
  echo "|---|---|---|---|---|---|"
  kinds=file
  $have_loop && kinds="file loop"
  for kind in $kinds; do
    r=$(median $(col "$kind.rota.txt" 1)); d=$(median $(col "$kind.dd.txt" 1))
    v=$(median $(col "$kind.verify.txt" 1))
    awk -v r="$r" -v d="$d" -v v="$v" -v s="$size" -v k="$kind" 'BEGIN {
      m = s / 1048576; ratio = d / r
      printf "| install, %s slot: throughput (wall s) | %.0f MiB/s (%.2f s) | dd %.0f MiB/s (%.2f s) | %.2fx | >= 0.95x | %s |\n",
        k, m / r, r, m / d, d, ratio, (ratio >= 0.95 ? "yes" : "no")
      printf "| install, %s slot, verify-after-write on | %.0f MiB/s (%.2f s) | dd %.0f MiB/s | %.2fx | - | - |\n",
        k, m / v, v, m / d, d / v
    }'
    echo "| install, $kind slot: max RSS, CPU s | $(mib "$(median $(col "$kind.rota.txt" 2))") MiB," \
      "$(median $(col "$kind.rota.txt" 3)) s | dd $(mib "$(median $(col "$kind.dd.txt" 2))") MiB," \
      "$(median $(col "$kind.dd.txt" 3)) s | - | - | - |"
  done
  idle=$(median $(col agent.txt 1)); peak=$(median $(col agent.txt 3))
  awk -v i="$idle" -v p="$peak" 'BEGIN {
    printf "| rota-client idle VmRSS after 3 polls | %.1f MiB | - | - | <= 20 MiB | %s |\n",
      i / 1024, (i <= 20 * 1024 ? "yes" : "no")
    printf "| rota-client peak VmHWM, installing 400 MiB | %.1f MiB | Mender 3.4: 35 MiB | %.2fx | <= 32 MiB | %s |\n",
      p / 1024, p / 1024 / 35, (p <= 32 * 1024 ? "yes" : "no")
  }'
  echo "| rota-client stripped binary | $(mib $(( $(stat -c %s "$bin/rota-client.stripped") / 1024 ))) MiB | - | - | - | - |"
  echo
  echo "Medians of $runs runs (installs) and $agent_runs runs (agent); image $size bytes," \
    "bundle $(stat -c %s v2.rota) bytes; $(nproc) cores, $(awk -F': ' '/model name/ {print $2; exit}' /proc/cpuinfo)."
  echo
  echo "Commands (DEV is the simulated device of the slot kind, with verify-after-write = false):"
  echo
  echo "    ROTA_CMDLINE=DEV/cmdline rota install --config DEV/system.toml $url/files/v2.rota"
  echo "    $dd_file"
  $have_loop && echo "    $dd_loop"
  echo "    rota-client --config agent/client.toml    # polls $url, installs on offer"
  echo "    go build -trimpath -ldflags='-s -w' ./cmd/rota-client"
}
