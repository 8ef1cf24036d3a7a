package e2e

import (
	"bufio"
	"fmt"
	"io"
	"io/fs"
	"strings"
)

// cpioEntry is one member of an initramfs archive.
type cpioEntry struct {
	// Name is the path inside the archive, without a leading slash.
	Name string

	// Mode holds the file type and permission bits, as in fs.FileMode.
	Mode fs.FileMode

	// Data is the content of a regular file or the target of a symlink.
	Data []byte

	// Major and Minor number a character or block device.
	Major, Minor uint32
}

// cpioTrailer is the name of the member that ends a newc archive.
const cpioTrailer = "TRAILER!!!"

// writeCPIO writes entries as a cpio archive in the "newc" format the
// kernel unpacks into its initial root file system. Every member belongs
// to root, so the archive is the same whoever builds it.
func writeCPIO(w io.Writer, entries []cpioEntry) error {
	bw := bufio.NewWriter(w)
	for i, e := range entries {
		name := strings.TrimPrefix(e.Name, "/")
		if name == "" || name == cpioTrailer {
			return fmt.Errorf("write cpio member %q: reserved name", e.Name)
		}
		mode, err := cpioMode(e.Mode)
		if err != nil {
			return fmt.Errorf("write cpio member %s: %w", name, err)
		}
		if err := writeCPIOMember(bw, uint32(i+1), name, mode, e); err != nil {
			return err
		}
	}
	if err := writeCPIOMember(bw, 0, cpioTrailer, 0, cpioEntry{}); err != nil {
		return err
	}
	if err := bw.Flush(); err != nil {
		return fmt.Errorf("write cpio: %w", err)
	}
	return nil
}

// cpioMode turns an fs.FileMode into the st_mode bits cpio stores.
func cpioMode(m fs.FileMode) (uint32, error) {
	perm := uint32(m.Perm())
	switch m.Type() {
	case 0:
		return 0o100000 | perm, nil
	case fs.ModeDir:
		return 0o040000 | perm, nil
	case fs.ModeSymlink:
		return 0o120000 | perm, nil
	case fs.ModeDevice | fs.ModeCharDevice:
		return 0o020000 | perm, nil
	case fs.ModeDevice:
		return 0o060000 | perm, nil
	}
	return 0, fmt.Errorf("unsupported file type %v", m.Type())
}

// writeCPIOMember writes one newc header, the name and the data, each
// padded to four bytes.
func writeCPIOMember(w *bufio.Writer, ino uint32, name string, mode uint32, e cpioEntry) error {
	nlink := uint32(1)
	if mode&0o170000 == 0o040000 {
		nlink = 2
	}
	fields := []uint32{
		ino, mode, 0, 0, nlink, 0, // ino, mode, uid, gid, nlink, mtime
		uint32(len(e.Data)),
		0, 0, // dev major, minor
		e.Major, e.Minor,
		uint32(len(name) + 1),
		0, // check
	}
	if _, err := io.WriteString(w, "070701"); err != nil {
		return fmt.Errorf("write cpio member %s: %w", name, err)
	}
	for _, f := range fields {
		if _, err := fmt.Fprintf(w, "%08x", f); err != nil {
			return fmt.Errorf("write cpio member %s: %w", name, err)
		}
	}
	// The header is 110 bytes; the name and its NUL are padded so that the
	// data starts at a multiple of four.
	if _, err := io.WriteString(w, name+"\x00"+pad4(110+len(name)+1)); err != nil {
		return fmt.Errorf("write cpio member %s: %w", name, err)
	}
	if _, err := w.Write(e.Data); err != nil {
		return fmt.Errorf("write cpio member %s: %w", name, err)
	}
	if _, err := io.WriteString(w, pad4(len(e.Data))); err != nil {
		return fmt.Errorf("write cpio member %s: %w", name, err)
	}
	return nil
}

// pad4 returns the NUL bytes that bring n up to a multiple of four.
func pad4(n int) string {
	return strings.Repeat("\x00", (4-n%4)%4)
}
