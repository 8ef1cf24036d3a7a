#!/usr/bin/env bash
# Installs the Debian packages the tests talk to, when they are missing.
# Safe to run again: it installs only what is absent.
set -euo pipefail

# command -> Debian package
declare -A need=(
  [grub-editenv]=grub-common
  [fw_printenv]=libubootenv-tool
  [docker-registry]=docker-registry
  [skopeo]=skopeo
  [zstd]=zstd
  [mkfs.ext4]=e2fsprogs
)

missing=()
for cmd in "${!need[@]}"; do
  command -v "$cmd" >/dev/null 2>&1 || PATH="$PATH:/usr/sbin:/sbin" command -v "$cmd" >/dev/null 2>&1 ||
    missing+=("${need[$cmd]}")
done

# Debian's postgresql keeps its server binaries off PATH, one directory per
# major version; the store tests run the newest one found there.
compgen -G '/usr/lib/postgresql/*/bin/postgres' >/dev/null || missing+=(postgresql)

[ ${#missing[@]} -eq 0 ] && exit 0

sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"
echo "installing: ${missing[*]}" >&2
$sudo apt-get update -qq
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
