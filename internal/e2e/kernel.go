package e2e

import (
	"bytes"
	"context"
	"debug/elf"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
)

// KernelPackage is the Debian meta package whose dependency names the
// kernel image the test systems boot.
const KernelPackage = "linux-image-amd64"

// BootModules are the kernel modules the test systems load in their
// initramfs, by name; their dependencies are added. Built-in ones are
// skipped.
var BootModules = []string{
	"virtio_pci", "virtio_blk", "virtio_net", // the disk and the network
	"crc32c_generic", "ext4", // the slots and the data partition
	"nls_cp437", "nls_utf8", "nls_ascii", "vfat", // the EFI system partition
	"qemu_fw_cfg", // settings from the test: the server's address
}

// Kernel is an unpacked Debian kernel package.
type Kernel struct {
	// Release is the kernel release, such as 6.1.0-57-amd64.
	Release string

	// Image is the path of the kernel image (vmlinuz).
	Image string

	// ModuleDir is the path of lib/modules/RELEASE.
	ModuleDir string
}

// kernelDepRE finds the real kernel package in apt-cache's answer.
var kernelDepRE = regexp.MustCompile(`(?m)^\s*Depends:\s*(linux-image-\S+)\s*$`)

// FetchKernel returns the Debian kernel, downloading its package with
// apt-get download into cacheDir and unpacking it there with dpkg-deb the
// first time. Nothing is installed on the host. A package already in
// cacheDir is used without asking apt, so a warm cache works offline.
func FetchKernel(ctx context.Context, cacheDir string) (*Kernel, error) {
	if err := os.MkdirAll(cacheDir, 0o755); err != nil {
		return nil, fmt.Errorf("fetch kernel: %w", err)
	}
	debs, _ := filepath.Glob(filepath.Join(cacheDir, "linux-image-*-amd64_*.deb"))
	if len(debs) == 0 {
		if err := downloadKernel(ctx, cacheDir); err != nil {
			return nil, err
		}
		debs, _ = filepath.Glob(filepath.Join(cacheDir, "linux-image-*-amd64_*.deb"))
		if len(debs) == 0 {
			return nil, fmt.Errorf("fetch kernel: apt-get download left no package in %s",
				cacheDir)
		}
	}
	slices.Sort(debs)
	deb := debs[len(debs)-1]

	dir := strings.TrimSuffix(deb, ".deb")
	done := filepath.Join(dir, ".unpacked")
	if _, err := os.Stat(done); err != nil {
		os.RemoveAll(dir)
		if out, err := exec.CommandContext(ctx, "dpkg-deb", "-x", deb, dir).
			CombinedOutput(); err != nil {
			return nil, fmt.Errorf("unpack %s: %w: %s", deb, err, out)
		}
		if err := os.WriteFile(done, nil, 0o644); err != nil {
			return nil, fmt.Errorf("unpack %s: %w", deb, err)
		}
	}
	return findKernel(dir)
}

// downloadKernel asks apt which package the meta package depends on and
// downloads that one into dir.
func downloadKernel(ctx context.Context, dir string) error {
	out, err := exec.CommandContext(ctx, "apt-cache", "depends", KernelPackage).Output()
	if err != nil {
		return fmt.Errorf("find the package of %s: %w", KernelPackage, err)
	}
	m := kernelDepRE.FindSubmatch(out)
	if m == nil {
		return fmt.Errorf("find the package of %s: no linux-image dependency in %q",
			KernelPackage, out)
	}
	cmd := exec.CommandContext(ctx, "apt-get", "download", string(m[1]))
	cmd.Dir = dir
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("apt-get download %s: %w: %s", m[1], err, out)
	}
	return nil
}

// findKernel locates the kernel image and module directory in an
// unpacked package.
func findKernel(root string) (*Kernel, error) {
	images, _ := filepath.Glob(filepath.Join(root, "boot", "vmlinuz-*"))
	if len(images) != 1 {
		return nil, fmt.Errorf("find kernel in %s: %d kernel images", root, len(images))
	}
	release := strings.TrimPrefix(filepath.Base(images[0]), "vmlinuz-")
	k := &Kernel{
		Release:   release,
		Image:     images[0],
		ModuleDir: filepath.Join(root, "lib", "modules", release),
	}
	if _, err := os.Stat(k.ModuleDir); err != nil {
		// Debian moved modules below /usr in later releases.
		k.ModuleDir = filepath.Join(root, "usr", "lib", "modules", release)
		if _, err := os.Stat(k.ModuleDir); err != nil {
			return nil, fmt.Errorf("find kernel modules in %s: %w", root, err)
		}
	}
	return k, nil
}

