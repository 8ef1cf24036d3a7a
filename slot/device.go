package slot

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// deviceTags maps the TAG= forms of a device to their /dev/disk directory.
var deviceTags = map[string]string{
	"PARTLABEL": "by-partlabel",
	"PARTUUID":  "by-partuuid",
	"UUID":      "by-uuid",
	"LABEL":     "by-label",
}

// maxProcFileSize caps reads of /proc/cmdline and the mounts table.
const maxProcFileSize = 4 << 20

// devicePath turns a device as written in a configuration or on the kernel
// command line into a path below devRoot (for /dev/... and TAG= forms) or
// leaves it as it is (other absolute paths). It does not touch the disk.
func devicePath(devRoot, dev string) (string, error) {
	if isTagForm(dev) {
		tag, value, _ := strings.Cut(dev, "=")
		dir, known := deviceTags[tag]
		if !known || value == "" || strings.Contains(value, "/") {
			return "", fmt.Errorf("unsupported device %q", dev)
		}
		if tag == "PARTUUID" || tag == "UUID" {
			// udev writes these links in lower case; the kernel
			// command line and configurations may use either.
			value = strings.ToLower(value)
		}
		return filepath.Join(devRoot, "disk", dir, value), nil
	}
	if !filepath.IsAbs(dev) {
		return "", fmt.Errorf("unsupported device %q", dev)
	}
	if rest, ok := strings.CutPrefix(dev, "/dev/"); ok {
		return filepath.Join(devRoot, rest), nil
	}
	return filepath.Clean(dev), nil
}

// resolveDevice returns the real path of dev: devicePath with every
// symbolic link followed. The device must exist.
func resolveDevice(devRoot, dev string) (string, error) {
	p, err := devicePath(devRoot, dev)
	if err != nil {
		return "", err
	}
	real, err := filepath.EvalSymlinks(p)
	if err != nil {
		return "", fmt.Errorf("resolve device %s: %w", dev, err)
	}
	return real, nil
}

// sameDeviceSpec reports whether two device strings name the same device
// without looking at the disk: equal paths, or equal TAG=value with UUIDs
// compared without regard to case.
func sameDeviceSpec(a, b string) bool {
	if a == b {
		return true
	}
	if !isTagForm(a) || !isTagForm(b) {
		return false
	}
	ta, va, _ := strings.Cut(a, "=")
	tb, vb, _ := strings.Cut(b, "=")
	if ta != tb {
		return false
	}
	if ta == "PARTUUID" || ta == "UUID" {
		return strings.EqualFold(va, vb)
	}
	return va == vb
}

// isTagForm reports whether dev is written TAG=value rather than as a
// path (which may contain '=' too).
func isTagForm(dev string) bool {
	tag, _, ok := strings.Cut(dev, "=")
	return ok && !filepath.IsAbs(dev) && !strings.Contains(tag, "/")
}

// readCapped reads at most limit bytes of path, failing when it has more.
func readCapped(path string, limit int64) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, limit+1))
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", path, err)
	}
	if int64(len(data)) > limit {
		return nil, fmt.Errorf("read %s: larger than %d bytes", path, limit)
	}
	return data, nil
}

// splitCmdline splits a kernel command line into parameters. As the
// kernel does, double quotes group words with spaces and are removed.
func splitCmdline(line string) []string {
	var (
		params []string
		cur    strings.Builder
		quoted bool
		inWord bool
	)
	for _, r := range line {
		switch {
		case r == '"':
			quoted = !quoted
			inWord = true
		case !quoted && (r == ' ' || r == '\t' || r == '\n'):
			if inWord {
				params = append(params, cur.String())
				cur.Reset()
				inWord = false
			}
		default:
			cur.WriteRune(r)
			inWord = true
		}
	}
	if inWord {
		params = append(params, cur.String())
	}
	return params
}

// cmdlineValue returns the value of the last key=value parameter, as the
// kernel lets later parameters override earlier ones.
func cmdlineValue(params []string, key string) (string, bool) {
	var (
		value string
		found bool
	)
	for _, p := range params {
		if v, ok := strings.CutPrefix(p, key+"="); ok {
			value, found = v, true
		}
	}
	return value, found
}

// mount is one line of /proc/self/mountinfo, reduced to what is compared.
type mount struct {
	major, minor uint32
	point        string
	source       string
}

// parseMountinfo reads the mounts table in the format of
// /proc/self/mountinfo (see proc(5)).
func parseMountinfo(r io.Reader) ([]mount, error) {
	var mounts []mount
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
	for n := 1; sc.Scan(); n++ {
		fields := strings.Fields(sc.Text())
		if len(fields) == 0 {
			continue
		}
		sep := -1
		for i, f := range fields {
			if f == "-" && i >= 6 {
				sep = i
				break
			}
		}
		if len(fields) < 5 || sep < 0 || len(fields) < sep+3 {
			return nil, fmt.Errorf("mountinfo line %d: malformed", n)
		}
		maj, minor, ok := strings.Cut(fields[2], ":")
		ma, err1 := strconv.ParseUint(maj, 10, 32)
		mi, err2 := strconv.ParseUint(minor, 10, 32)
		if !ok || err1 != nil || err2 != nil {
			return nil, fmt.Errorf("mountinfo line %d: bad device number %q", n, fields[2])
		}
		mounts = append(mounts, mount{
			major:  uint32(ma),
			minor:  uint32(mi),
			point:  unescapeMount(fields[4]),
			source: unescapeMount(fields[sep+2]),
		})
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	return mounts, nil
}

// unescapeMount undoes the octal escapes (\040 for a space) of the
// mounts table.
func unescapeMount(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+4 <= len(s) {
			if v, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(v))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}
