package slot

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// Environment of the helper process the tests below start from their own
// test binary.
const (
	helperEnv     = "ROTA_SLOT_TEST_HELPER" // what the helper does
	helperRootEnv = "ROTA_SLOT_TEST_ROOT"   // the deviceFixture's directory
)

// killImageSize is the size the killed writer announces; it is killed
// long before it gets there.
const killImageSize = 256 << 20

// TestHelperProcess is not a test: started by startHelper, it plays a
// second process holding the install lock ("lock") or writing a slot
// ("write"), and prints "ready" when it is in the middle of it.
func TestHelperProcess(t *testing.T) {
	what := os.Getenv(helperEnv)
	if what == "" {
		return // run as a test, it has nothing to do
	}
	root := os.Getenv(helperRootEnv)
	fx := &deviceFixture{
		root:      root,
		devRoot:   filepath.Join(root, "dev"),
		cmdline:   filepath.Join(root, "cmdline"),
		mountinfo: filepath.Join(root, "mountinfo"),
		dataDir:   filepath.Join(root, "data"),
		bootState: filepath.Join(root, "bootstate.json"),
		config:    filepath.Join(root, "system.toml"),
	}
	sys := fx.open(t)
	lock, err := sys.Lock()
	require.NoError(t, err)
	defer lock.Close()

	ctx := context.Background()
	switch what {
	case "lock":
		fmt.Println("ready")
		time.Sleep(time.Minute)
	case "write":
		target := mustSlot(t, sys, "rootfs.1")
		require.NoError(t, sys.BeginInstall(ctx, target, BundleInfo{Version: "killed"}))
		announced := false
		_, err := sys.WriteImage(ctx, target, &slowZeros{}, killImageSize, WriteOptions{
			Progress: func(n int64) {
				if !announced && n >= 4*DefaultWriteBufferSize {
					fmt.Println("ready")
					announced = true
				}
			},
		})
		t.Errorf("the write was meant to be killed, but returned %v", err)
	}
}

// slowZeros is an endless image of zeros that takes its time, so the
// writer is still writing when it is killed.
type slowZeros struct{ reads int }

func (z *slowZeros) Read(p []byte) (int, error) {
	z.reads++
	if z.reads%8 == 0 {
		time.Sleep(5 * time.Millisecond)
	}
	clear(p)
	return len(p), nil
}

// startHelper starts the helper process for fx and waits until it
// reports that it is ready.
func startHelper(t *testing.T, fx *deviceFixture, what string) *exec.Cmd {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^TestHelperProcess$", "-test.v")
	cmd.Env = append(os.Environ(), helperEnv+"="+what, helperRootEnv+"="+fx.root)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.StdoutPipe()
	require.NoError(t, err)
	require.NoError(t, cmd.Start())
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	})

	lines := bufio.NewScanner(out)
	for lines.Scan() {
		if lines.Text() == "ready" {
			go func() { _, _ = io.Copy(io.Discard, out) }()
			return cmd
		}
	}
	t.Fatalf("helper %s ended before it was ready; stderr:\n%s", what, stderr.String())
	return nil
}

// killHelper kills cmd with SIGKILL and waits for it.
func killHelper(t *testing.T, cmd *exec.Cmd) {
	t.Helper()
	require.NoError(t, cmd.Process.Signal(syscall.SIGKILL))
	err := cmd.Wait()
	var exit *exec.ExitError
	require.ErrorAs(t, err, &exit)
	status := exit.Sys().(syscall.WaitStatus)
	require.Equal(t, syscall.SIGKILL, status.Signal())
}

func TestLock(t *testing.T) {
	fx := newDeviceFixture(t, "rota.slot=A", "")
	sys := fx.open(t)

	first, err := sys.Lock()
	require.NoError(t, err)

	_, err = fx.open(t).Lock()
	require.ErrorIs(t, err, ErrLocked, "a second holder is refused at once")
	assert.Contains(t, err.Error(), "(pid "+strconv.Itoa(os.Getpid())+")")

	require.NoError(t, first.Close())
	require.NoError(t, first.Close(), "closing twice is harmless")
	again, err := sys.Lock()
	require.NoError(t, err, "a closed lock is free")
	require.NoError(t, again.Close())
}

func TestLock_ReleasedWhenHolderIsKilled(t *testing.T) {
	fx := newDeviceFixture(t, "rota.slot=A", "")
	sys := fx.open(t)
	cmd := startHelper(t, fx, "lock")

	_, err := sys.Lock()
	require.ErrorIs(t, err, ErrLocked)
	assert.Contains(t, err.Error(), "(pid "+strconv.Itoa(cmd.Process.Pid)+")")

	killHelper(t, cmd)
	l, err := sys.Lock()
	require.NoError(t, err, "the kernel drops the lock of a dead process")
	require.NoError(t, l.Close())
}

func TestWriteImage_KilledMidWrite(t *testing.T) {
	ctx := context.Background()
	fx := newDeviceFixture(t, "rota.slot=A", "")
	sys := fx.open(t)
	booted := fx.readPart(t, "sda2")
	require.NoError(t, sys.MarkGood(ctx, mustSlot(t, sys, "rootfs.1")))

	cmd := startHelper(t, fx, "write")
	killHelper(t, cmd)

	t.Run("the target stays marked bad and not primary", func(t *testing.T) {
		assert.Equal(t, BootState{Bad: true}, bootStateOf(t, sys, "B"))
		primary, err := sys.Bootloader().Primary(ctx)
		require.NoError(t, err)
		assert.Equal(t, "A", primary)
	})
	t.Run("its status says installing", func(t *testing.T) {
		st, err := sys.Status(ctx)
		require.NoError(t, err)
		rec := st.Slots[1].Install
		require.NotNil(t, rec)
		assert.Equal(t, StateInstalling, rec.State)
		assert.Equal(t, "killed", rec.Version)
		require.ErrorIs(t, sys.MarkActive(ctx, mustSlot(t, sys, "rootfs.1"), 1),
			ErrIncomplete)
	})
	t.Run("the booted slot is byte-identical", func(t *testing.T) {
		assert.Equal(t, booted, fx.readPart(t, "sda2"))
	})
	t.Run("the next install succeeds", func(t *testing.T) {
		lock, err := sys.Lock()
		require.NoError(t, err)
		defer lock.Close()

		target := mustSlot(t, sys, "rootfs.1")
		img, sum := testImage(DefaultWriteBufferSize+1, 3)
		require.NoError(t, sys.BeginInstall(ctx, target, BundleInfo{Version: "2"}))
		res, err := sys.WriteImage(ctx, target, bytes.NewReader(img), int64(len(img)),
			WriteOptions{SHA256: sum, Verify: true})
		require.NoError(t, err)
		require.NoError(t, sys.CommitInstall(ctx, target, res))
		require.NoError(t, sys.MarkActive(ctx, target, 1))

		assert.Equal(t, img, fx.readPart(t, "sda3"))
		assert.Equal(t, BootState{AttemptsLeft: 1}, bootStateOf(t, sys, "B"))
	})
}
