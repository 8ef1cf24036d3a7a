package slot

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"os"
	"path/filepath"
	"strings"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Defaults of WriteImage.
const (
	// DefaultWriteBufferSize is the size of the one buffer an image is
	// streamed through, so memory use does not grow with the image.
	DefaultWriteBufferSize = 1 << 20

	// DefaultSyncInterval is how many bytes WriteImage writes through the
	// page cache between flushes to the device, bounding dirty memory and
	// the data a power cut can lose.
	DefaultSyncInterval = 32 << 20

	// directAlign is the buffer and length alignment used for O_DIRECT
	// writes; it covers logical block sizes of 512 and 4096 bytes.
	directAlign = 4096
)

// Errors of WriteImage.
var (
	// ErrBootedSlot is returned when asked to write a slot of the booted
	// slot's group, or a slot that cannot be shown not to be booted.
	ErrBootedSlot = errors.New("slot: slot is booted")

	// ErrMounted is returned when the slot's device is mounted or held
	// open exclusively by someone else.
	ErrMounted = errors.New("slot: slot is mounted or in use")

	// ErrTooLarge is returned, before anything is written, when the image
	// is larger than the slot.
	ErrTooLarge = errors.New("slot: image larger than slot")

	// ErrImageSize is returned when the reader holds fewer or more bytes
	// than the size WriteImage was given.
	ErrImageSize = errors.New("slot: image size differs from its declared size")

	// ErrDigestMismatch is returned when the written bytes, or the bytes
	// read back from the slot, do not have the expected sha256.
	ErrDigestMismatch = errors.New("slot: image sha256 mismatch")
)

// WriteOptions tunes WriteImage. The zero value streams the image without
// checking its digest and without reading it back.
type WriteOptions struct {
	// SHA256 is the image's expected sha256, in hex, optionally prefixed
	// "sha256:". Empty means the streamed bytes are not checked.
	SHA256 string

	// Verify reads the slot back after the final flush and compares the
	// sha256 of the image's extent with SHA256 (or, when SHA256 is empty,
	// with the sha256 of the bytes that were streamed in).
	Verify bool

	// Progress, if not nil, is called after each buffer with the number
	// of bytes written so far.
	Progress func(written int64)

	// SyncInterval is the number of bytes between flushes to the device.
	// Zero means DefaultSyncInterval.
	SyncInterval int64

	// Offset resumes an interrupted write: the first Offset bytes of the
	// image are already in the slot, durably, and r yields the image from
	// byte Offset on. Size stays the whole image's size. With an offset
	// the streamed bytes cannot be checked against SHA256; Verify, which
	// reads the whole image back, still can. Zero means a full write.
	Offset int64

	// StreamVerified says that r checks the image against SHA256 itself
	// and fails rather than end a wrong image, as a bundle.ImageReader
	// does, so the writer does not hash the stream a second time. It
	// requires SHA256.
	StreamVerified bool

	// Synced, if not nil, is called after each flush to the device with
	// the number of image bytes (counted from the image's start) that are
	// now durable. Installers record resume points there.
	Synced func(durable int64)

	// beforeVerify, if set, runs between the write and the read-back; the
	// tests use it to corrupt the slot.
	beforeVerify func(path string)
}

// WriteResult describes a completed write.
type WriteResult struct {
	// Size is the number of bytes written.
	Size int64

	// SHA256 is the sha256 of the written bytes, in hex.
	SHA256 string

	// Verified is true when the slot was read back and matched.
	Verified bool
}

// WriteImage streams size bytes from r into slot s and flushes them to
// the device. It refuses, before writing anything, a slot of the booted
// group (ErrBootedSlot), a mounted slot (ErrMounted), and an image larger
// than the slot (ErrTooLarge). Slots are written with O_DIRECT where the
// device or file system allows it, otherwise through the page cache; in
// both cases the slot is flushed every SyncInterval bytes and at the end.
// A regular-file slot is written in place; when it has no
// configured size it is then cut to the image's size, so that reading it
// yields exactly the image. Call BeginInstall first: a failed or cut
// write leaves the slot's content undefined.
func (sys *System) WriteImage(ctx context.Context, s *Slot, r io.Reader, size int64,
	opts WriteOptions) (WriteResult, error) {
	res, err := sys.writeImage(ctx, s, r, size, opts)
	if err != nil {
		return WriteResult{}, fmt.Errorf("write slot %s: %w", s.Name(), err)
	}
	return res, nil
}

