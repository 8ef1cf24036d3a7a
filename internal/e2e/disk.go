package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
)

// GPT partition types of the test disk.
const (
	// GPTTypeESP is the EFI system partition.
	GPTTypeESP = "C12A7328-F81F-11D2-BA4B-00A0C93EC93B"

	// GPTTypeLinux is a Linux file system.
	GPTTypeLinux = "0FC63DAF-8483-4772-8E79-3D69D8477DE4"
)

// sectorSize is the logical sector size of the disk image.
const sectorSize = 512

// diskAlign is where the first partition starts and what every size is
// rounded to: 1 MiB, as partitioning tools do.
const diskAlign = 1 << 20

// PartitionSpec is one partition to create.
type PartitionSpec struct {
	// Name is the GPT partition name (PARTLABEL).
	Name string

	// Type is the GPT partition type GUID.
	Type string

	// Size is the size in bytes, a multiple of 1 MiB.
	Size int64
}

// Partition is one partition of a disk image.
type Partition struct {
	// Number is the partition number, from 1.
	Number int

	// Name is the GPT partition name.
	Name string

	// Start and Size are in bytes.
	Start, Size int64
}

// Disk is a disk image file with a GPT.
type Disk struct {
	// Path is the image file.
	Path string

	// Partitions are read from the partition table.
	Partitions []Partition
}

// CreateDisk creates a sparse disk image at path with a GPT holding
// parts, in order, written by sfdisk.
func CreateDisk(ctx context.Context, path string, parts []PartitionSpec) (*Disk, error) {
	size := int64(2 * diskAlign) // the GPT and its backup
	var script strings.Builder
	script.WriteString("label: gpt\nunit: sectors\nfirst-lba: 2048\n\n")
	for _, p := range parts {
		if p.Size%diskAlign != 0 {
			return nil, fmt.Errorf("create disk %s: partition %s: size %d is not a multiple of 1 MiB",
				path, p.Name, p.Size)
		}
		size += p.Size
		fmt.Fprintf(&script, "size=%d, type=%s, name=%q\n", p.Size/sectorSize, p.Type, p.Name)
	}
	os.Remove(path)
	if err := createFile(path, size); err != nil {
		return nil, fmt.Errorf("create disk %s: %w", path, err)
	}
	cmd := commandContext(ctx, "sfdisk", "--quiet", "--no-reread", "--no-tell-kernel", path)
	cmd.Stdin = strings.NewReader(script.String())
	if out, err := cmd.CombinedOutput(); err != nil {
		return nil, fmt.Errorf("create disk %s: sfdisk: %w: %s", path, err, out)
	}
	return OpenDisk(ctx, path)
}

// OpenDisk reads the partition table of the disk image at path with
// sfdisk --json.
func OpenDisk(ctx context.Context, path string) (*Disk, error) {
	out, err := output(ctx, "sfdisk", "--json", path)
	if err != nil {
		return nil, err
	}
	var table struct {
		PartitionTable struct {
			SectorSize int64 `json:"sectorsize"`
			Partitions []struct {
				Node  string `json:"node"`
				Start int64  `json:"start"`
				Size  int64  `json:"size"`
				Name  string `json:"name"`
			} `json:"partitions"`
		} `json:"partitiontable"`
	}
	if err := json.Unmarshal(out, &table); err != nil {
		return nil, fmt.Errorf("read partition table of %s: %w", path, err)
	}
	ss := table.PartitionTable.SectorSize
	if ss == 0 {
		ss = sectorSize
	}
	d := &Disk{Path: path}
	for i, p := range table.PartitionTable.Partitions {
		d.Partitions = append(d.Partitions, Partition{Number: i + 1, Name: p.Name,
			Start: p.Start * ss, Size: p.Size * ss})
	}
	return d, nil
}

// Partition returns partition n.
func (d *Disk) Partition(n int) (Partition, error) {
	for _, p := range d.Partitions {
		if p.Number == n {
			return p, nil
		}
	}
	return Partition{}, fmt.Errorf("disk %s has no partition %d", d.Path, n)
}

// WritePartition writes the image file img into partition n, leaving
// holes where img has blocks of zeros (the partition is zero there on a
// new disk). img must fit.
func (d *Disk) WritePartition(n int, img string) error {
	p, err := d.Partition(n)
	if err != nil {
		return err
	}
	src, err := os.Open(img)
	if err != nil {
		return fmt.Errorf("write partition %d of %s: %w", n, d.Path, err)
	}
	defer src.Close()
	fi, err := src.Stat()
	if err != nil {
		return fmt.Errorf("write partition %d of %s: %w", n, d.Path, err)
	}
	if fi.Size() > p.Size {
		return fmt.Errorf("write partition %d of %s: image %s has %d bytes, partition %d",
			n, d.Path, img, fi.Size(), p.Size)
	}
	dst, err := os.OpenFile(d.Path, os.O_WRONLY, 0)
	if err != nil {
		return fmt.Errorf("write partition %d of %s: %w", n, d.Path, err)
	}
	if err := copySparse(dst, p.Start, src, fi.Size()); err != nil {
		dst.Close()
		return fmt.Errorf("write partition %d of %s: %w", n, d.Path, err)
	}
	return dst.Close()
}

