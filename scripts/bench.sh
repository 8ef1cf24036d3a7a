#!/usr/bin/env bash
# make bench: measure ROTA against the baseline tools in one run, on the
# realistic 400 MiB ext4 image and on a 4 GiB image made from it.
#
#   scripts/bench.sh [WORKDIR]
#
# Every tool writes a durable file (ROTA fsyncs its output; the zstd runs
# are followed by `sync FILE`), input files are read once first so that
# each run reads from the page cache, dirty pages are flushed before each
# run, ROTA and zstd alternate, and each figure is the median of RUNS runs.
# Results are printed as a Markdown table for docs/benchmarks.md.
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

# once CMD: run CMD once after flushing dirty pages, so that no run pays
# for the writeback of the one before; print "wall_s rss_kib".
once() {
  sync
  /usr/bin/time -f "%e %M" -o time.out bash -c "$1" >/dev/null 2>&1
  cat time.out
}

median() { sort -g | sed -n "$(( (runs + 1) / 2 ))p"; }

# measure NAME CMD: run CMD $runs times; print "NAME wall_s rss_kib"
# (medians).
measure() {
  local out
  out=$(for _ in $(seq "$runs"); do once "$2"; done)
  printf '%s %s %s\n' "$1" "$(cut -d' ' -f1 <<<"$out" | median)" \
    "$(cut -d' ' -f2 <<<"$out" | median)"
}

# pair NAME_A CMD_A NAME_B CMD_B: like measure for both, alternating A
# and B (and which goes first) so that both see the same machine.
pair() {
  local a="" b="" i
  for i in $(seq "$runs"); do
    if (( i % 2 )); then
      a+="$(once "$2")"$'\n'; b+="$(once "$4")"$'\n'
    else
      b+="$(once "$4")"$'\n'; a+="$(once "$2")"$'\n'
    fi
  done
  printf '%s %s %s\n' "$1" "$(grep . <<<"$a" | cut -d' ' -f1 | median)" \
    "$(grep . <<<"$a" | cut -d' ' -f2 | median)"
  printf '%s %s %s\n' "$3" "$(grep . <<<"$b" | cut -d' ' -f1 | median)" \
    "$(grep . <<<"$b" | cut -d' ' -f2 | median)"
}

cat "$img" "$big" >/dev/null
{
  pair zstd-create "zstd -3 -T0 -q -f '$img' -o z.zst && sync z.zst" \
    rota-create "'$rota' bundle create --compatible bench --version 1.0.0 \
      --slot rootfs='$img' --key k.key -o b.rota"
  pair zstd-extract "zstd -d -q -f z.zst -o z.out && sync z.out" \
    rota-extract "'$rota' bundle extract --keyring k.pub b.rota --slot rootfs -o b.out"
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