func (sys *System) writeImage(ctx context.Context, s *Slot, r io.Reader, size int64,
	opts WriteOptions) (WriteResult, error) {
	if size < 0 {
		return WriteResult{}, fmt.Errorf("negative image size %d", size)
	}
	want, err := parseSHA256(opts.SHA256)
	if err != nil {
		return WriteResult{}, err
	}
	if err := sys.checkWritable(ctx, s); err != nil {
		return WriteResult{}, err
	}

	path, fi, err := sys.slotDevice(s)
	if err != nil {
		return WriteResult{}, err
	}
	if err := sys.checkMounted(path, fi); err != nil {
		return WriteResult{}, err
	}
	block := fi.Mode()&os.ModeDevice != 0

	f, direct, err := openSlotDevice(path, block)
	if err != nil {
		return WriteResult{}, err
	}
	defer f.Close()

	capacity, err := slotCapacity(f, s, block)
	if err != nil {
		return WriteResult{}, err
	}
	if capacity >= 0 && size > capacity {
		return WriteResult{}, fmt.Errorf("%w: image has %d bytes, slot %d",
			ErrTooLarge, size, capacity)
	}

	if opts.Offset < 0 || opts.Offset > size || opts.Offset%directAlign != 0 {
		return WriteResult{}, fmt.Errorf("resume offset %d: want a multiple of %d within the image",
			opts.Offset, directAlign)
	}
	if opts.Offset > 0 {
		if _, err := f.Seek(opts.Offset, io.SeekStart); err != nil {
			return WriteResult{}, fmt.Errorf("seek %s: %w", path, err)
		}
	}
	if opts.StreamVerified && want == "" {
		return WriteResult{}, errors.New("a verified stream needs the expected sha256")
	}
	w := &imageWriter{f: f, direct: direct, sync: opts.SyncInterval, progress: opts.Progress,
		synced: opts.Synced, written: opts.Offset, nohash: opts.StreamVerified}
	if w.sync <= 0 {
		w.sync = DefaultSyncInterval
	}
	sum, err := w.copy(ctx, r, size)
	if err != nil {
		return WriteResult{}, err
	}
	if !block && s.size == 0 {
		if err := f.Truncate(size); err != nil {
			return WriteResult{}, fmt.Errorf("truncate %s: %w", path, err)
		}
	}
	if err := f.Sync(); err != nil {
		return WriteResult{}, fmt.Errorf("sync %s: %w", path, err)
	}
	if err := f.Close(); err != nil {
		return WriteResult{}, fmt.Errorf("close %s: %w", path, err)
	}
	if opts.Synced != nil {
		opts.Synced(size)
	}

	res := WriteResult{Size: size, SHA256: hex.EncodeToString(sum)}
	if opts.Offset > 0 || opts.StreamVerified {
		// Only the tail was streamed; the image's digest is the expected
		// one, confirmed below when Verify reads the whole slot back.
		res.SHA256 = want
	}
	if want != "" && want != res.SHA256 {
		return WriteResult{}, fmt.Errorf("%w: streamed %s, want %s",
			ErrDigestMismatch, res.SHA256, want)
	}
	if !opts.Verify {
		return res, nil
	}

	if opts.beforeVerify != nil {
		opts.beforeVerify(path)
	}
	got, err := readBack(path, size)
	if err != nil {
		return WriteResult{}, err
	}
	if got != res.SHA256 {
		return WriteResult{}, fmt.Errorf("%w: read back %s, wrote %s",
			ErrDigestMismatch, got, res.SHA256)
	}
	res.Verified = true
	sys.log.Debug("slot written", "slot", s.name, "bytes", size, "direct", direct)
	return res, nil
}

