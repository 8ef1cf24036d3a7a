package e2e

import (
	"context"
	"crypto/rand"
	"debug/elf"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/rotaupdate/rota/bundle"
	"github.com/rotaupdate/rota/internal/testutil"
	"github.com/rotaupdate/rota/slot"
)

// Releases of the test system. The factory release is on slot A of a
// new disk; the others are uploaded as bundles.
var (
	factory    = Release{Version: "1.0.0"}
	good       = Release{Version: "2.0.0"}
	badHealth  = Release{Version: "3.0.0", FailHealth: true}
	badBoot    = Release{Version: "3.1.0", FailBoot: true}
	bundled    = []Release{good, badHealth, badBoot}
	workDir    string // removed after the tests
	fixtureErr error
	fixtureFx  *fixture
	fixtureMu  sync.Mutex
)

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "rota-e2e-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	workDir = dir
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// fixture is what every scenario shares, built once per test run: the
// binaries, the signing key, the base disk and the bundles.
type fixture struct {
	server  string // the rota-server binary
	pubKey  string // the release signing key, trusted by server and agents
	base    *Disk  // slot A holds the factory release, slot B is empty
	keep    []byte // content of KeepFile on the data partition
	bundles map[string]string
	built   time.Duration

	// resumeAt is where in the good release's bundle a download resumes
	// after the agent's first checkpoint: the end of the frame with
	// which the first slot.DefaultSyncInterval bytes of the image end.
	resumeAt int64
}

// requireE2E skips the test unless ROTA_E2E=1, and checks that every tool
// is there: under CI a missing tool fails the test, otherwise it skips.
func requireE2E(t *testing.T) {
	t.Helper()
	if os.Getenv("ROTA_E2E") != "1" {
		t.Skip("boots emulated machines for minutes; set ROTA_E2E=1 (make e2e) to run")
	}
	for _, tool := range Tools {
		testutil.RequireTool(t, tool)
	}
	if f := missingFile(); f != "" {
		if testutil.CI() {
			t.Fatalf("%s is missing; make test installs it", f)
		}
		t.Skipf("%s is missing (run make test to install it)", f)
	}
}

// setup returns the shared fixture, building it on first use.
func setup(t *testing.T) *fixture {
	t.Helper()
	requireE2E(t)
	fixtureMu.Lock()
	defer fixtureMu.Unlock()
	if fixtureFx == nil && fixtureErr == nil {
		start := time.Now()
		fixtureFx, fixtureErr = buildFixture(t, filepath.Join(workDir, "fixture"))
		if fixtureFx != nil {
			fixtureFx.built = time.Since(start)
			t.Logf("built the binaries, kernel, root file systems, disk and bundles in %v",
				fixtureFx.built.Round(time.Second))
		}
	}
	require.NoError(t, fixtureErr, "build the test image")
	return fixtureFx
}

