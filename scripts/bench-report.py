#!/usr/bin/env python3
"""Turns scripts/bench.sh measurements into the Markdown tables of
docs/benchmarks.md.

usage: bench-report.py RESULTS IMAGE_BYTES ZSTD_BYTES ROTA_BYTES
RESULTS has one line per measure: NAME WALL_SECONDS PEAK_RSS_KIB.
"""
import sys

results, img, zst, rota = sys.argv[1], *map(int, sys.argv[2:5])
r = {}
for line in open(results):
    name, wall, rss = line.split()
    r[name] = (float(wall), int(rss))

mib = img / 2**20


def tp(k):
    return mib / max(r[k][0], 0.001)


def ratio(a, b):
    return tp(a) / tp(b)


def ms(k):
    return r[k][0] * 1000


def rss(k):
    return r[k][1] / 1024


print("| measure | zstd | rota | ratio (rota/zstd) | target |")
print("|---|---|---|---|---|")
print(f"| create throughput, MiB/s | {tp('zstd-create'):.0f} | {tp('rota-create'):.0f} "
      f"| {ratio('rota-create', 'zstd-create'):.2f}x | >= 0.8x |")
print(f"| output size, bytes | {zst} | {rota} | {rota / zst:.3f}x | <= 1.05x |")
print(f"| extract throughput, MiB/s | {tp('zstd-extract'):.0f} | {tp('rota-extract'):.0f} "
      f"| {ratio('rota-extract', 'zstd-extract'):.2f}x | >= 0.8x |")
print()
print("| measure | 400 MiB image | 4 GiB image | target |")
print("|---|---|---|---|")
print(f"| metadata verification (whole command), ms | {ms('rota-verify-meta'):.0f} "
      f"| {ms('rota-verify-meta-4g'):.0f} | < 50 ms, independent of size |")
print(f"| peak RSS of create, MiB | {rss('rota-create'):.0f} | {rss('rota-create-4g'):.0f} "
      f"| < 100 MiB at 4 GiB |")
print(f"| peak RSS of extract, MiB | {rss('rota-extract'):.0f} | {rss('rota-extract-4g'):.0f} "
      f"| < 100 MiB at 4 GiB |")
print()
print(f"zstd peak RSS on the 400 MiB image: create {rss('zstd-create'):.0f} MiB, "
      f"extract {rss('zstd-extract'):.0f} MiB.")
