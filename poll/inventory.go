package poll

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"time"
)

// Defaults of Collector.
const (
	// DefaultOSRelease is the os-release file describing the system.
	DefaultOSRelease = "/etc/os-release"

	// DefaultScriptTimeout bounds the run of one inventory script.
	DefaultScriptTimeout = 10 * time.Second

	// DefaultMaxScriptOutput caps the output kept from one script.
	DefaultMaxScriptOutput = 64 << 10

	// maxOSReleaseSize caps how much of the os-release file is read.
	maxOSReleaseSize = 64 << 10

	// scriptWaitDelay is how long a killed script's output pipe may stay
	// open, held by a process that escaped the kill, before it is closed.
	scriptWaitDelay = time.Second
)

// osReleaseKeys maps the os-release fields reported to attribute names.
var osReleaseKeys = map[string]string{
	"ID":            "os.id",
	"VERSION_ID":    "os.version-id",
	"PRETTY_NAME":   "os.name",
	"BUILD_ID":      "os.build-id",
	"VARIANT_ID":    "os.variant-id",
	"IMAGE_ID":      "os.image-id",
	"IMAGE_VERSION": "os.image-version",
}

// Collector gathers a device's inventory: the system from os-release,
// kernel, host name and machine, the free space of the data directory,
// and the key=value lines printed by every executable in a directory.
// A script's attributes override the built-in ones. A failing script is
// recorded as the attribute "error.<name>" and does not stop the others.
type Collector struct {
	// ScriptDir holds the inventory scripts, run in name order; empty
	// means none.
	ScriptDir string

	// DataDir is the directory whose free space is reported as
	// "data.free" in bytes; empty means not reported.
	DataDir string

	// OSRelease is the os-release file; empty means DefaultOSRelease.
	OSRelease string

	// ScriptTimeout bounds each script's run; zero means
	// DefaultScriptTimeout.
	ScriptTimeout time.Duration

	// MaxScriptOutput caps the output kept from each script; a script
	// that prints more is stopped. Zero means DefaultMaxScriptOutput.
	MaxScriptOutput int64
}

// CollectInventory collects the inventory with the scripts in dir and the
// defaults of Collector.
func CollectInventory(ctx context.Context, dir string) (map[string]string, error) {
	return Collector{ScriptDir: dir}.Collect(ctx)
}

// Collect returns the inventory. It fails only when ctx ends; every other
// failure is recorded in the attributes.
func (c Collector) Collect(ctx context.Context) (map[string]string, error) {
	setDefault(&c.OSRelease, DefaultOSRelease)
	setDefault(&c.ScriptTimeout, DefaultScriptTimeout)
	setDefault(&c.MaxScriptOutput, DefaultMaxScriptOutput)

	inv := inventory{}
	if err := readOSRelease(c.OSRelease, inv); err != nil {
		inv.set("error.os-release", err.Error())
	}
	if host, err := os.Hostname(); err == nil {
		inv.set("hostname", host)
	}
	systemFacts(c.DataDir, inv)

	scripts, err := listScripts(c.ScriptDir)
	if err != nil {
		inv.set("error.inventory-dir", err.Error())
	}
	for _, path := range scripts {
		if err := ctx.Err(); err != nil {
			return nil, fmt.Errorf("collect inventory: %w", err)
		}
		name := filepath.Base(path)
		if err := c.runScript(ctx, path, inv); err != nil {
			inv.set("error."+name, err.Error())
		}
	}
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("collect inventory: %w", err)
	}
	return inv, nil
}

// inventory is a set of attributes kept within the API's limits.
type inventory map[string]string

// set adds an attribute, replacing characters the API does not allow in
// names and cutting values, and ignores new names once the set is full.
func (inv inventory) set(key, value string) {
	key = sanitizeKey(key)
	if key == "" {
		return
	}
	if _, ok := inv[key]; !ok && len(inv) >= MaxAttributes {
		return
	}
	inv[key] = cutUTF8(value, MaxAttributeValueSize)
}