// buildFixture builds everything the scenarios share into dir.
func buildFixture(t *testing.T, dir string) (*fixture, error) {
	ctx := context.Background()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	fx := &fixture{bundles: map[string]string{}}

	bin := filepath.Join(dir, "bin")
	build := exec.Command("go", "build", "-trimpath", "-ldflags=-s -w", "-o", bin+"/",
		"github.com/rotaupdate/rota/cmd/rota-server",
		"github.com/rotaupdate/rota/cmd/rota-client")
	build.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOARCH=amd64")
	if out, err := build.CombinedOutput(); err != nil {
		return nil, fmt.Errorf("build the commands: %w: %s", err, out)
	}
	fx.server = filepath.Join(bin, "rota-server")
	if p := os.Getenv("ROTA_E2E_SERVER"); p != "" {
		// Another server build, such as a released one, against this
		// agent.
		fx.server = p
	}

	busybox := LookTool("busybox")
	if err := requireStatic(busybox); err != nil {
		return nil, err
	}
	kernel, err := FetchKernel(ctx, kernelCache())
	if err != nil {
		return nil, err
	}
	t.Logf("kernel %s from %s", kernel.Release, kernel.Image)

	priv, pub, err := bundle.GenerateKey(bundle.Ed25519, nil)
	if err != nil {
		return nil, err
	}
	signer, err := bundle.LoadSigner(priv, nil)
	if err != nil {
		return nil, err
	}
	fx.pubKey = filepath.Join(dir, "release.pub")
	if err := os.WriteFile(fx.pubKey, pub, 0o644); err != nil {
		return nil, err
	}
	script, err := os.ReadFile("../../docs/bootloaders/grub.cfg")
	if err != nil {
		return nil, err
	}
	b := &Builder{Dir: dir, Kernel: kernel, Busybox: busybox,
		Client: filepath.Join(bin, "rota-client"), Keyring: pub, GrubScript: script}

	for _, rel := range bundled {
		img := filepath.Join(dir, "rootfs-"+rel.Version+".ext4")
		if err := b.Rootfs(ctx, rel, img); err != nil {
			return nil, err
		}
		out := filepath.Join(dir, rel.Version+".rota")
		if err := b.Bundle(ctx, rel, img, signer, out); err != nil {
			return nil, err
		}
		os.Remove(img)
		fx.bundles[rel.Version] = out
	}

	fx.resumeAt, err = resumeOffset(ctx, fx.bundles[good.Version], fx.pubKey,
		slot.DefaultSyncInterval)
	if err != nil {
		return nil, err
	}

	img := filepath.Join(dir, "rootfs-"+factory.Version+".ext4")
	if err := b.Rootfs(ctx, factory, img); err != nil {
		return nil, err
	}
	fx.keep = []byte("made at " + time.Now().UTC().Format(time.RFC3339) + " " + rand.Text() + "\n")
	fx.base, err = b.Disk(ctx, filepath.Join(dir, "disk.img"), img, fx.keep)
	if err != nil {
		return nil, err
	}
	os.Remove(img)
	return fx, nil
}

// resumeOffset returns where in the .rota file at path a download
// resumes once the first at bytes of its first image are durable: the
// agent checkpoints there when a frame of the image ends exactly at at,
// which it must.
func resumeOffset(ctx context.Context, path, keyring string, at int64) (int64, error) {
	kr, err := bundle.LoadKeyring(keyring)
	if err != nil {
		return 0, err
	}
	b, err := bundle.Open(path, bundle.Options{})
	if err != nil {
		return 0, err
	}
	defer b.Close()
	if _, err := b.Verify(kr); err != nil {
		return 0, err
	}
	ir, err := b.NextImage(ctx)
	if err != nil {
		return 0, err
	}
	if _, err := io.Copy(io.Discard, ir); err != nil {
		return 0, fmt.Errorf("read the image of %s: %w", path, err)
	}
	cp := ir.Checkpoint(at)
	if cp == nil || cp.Uncompressed != at {
		return 0, fmt.Errorf("bundle %s: no frame of its image ends at byte %d", path, at)
	}
	return cp.FileOffset + cp.Compressed, nil
}

// kernelCache is where the kernel package is kept between runs:
// $ROTA_E2E_CACHE, or rota-e2e in the user's cache directory.
func kernelCache() string {
	if d := os.Getenv("ROTA_E2E_CACHE"); d != "" {
		return d
	}
	if d, err := os.UserCacheDir(); err == nil {
		return filepath.Join(d, "rota-e2e")
	}
	return filepath.Join(os.TempDir(), "rota-e2e-cache")
}

// requireStatic fails unless the ELF file at path has no interpreter:
// the test systems have no C library. Debian's busybox-static is.
func requireStatic(path string) error {
	f, err := elf.Open(path)
	if err != nil {
		return fmt.Errorf("check %s: %w", path, err)
	}
	defer f.Close()
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			return fmt.Errorf("%s is dynamically linked; install busybox-static", path)
		}
	}
	return nil
}