// moduleName normalises a module name as the kernel does: dashes and
// underscores are the same.
func moduleName(s string) string {
	return strings.ReplaceAll(s, "-", "_")
}

// ModuleLoadOrder returns the paths, relative to k.ModuleDir, of the
// modules named by want and of everything they depend on, in an order in
// which insmod can load them: each after its dependencies. Modules built
// into the kernel are left out; a name that is neither a module nor
// built in is an error.
func (k *Kernel) ModuleLoadOrder(want []string) ([]string, error) {
	paths := map[string]string{}
	err := filepath.WalkDir(filepath.Join(k.ModuleDir, "kernel"),
		func(p string, d fs.DirEntry, err error) error {
			if err != nil {
				return err
			}
			if name, ok := strings.CutSuffix(d.Name(), ".ko"); ok && !d.IsDir() {
				rel, _ := filepath.Rel(k.ModuleDir, p)
				paths[moduleName(name)] = rel
			}
			return nil
		})
	if err != nil {
		return nil, fmt.Errorf("list modules of %s: %w", k.Release, err)
	}
	builtin, err := k.builtinModules()
	if err != nil {
		return nil, err
	}
	return loadOrder(want, paths, builtin, func(rel string) ([]string, error) {
		return moduleDepends(filepath.Join(k.ModuleDir, rel))
	})
}

// builtinModules reads modules.builtin: the modules compiled into the
// kernel image.
func (k *Kernel) builtinModules() (map[string]bool, error) {
	b, err := os.ReadFile(filepath.Join(k.ModuleDir, "modules.builtin"))
	if err != nil {
		return nil, fmt.Errorf("read built-in modules of %s: %w", k.Release, err)
	}
	builtin := map[string]bool{}
	for line := range strings.Lines(string(b)) {
		name := strings.TrimSuffix(filepath.Base(strings.TrimSpace(line)), ".ko")
		builtin[moduleName(name)] = true
	}
	return builtin, nil
}

// loadOrder orders the modules named by want and their dependencies,
// dependencies first, using paths (name to file) and depends (file to
// the names it needs). Built-in modules are skipped.
func loadOrder(want []string, paths map[string]string, builtin map[string]bool,
	depends func(path string) ([]string, error)) ([]string, error) {
	var (
		order []string
		state = map[string]int{} // 1: being visited, 2: done
		visit func(name string, from []string) error
	)
	visit = func(name string, from []string) error {
		name = moduleName(name)
		switch {
		case state[name] == 2:
			return nil
		case state[name] == 1:
			return fmt.Errorf("module %s: dependency cycle through %s",
				name, strings.Join(from, " -> "))
		}
		p, ok := paths[name]
		if !ok {
			if builtin[name] {
				state[name] = 2
				return nil
			}
			return fmt.Errorf("module %s: not found (needed by %s)", name,
				strings.Join(append(from, "the test image"), " <- "))
		}
		state[name] = 1
		deps, err := depends(p)
		if err != nil {
			return err
		}
		for _, d := range deps {
			if err := visit(d, append(from, name)); err != nil {
				return err
			}
		}
		state[name] = 2
		order = append(order, p)
		return nil
	}
	for _, name := range want {
		if err := visit(name, nil); err != nil {
			return nil, err
		}
	}
	return order, nil
}

// moduleDepends reads the "depends=" entry of a module's .modinfo
// section: the modules that must be loaded before it.
func moduleDepends(path string) ([]string, error) {
	f, err := elf.Open(path)
	if err != nil {
		return nil, fmt.Errorf("read module %s: %w", path, err)
	}
	defer f.Close()
	sec := f.Section(".modinfo")
	if sec == nil {
		return nil, fmt.Errorf("read module %s: no .modinfo section", path)
	}
	data, err := sec.Data()
	if err != nil {
		return nil, fmt.Errorf("read module %s: %w", path, err)
	}
	for field := range bytes.SplitSeq(data, []byte{0}) {
		v, ok := bytes.CutPrefix(field, []byte("depends="))
		if !ok {
			continue
		}
		var deps []string
		for d := range strings.SplitSeq(string(v), ",") {
			if d != "" {
				deps = append(deps, d)
			}
		}
		return deps, nil
	}
	return nil, nil
}