// ExtractPartition copies partition n into a new sparse file at out.
func (d *Disk) ExtractPartition(n int, out string) error {
	p, err := d.Partition(n)
	if err != nil {
		return err
	}
	src, err := os.Open(d.Path)
	if err != nil {
		return fmt.Errorf("extract partition %d of %s: %w", n, d.Path, err)
	}
	defer src.Close()
	if err := createFile(out, p.Size); err != nil {
		return fmt.Errorf("extract partition %d of %s: %w", n, d.Path, err)
	}
	dst, err := os.OpenFile(out, os.O_WRONLY, 0)
	if err != nil {
		return fmt.Errorf("extract partition %d of %s: %w", n, d.Path, err)
	}
	if err := copySparse(dst, 0, io.NewSectionReader(src, p.Start, p.Size), p.Size); err != nil {
		dst.Close()
		return fmt.Errorf("extract partition %d of %s: %w", n, d.Path, err)
	}
	return dst.Close()
}

// Copy copies the disk image to path: a reflink where the file system
// has them, else a sparse copy of the blocks that hold data.
func (d *Disk) Copy(path string) (*Disk, error) {
	if err := cloneFile(path, d.Path); err != nil {
		return nil, fmt.Errorf("copy disk %s to %s: %w", d.Path, path, err)
	}
	return &Disk{Path: path, Partitions: append([]Partition(nil), d.Partitions...)}, nil
}

// ReadESPFile returns a file of the FAT EFI system partition, such as
// "EFI/BOOT/grubenv", read with mcopy straight from the disk image.
func (d *Disk) ReadESPFile(ctx context.Context, name string) ([]byte, error) {
	p, err := d.Partition(PartESP)
	if err != nil {
		return nil, err
	}
	img := fmt.Sprintf("%s@@%d", d.Path, p.Start)
	return output(ctx, "mcopy", "-n", "-i", img, "::/"+name, "-")
}

// ReadDataFile returns a file of the ext4 data partition. It extracts the
// partition into dir, replays its journal with e2fsck (the guest may have
// lost power with changes only in the journal) and reads the file with
// debugfs; all userspace, nothing is mounted. A file that does not exist
// gives an error wrapping os.ErrNotExist.
func (d *Disk) ReadDataFile(ctx context.Context, dir, name string) ([]byte, error) {
	img := filepath.Join(dir, "data-partition.img")
	defer os.Remove(img)
	if err := d.ExtractPartition(PartData, img); err != nil {
		return nil, err
	}
	if err := FsckExt4(ctx, img); err != nil {
		return nil, err
	}
	return DebugfsCat(ctx, img, name)
}

// FsckExt4 checks the ext4 image img with e2fsck, replaying its journal
// and repairing what it may. Exit statuses 0 and 1 (errors corrected)
// pass; anything else means the file system was left damaged.
func FsckExt4(ctx context.Context, img string) error {
	cmd := commandContext(ctx, "e2fsck", "-f", "-y", img)
	out, err := cmd.CombinedOutput()
	var ee interface{ ExitCode() int }
	if errors.As(err, &ee) && ee.ExitCode() == 1 {
		return nil
	}
	if err != nil {
		return fmt.Errorf("e2fsck %s: %w: %s", img, err, out)
	}
	return nil
}

// DebugfsCat returns the content of the file name (a path from the file
// system's root) of the ext4 image img, read with debugfs.
func DebugfsCat(ctx context.Context, img, name string) ([]byte, error) {
	cmd := commandContext(ctx, "debugfs", "-R", "cat /"+strings.TrimPrefix(name, "/"), img)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return nil, fmt.Errorf("debugfs cat %s in %s: %w: %s", name, img, err, stderr.Bytes())
	}
	// debugfs reports a missing file on stderr and still exits 0.
	if strings.Contains(stderr.String(), "File not found") {
		return nil, fmt.Errorf("debugfs cat %s in %s: %w", name, img, os.ErrNotExist)
	}
	return stdout.Bytes(), nil
}

// sparseBlock is the unit copySparse tests for zeros.
const sparseBlock = 64 << 10

// copySparse copies n bytes of src to dst at offset off, skipping blocks
// of zeros, which dst, a new sparse file, already reads as zeros.
func copySparse(dst io.WriterAt, off int64, src io.Reader, n int64) error {
	buf := make([]byte, sparseBlock)
	zero := make([]byte, sparseBlock)
	for done := int64(0); done < n; {
		k, err := io.ReadFull(src, buf[:min(int64(len(buf)), n-done)])
		if k > 0 && !bytes.Equal(buf[:k], zero[:k]) {
			if _, werr := dst.WriteAt(buf[:k], off+done); werr != nil {
				return werr
			}
		}
		done += int64(k)
		if err != nil {
			if done == n && (err == io.EOF || err == io.ErrUnexpectedEOF) {
				return nil
			}
			return err
		}
	}
	return nil
}