// parseSHA256 checks an expected digest and returns it as lowercase hex.
func parseSHA256(s string) (string, error) {
	if s == "" {
		return "", nil
	}
	h := strings.ToLower(strings.TrimPrefix(s, "sha256:"))
	if b, err := hex.DecodeString(h); err != nil || len(b) != sha256.Size {
		return "", fmt.Errorf("bad expected sha256 %q", s)
	}
	return h, nil
}

// checkWritable fails unless s is known not to belong to the booted group,
// by name and by device.
func (sys *System) checkWritable(ctx context.Context, s *Slot) error {
	if err := sys.check(s); err != nil {
		return err
	}
	booted, err := sys.Booted(ctx)
	if err != nil {
		return fmt.Errorf("%w: %w", ErrBootedSlot, err)
	}
	if s.Root() == booted.Root() {
		return fmt.Errorf("%w: %s belongs to the running system", ErrBootedSlot, s.name)
	}

	// Two configured names for one device would defeat the check above.
	dev, err := resolveDevice(sys.devRoot, s.device)
	if err != nil {
		return nil // slotDevice reports the missing device
	}
	for _, b := range sys.group(booted.Root()) {
		if bdev, err := resolveDevice(sys.devRoot, b.device); err == nil && bdev == dev {
			return fmt.Errorf("%w: %s is the device of booted slot %s",
				ErrBootedSlot, dev, b.name)
		}
	}
	return nil
}

// slotDevice resolves s's device and checks that it is a block device or
// a regular file.
func (sys *System) slotDevice(s *Slot) (string, os.FileInfo, error) {
	path, err := resolveDevice(sys.devRoot, s.device)
	if err != nil {
		return "", nil, err
	}
	fi, err := os.Stat(path)
	if err != nil {
		return "", nil, err
	}
	isBlock := fi.Mode()&os.ModeDevice != 0 && fi.Mode()&os.ModeCharDevice == 0
	if !isBlock && !fi.Mode().IsRegular() {
		return "", nil, fmt.Errorf("device %s is neither a block device nor a regular file", path)
	}
	return path, fi, nil
}

// checkMounted fails when path, or the block device it is, appears in the
// mounts table.
func (sys *System) checkMounted(path string, fi os.FileInfo) error {
	f, err := os.Open(sys.mountinfo)
	if err != nil {
		return fmt.Errorf("read mounts: %w", err)
	}
	defer f.Close()
	mounts, err := parseMountinfo(io.LimitReader(f, maxProcFileSize))
	if err != nil {
		return fmt.Errorf("read mounts %s: %w", sys.mountinfo, err)
	}

	var rdev uint64
	if st, ok := fi.Sys().(*unix.Stat_t); ok && fi.Mode()&os.ModeDevice != 0 {
		rdev = uint64(st.Rdev)
	}
	for _, m := range mounts {
		if rdev != 0 && unix.Major(rdev) == m.major && unix.Minor(rdev) == m.minor {
			return fmt.Errorf("%w: %s is mounted on %s", ErrMounted, path, m.point)
		}
		if !filepath.IsAbs(m.source) {
			continue
		}
		if src, err := filepath.EvalSymlinks(m.source); err == nil && src == path {
			return fmt.Errorf("%w: %s is mounted on %s", ErrMounted, path, m.point)
		}
	}
	return nil
}

// openSlotDevice opens path for writing without truncating it, with
// O_DIRECT when the file system or driver accepts it. A block device is
// opened exclusively, which the kernel refuses while it is mounted.
func openSlotDevice(path string, block bool) (*os.File, bool, error) {
	flags := os.O_WRONLY | unix.O_CLOEXEC
	if block {
		flags |= unix.O_EXCL
	}
	f, err := os.OpenFile(path, flags|unix.O_DIRECT, 0)
	if err == nil {
		return f, true, nil
	}
	if !errors.Is(err, unix.EINVAL) {
		return nil, false, openError(path, err)
	}
	f, err = os.OpenFile(path, flags, 0)
	if err != nil {
		return nil, false, openError(path, err)
	}
	return f, false, nil
}

func openError(path string, err error) error {
	if errors.Is(err, unix.EBUSY) {
		return fmt.Errorf("%w: open %s: %w", ErrMounted, path, err)
	}
	return err
}

