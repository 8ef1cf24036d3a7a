package bundle

import (
	"archive/tar"
	"context"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"syscall"
)

// writeTree writes the directory tree at root to w as a tar archive with
// entries in lexical order, so equal trees give equal archives. Owners,
// modes, times, symlinks, hard links and device nodes are kept.
func writeTree(ctx context.Context, w io.Writer, root string) error {
	tw := tar.NewWriter(w)
	links := map[[2]uint64]string{} // (dev, inode) -> first name
	err := walkSorted(root, ".", func(rel string, fi fs.FileInfo) error {
		if err := ctx.Err(); err != nil {
			return err
		}
		full := filepath.Join(root, rel)
		var target string
		if fi.Mode()&fs.ModeSymlink != 0 {
			t, err := os.Readlink(full)
			if err != nil {
				return err
			}
			target = t
		}
		hdr, err := tar.FileInfoHeader(fi, target)
		if err != nil {
			return fmt.Errorf("tar header for %s: %w", rel, err)
		}
		hdr.Name = filepath.ToSlash(rel)
		if fi.IsDir() {
			hdr.Name += "/"
		}
		hdr.Uname, hdr.Gname = "", ""
		hdr.AccessTime, hdr.ChangeTime = fi.ModTime(), fi.ModTime()
		hdr.Format = tar.FormatPAX
		if st, ok := fi.Sys().(*syscall.Stat_t); ok && fi.Mode().IsRegular() && st.Nlink > 1 {
			key := [2]uint64{uint64(st.Dev), st.Ino}
			if first, ok := links[key]; ok {
				hdr.Typeflag, hdr.Linkname, hdr.Size = tar.TypeLink, first, 0
			} else {
				links[key] = hdr.Name
			}
		}
		if err := tw.WriteHeader(hdr); err != nil {
			return fmt.Errorf("write %s: %w", rel, err)
		}
		if hdr.Typeflag != tar.TypeReg {
			return nil
		}
		f, err := os.Open(full)
		if err != nil {
			return err
		}
		defer f.Close()
		if _, err := io.CopyN(tw, f, hdr.Size); err != nil {
			return fmt.Errorf("write %s: %w", rel, err)
		}
		return nil
	})
	if err != nil {
		return err
	}
	return tw.Close()
}

// walkSorted calls fn for every entry below root/rel (not for root itself)
// in lexical order, without following symlinks.
func walkSorted(root, rel string, fn func(rel string, fi fs.FileInfo) error) error {
	ents, err := os.ReadDir(filepath.Join(root, rel))
	if err != nil {
		return err
	}
	sort.Slice(ents, func(i, j int) bool { return ents[i].Name() < ents[j].Name() })
	for _, e := range ents {
		r := filepath.Join(rel, e.Name())
		fi, err := e.Info()
		if err != nil {
			return err
		}
		if err := fn(r, fi); err != nil {
			return err
		}
		if fi.IsDir() {
			if err := walkSorted(root, r, fn); err != nil {
				return err
			}
		}
	}
	return nil
}
