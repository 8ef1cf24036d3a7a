// Package rota is the ROTA software development kit for over-the-air
// updates of Linux device fleets.
//
// A device keeps two copies of its operating system, slots A and B. It runs
// one, writes an update into the other, boots it once, and keeps it only if
// the new system proves healthy; otherwise the boot loader falls back.
// The SDK is a set of packages that firmware teams import piece by piece:
//
//   - [github.com/rotaupdate/rota/bundle] is the update format: a .rota
//     bundle is a signed OCI artifact holding zstd-compressed slot images.
//     It builds, signs, verifies, streams, pushes and pulls bundles.
//   - [github.com/rotaupdate/rota/slot] knows the device: its slots, which
//     one is booted, and how to ask the boot loader (GRUB, U-Boot,
//     systemd-boot, EFI, a custom program, or a simulated one) to try a
//     slot once and to keep it.
//   - [github.com/rotaupdate/rota/poll] talks to the server: admission,
//     checks, resumable downloads, reports and inventory.
//   - This package ties them together: [Install] writes a verified bundle
//     into the passive slots, and [Agent] is the update agent, a state
//     machine journaled in the data directory that polls, installs,
//     reboots once, verifies the new system and commits or rolls back.
//
// A typical install reads a bundle with [bundle.Open], checks it with
// [bundle.Bundle.Verify], streams each image with
// [bundle.Bundle.NextImage] into the passive slot found by
// [slot.System.Passive], and marks that slot active only after the image
// reader returned io.EOF, which it does only when every digest matched.
//
// An agent survives being killed at any instant: each state is persisted
// before it is acted on, installs resume at the last durable frame
// boundary ([bundle.Checkpoint]), and reports carry IDs that make repeats
// count once.
//
// The reference programs under cmd/ are built from these packages: rota
// (keys, bundles, slots and standalone installs) and rota-client (the
// device daemon).
package rota
