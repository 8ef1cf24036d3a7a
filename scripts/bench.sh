#!/usr/bin/env bash
# make bench: measure ROTA against the baseline tools in one run, on the
# realistic 400 MiB ext4 image and on a 4 GiB image made from it.
#
#   scripts/bench.sh [WORKDIR]
#
# Every tool writes a durable file (ROTA fsyncs its output; the zstd runs
# are followed by `sync FILE`), input files are read once first so that
# each run reads from the page cache, and each figure is the median of
# RUNS runs. Results are printed as a Markdown table for
# docs/benchmarks.md.
set -euo pipefail
cd "$(dirname "$0")/.."
work=${1:-$PWD/.bench}
runs=${RUNS:-5}
mkdir -p "$work"
corpus=${CORPUS:-$work/corpus}

if [ ! -f "$corpus/v2.ext4" ]; then
  shared=$(cd .. && pwd)/shared/corpus/make-rootfs-pair.sh
  [ -x "$shared" ] || shared=../shared/corpus/make-rootfs-pair.sh
  echo "building the rootfs corpus in $corpus (about two minutes)" >&2
  bash "$shared" "$corpus" >&2
fi
command -v zstd >/dev/null || ./scripts/test-deps.sh

go build -o "$work/bin/" ./cmd/rota
rota=$work/bin/rota
img=$corpus/v2.ext4
big=$work/big.img
if [ ! -f "$big" ]; then
  for _ in $(seq 10); do cat "$img"; done >"$big"
fi
cd "$work"
[ -f k.key ] || "$rota" key generate --out k >/dev/null

# measure NAME CMD...: run CMD $runs times; print "NAME wall_s rss_kib"
# (medians).
measure() {
  local name=$1; shift
  local walls=() rss=()
  for _ in $(seq "$runs"); do
    /usr/bin/time -f "%e %M" -o time.out bash -c "$*" >/dev/null 2>&1
    read -r w m <time.out
    walls+=("$w"); rss+=("$m")
  done
  printf '%s %s %s\n' "$name" \
    "$(printf '%s\n' "${walls[@]}" | sort -g | sed -n "$(( (runs + 1) / 2 ))p")" \
    "$(printf '%s\n' "${rss[@]}" | sort -g | sed -n "$(( (runs + 1) / 2 ))p")"
}

cat "$img" "$big" >/dev/null
{
  measure zstd-create "zstd -3 -T0 -q -f '$img' -o z.zst && sync z.zst"
  measure rota-create "'$rota' bundle create --compatible bench --version 1.0.0 \
    --slot rootfs='$img' --key k.key -o b.rota"
  measure zstd-extract "zstd -d -q -f z.zst -o z.out && sync z.out"
  measure rota-extract "'$rota' bundle extract --keyring k.pub b.rota --slot rootfs -o b.out"
  measure rota-verify-meta "'$rota' bundle verify --metadata-only --keyring k.pub b.rota"
  measure rota-create-4g "'$rota' bundle create --compatible bench --version 1.0.0 \
    --slot rootfs='$big' --key k.key -o big.rota"
  measure rota-extract-4g "'$rota' bundle extract --keyring k.pub big.rota --slot rootfs -o big.out"
  measure rota-verify-meta-4g "'$rota' bundle verify --metadata-only --keyring k.pub big.rota"
} >results.txt
rm -f z.out b.out big.out
report=$(cd - >/dev/null && pwd)/scripts/bench-report.py
python3 "$report" results.txt "$(stat -c %s "$img")" "$(stat -c %s z.zst)" "$(stat -c %s b.rota)"

echo
echo "Go benchmarks:"
cd - >/dev/null
go test -run '^$' -bench . -benchmem -benchtime 5x ./bundle/
