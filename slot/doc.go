// Package slot manages the slots of one device and the boot loader that
// chooses between them.
//
// A System is the device as described by its configuration (see Config):
// a set of Slots, each a partition or a regular file holding one copy of
// an image class such as rootfs or boot. Slots of different classes are
// grouped by Parent, so a boot slot follows its rootfs slot. The running
// system was booted from one group; the others are passive and take the
// next update.
//
// The boot loader is reached through the small Bootloader interface; the
// backends (GRUB, U-Boot, systemd-boot, EFI, a custom program, a state
// file) live in this package and are chosen by NewBootloader.
//
// One rule holds throughout: the booted slot is never written, and a slot
// is activated only after every byte written to it has been verified. An
// install therefore marks its target bad before the first write
// (BeginInstall), writes and verifies it (WriteImage), records the result
// (CommitInstall), and only then makes it active (MarkActive).
package slot
