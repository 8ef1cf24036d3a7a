package slot

import (
	"errors"
	"os"

	"golang.org/x/sys/unix"
)

// efivarfsMagic is efivarfs's file system type as statfs reports it.
const efivarfsMagic = 0xde5e81e4

// fsImmutableFlag is FS_IMMUTABLE_FL from linux/fs.h.
const fsImmutableFlag = 0x10

// onEFIVarFS reports whether dir is on efivarfs.
func onEFIVarFS(dir string) bool {
	var st unix.Statfs_t
	if err := unix.Statfs(dir, &st); err != nil {
		return false
	}
	return uint32(st.Type) == efivarfsMagic
}

// efiClearImmutable clears the immutable flag efivarfs sets on variables.
// A missing file, or a file system without inode flags, is left alone.
func efiClearImmutable(path string) error {
	f, err := os.Open(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	defer f.Close()

	flags, err := unix.IoctlGetUint32(int(f.Fd()), unix.FS_IOC_GETFLAGS)
	if err != nil {
		if unsupportedFlags(err) {
			return nil
		}
		return err
	}
	if flags&fsImmutableFlag == 0 {
		return nil
	}
	err = unix.IoctlSetPointerInt(int(f.Fd()), unix.FS_IOC_SETFLAGS, int(flags&^fsImmutableFlag))
	if err != nil && !unsupportedFlags(err) {
		return err
	}
	return nil
}

// unsupportedFlags reports whether err says the file system has no inode
// flags (tmpfs answers ENOTTY).
func unsupportedFlags(err error) bool {
	return errors.Is(err, unix.ENOTTY) || errors.Is(err, unix.EOPNOTSUPP) ||
		errors.Is(err, unix.EINVAL) || errors.Is(err, unix.ENOSYS)
}