// slotCapacity returns how many bytes s can take; -1 means no limit.
func slotCapacity(f *os.File, s *Slot, block bool) (int64, error) {
	if !block {
		if s.size > 0 {
			return s.size, nil
		}
		return -1, nil
	}
	n, err := unix.IoctlGetUint64(int(f.Fd()), unix.BLKGETSIZE64)
	capacity := int64(n)
	if err != nil {
		end, serr := f.Seek(0, io.SeekEnd)
		if serr != nil {
			return 0, fmt.Errorf("size of %s: %w", f.Name(), err)
		}
		if _, serr := f.Seek(0, io.SeekStart); serr != nil {
			return 0, fmt.Errorf("size of %s: %w", f.Name(), serr)
		}
		capacity = end
	}
	if s.size > 0 && s.size < capacity {
		capacity = s.size
	}
	return capacity, nil
}

// imageWriter streams an image into an open slot device.
type imageWriter struct {
	f        *os.File
	direct   bool
	sync     int64
	progress func(int64)
	synced   func(int64)
	nohash   bool // the reader verifies the image itself

	written  int64
	unsynced int64
}

// copy writes exactly size bytes of r and returns their sha256.
func (w *imageWriter) copy(ctx context.Context, r io.Reader, size int64) ([]byte, error) {
	buf := alignedBuffer(DefaultWriteBufferSize)
	h := sha256.New()
	for w.written < size {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		chunk := buf[:min(int64(len(buf)), size-w.written)]
		n, err := io.ReadFull(r, chunk)
		if errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF) {
			return nil, fmt.Errorf("%w: image ended after %d of %d bytes",
				ErrImageSize, w.written+int64(n), size)
		}
		if err != nil {
			return nil, fmt.Errorf("read image: %w", err)
		}
		if !w.nohash {
			h.Write(chunk)
		}
		if err := w.write(chunk); err != nil {
			return nil, err
		}
		if w.progress != nil {
			w.progress(w.written)
		}
	}
	if err := expectEOF(r, size); err != nil {
		return nil, err
	}
	return h.Sum(nil), nil
}

// write writes one chunk at the current offset. O_DIRECT needs aligned
// lengths, so an unaligned tail (or a device that rejects direct I/O
// after all) switches the file to buffered writes.
func (w *imageWriter) write(chunk []byte) error {
	if w.direct && len(chunk)%directAlign != 0 {
		if err := w.buffered(); err != nil {
			return err
		}
	}
	n, err := w.f.Write(chunk)
	if err != nil && w.direct && errors.Is(err, unix.EINVAL) && n == 0 {
		if err := w.buffered(); err != nil {
			return err
		}
		n, err = w.f.Write(chunk)
	}
	w.written += int64(n)
	if err != nil {
		return fmt.Errorf("write %s at %d: %w", w.f.Name(), w.written, err)
	}

	// Direct writes skip the page cache, but the device may still cache
	// them: flush in both modes, so that Synced means durable.
	w.unsynced += int64(n)
	if w.unsynced >= w.sync {
		if err := unix.Fdatasync(int(w.f.Fd())); err != nil {
			return fmt.Errorf("sync %s: %w", w.f.Name(), err)
		}
		w.unsynced = 0
		if w.synced != nil {
			w.synced(w.written)
		}
	}
	return nil
}

// buffered turns O_DIRECT off for the rest of the write.
func (w *imageWriter) buffered() error {
	fd := int(w.f.Fd())
	flags, err := unix.FcntlInt(uintptr(fd), unix.F_GETFL, 0)
	if err == nil {
		_, err = unix.FcntlInt(uintptr(fd), unix.F_SETFL, flags&^unix.O_DIRECT)
	}
	if err != nil {
		return fmt.Errorf("leave direct I/O on %s: %w", w.f.Name(), err)
	}
	w.direct = false
	return nil
}

// expectEOF fails when r has more than the declared size.
func expectEOF(r io.Reader, size int64) error {
	var one [1]byte
	for {
		n, err := r.Read(one[:])
		if n > 0 {
			return fmt.Errorf("%w: image is longer than %d bytes", ErrImageSize, size)
		}
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("read image: %w", err)
		}
	}
}