func sanitizeKey(k string) string {
	b := []byte(k)
	for i, c := range b {
		if !isTokenByte(c) && !strings.ContainsRune("._:/", rune(c)) {
			b[i] = '_'
		}
	}
	if len(b) > MaxAttributeKeySize {
		b = b[:MaxAttributeKeySize]
	}
	return string(b)
}

func readOSRelease(path string, inv inventory) error {
	data, err := readFileCapped(path, maxOSReleaseSize)
	if err != nil {
		return err
	}
	for line := range strings.Lines(string(data)) {
		k, v, ok := strings.Cut(strings.TrimSpace(line), "=")
		if name, known := osReleaseKeys[k]; ok && known {
			inv.set(name, unquote(v))
		}
	}
	return nil
}

// unquote removes the shell quotes os-release values may carry.
func unquote(v string) string {
	if len(v) >= 2 && (v[0] == '"' || v[0] == '\'') && v[len(v)-1] == v[0] {
		quote := v[0]
		v = v[1 : len(v)-1]
		if quote == '"' {
			v = strings.NewReplacer(`\"`, `"`, `\\`, `\`, `\$`, `$`, "\\`", "`").Replace(v)
		}
	}
	return v
}

func readFileCapped(path string, limit int64) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", path, err)
	}
	defer f.Close()
	data, err := readCapped(f, limit)
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", path, err)
	}
	return data, nil
}

// listScripts returns the executable regular files of dir in name order;
// a missing dir has none.
func listScripts(dir string) ([]string, error) {
	if dir == "" {
		return nil, nil
	}
	entries, err := os.ReadDir(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("list inventory scripts: %w", err)
	}
	var paths []string
	for _, e := range entries {
		info, err := e.Info()
		if err != nil || !info.Mode().IsRegular() || info.Mode()&0o111 == 0 {
			continue
		}
		paths = append(paths, filepath.Join(dir, e.Name()))
	}
	sort.Strings(paths)
	return paths, nil
}

// runScript runs one script and adds the key=value lines it printed; the
// lines of a failed script are kept too.
func (c Collector) runScript(ctx context.Context, path string, inv inventory) error {
	sctx, cancel := context.WithTimeout(ctx, c.ScriptTimeout)
	defer cancel()

	out := &cappedBuffer{limit: c.MaxScriptOutput, full: cancel}
	cmd := exec.CommandContext(sctx, path)
	cmd.Dir = filepath.Dir(path)
	cmd.Stdout = out
	cmd.WaitDelay = scriptWaitDelay
	killGroupOnCancel(cmd)
	err := cmd.Run()

	sc := bufio.NewScanner(bytes.NewReader(out.complete()))
	sc.Buffer(nil, int(c.MaxScriptOutput)+1)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		k, v, ok := strings.Cut(line, "=")
		if ok && !strings.HasPrefix(line, "#") && validKey(strings.TrimSpace(k)) {
			inv.set(strings.TrimSpace(k), strings.TrimSpace(v))
		}
	}

	switch {
	case out.overflowed():
		return fmt.Errorf("output over %d bytes", c.MaxScriptOutput)
	case errors.Is(sctx.Err(), context.DeadlineExceeded) && ctx.Err() == nil:
		return fmt.Errorf("timed out after %v", c.ScriptTimeout)
	case err != nil:
		return err
	}
	return nil
}

// cappedBuffer keeps the first limit bytes written to it and calls full
// once more arrive, which stops the writer.
type cappedBuffer struct {
	limit int64
	full  func()

	mu   sync.Mutex
	buf  []byte
	over bool
}

func (b *cappedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	room := b.limit - int64(len(b.buf))
	if int64(len(p)) > room {
		b.buf = append(b.buf, p[:max(room, 0)]...)
		if !b.over {
			b.over = true
			b.full()
		}
		return len(p), nil
	}
	b.buf = append(b.buf, p...)
	return len(p), nil
}

func (b *cappedBuffer) overflowed() bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.over
}

// complete returns the output up to its last full line.
func (b *cappedBuffer) complete() []byte {
	b.mu.Lock()
	defer b.mu.Unlock()
	if i := bytes.LastIndexByte(b.buf, '\n'); i >= 0 {
		return b.buf[:i+1]
	}
	if b.over {
		return nil
	}
	return b.buf
}
