// Package e2e tests ROTA end to end on a real boot chain: an emulated
// x86_64 machine (QEMU with TCG) boots OVMF, GRUB runs the boot-once script
// of docs/bootloaders/grub.cfg, and a Debian kernel starts one of two root
// file systems, in which rota-client updates the machine from a real
// rota-server on the host.
//
// Builder makes the disk image with userspace tools only (sfdisk,
// mkfs.vfat and mtools, mkfs.ext4 -d, grub-mkstandalone, grub-editenv):
// no mounts, loop devices or root privileges. VM runs and watches a
// machine, and Proxy stands between the machine and the server so that a
// test can hold a download or a report and cut the power right there.
//
// The tests run only when ROTA_E2E=1 (make e2e, and make test after the
// unit tests); see docs/e2e.md.
package e2e