// readBack returns the sha256, in hex, of the first size bytes of path,
// read past the page cache where the device allows it, so the check sees
// what the device holds rather than what was just written to memory.
func readBack(path string, size int64) (string, error) {
	f, err := os.OpenFile(path, os.O_RDONLY|unix.O_CLOEXEC|unix.O_DIRECT, 0)
	direct := err == nil
	if errors.Is(err, unix.EINVAL) {
		f, err = os.OpenFile(path, os.O_RDONLY|unix.O_CLOEXEC, 0)
	}
	if err != nil {
		return "", fmt.Errorf("verify: %w", err)
	}
	defer f.Close()
	if !direct {
		// Best effort: drop cached pages so they are read from the device.
		_ = unix.Fadvise(int(f.Fd()), 0, size, unix.FADV_DONTNEED)
	}

	h := sha256.New()
	err = hashPrefix(h, f, size, direct)
	if direct && errors.Is(err, unix.EINVAL) {
		// Some file systems accept O_DIRECT at open but not on read.
		f.Close()
		return readBackBuffered(path, size)
	}
	if err != nil {
		return "", fmt.Errorf("verify %s: %w", path, err)
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

func readBackBuffered(path string, size int64) (string, error) {
	f, err := os.OpenFile(path, os.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return "", fmt.Errorf("verify: %w", err)
	}
	defer f.Close()
	_ = unix.Fadvise(int(f.Fd()), 0, size, unix.FADV_DONTNEED)
	h := sha256.New()
	if err := hashPrefix(h, f, size, false); err != nil {
		return "", fmt.Errorf("verify %s: %w", path, err)
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

// hashPrefix hashes the first size bytes of f. Direct reads use whole
// aligned buffers and hash only the part inside the image.
func hashPrefix(h hash.Hash, f *os.File, size int64, direct bool) error {
	buf := alignedBuffer(DefaultWriteBufferSize)
	var done int64
	for done < size {
		want := buf[:min(int64(len(buf)), size-done)]
		if direct {
			want = buf[:alignUp(len(want))]
		}
		n, err := io.ReadFull(f, want)
		if int64(n) > size-done {
			n = int(size - done)
		}
		if n == 0 && err != nil {
			return fmt.Errorf("slot ended after %d of %d bytes: %w", done, size, err)
		}
		h.Write(buf[:n])
		done += int64(n)
		if err != nil && done < size {
			if errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF) {
				return fmt.Errorf("slot ended after %d of %d bytes", done, size)
			}
			return err
		}
	}
	return nil
}

func alignUp(n int) int {
	return (n + directAlign - 1) / directAlign * directAlign
}

// alignedBuffer returns a buffer of n bytes whose start is aligned for
// O_DIRECT.
func alignedBuffer(n int) []byte {
	raw := make([]byte, n+directAlign)
	off := 0
	if rem := int(uintptr(unsafe.Pointer(&raw[0])) % directAlign); rem != 0 {
		off = directAlign - rem
	}
	return raw[off : off+n : off+n]
}

// Capacity returns how many bytes slot s can take, or -1 when it has no
// limit (a regular-file slot without a configured size). Installers call
// it for every image of a bundle before writing any, so that an image too
// large for its slot is refused before a slot is touched.
func (sys *System) Capacity(s *Slot) (int64, error) {
	if err := sys.check(s); err != nil {
		return 0, fmt.Errorf("capacity of slot %s: %w", s.Name(), err)
	}
	path, fi, err := sys.slotDevice(s)
	if err != nil {
		return 0, fmt.Errorf("capacity of slot %s: %w", s.name, err)
	}
	block := fi.Mode()&os.ModeDevice != 0
	if !block {
		return slotCapacity(nil, s, false)
	}
	f, err := os.Open(path)
	if err != nil {
		return 0, fmt.Errorf("capacity of slot %s: %w", s.name, err)
	}
	defer f.Close()
	n, err := slotCapacity(f, s, true)
	if err != nil {
		return 0, fmt.Errorf("capacity of slot %s: %w", s.name, err)
	}
	return n, nil
}
