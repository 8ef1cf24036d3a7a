//go:build !linux

package slot

// onEFIVarFS reports false: efivarfs exists only on Linux.
func onEFIVarFS(string) bool { return false }

// efiClearImmutable does nothing where there is no efivarfs.
func efiClearImmutable(string) error { return nil }
