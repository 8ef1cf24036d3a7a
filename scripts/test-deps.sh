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
  [chromium]=chromium
  # The boot tests of internal/e2e (make e2e).
  [debugfs]=e2fsprogs
  [qemu-system-x86_64]=qemu-system-x86
  [grub-mkstandalone]=grub-common
  [mcopy]=mtools
  [mkfs.vfat]=dosfstools
  [sfdisk]=fdisk
  [busybox]=busybox-static
)

# file -> Debian package, for packages that bring no command (internal/e2e).
declare -A need_file=(
  [/usr/share/OVMF/OVMF_CODE_4M.fd]=ovmf
  [/usr/lib/grub/x86_64-efi/moddep.lst]=grub-efi-amd64-bin
)

missing=()
for cmd in "${!need[@]}"; do
  command -v "$cmd" >/dev/null 2>&1 || PATH="$PATH:/usr/sbin:/sbin" command -v "$cmd" >/dev/null 2>&1 ||
    missing+=("${need[$cmd]}")
done

for f in "${!need_file[@]}"; do
  [ -e "$f" ] || missing+=("${need_file[$f]}")
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
