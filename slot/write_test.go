package slot

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// testImage returns n pseudo-random bytes and their sha256 in hex.
func testImage(n int, seed uint64) ([]byte, string) {
	img := make([]byte, n)
	r := rand.New(rand.NewPCG(seed, seed))
	for i := range img {
		img[i] = byte(r.Uint32())
	}
	sum := sha256.Sum256(img)
	return img, hex.EncodeToString(sum[:])
}

func TestWriteImage(t *testing.T) {
	tests := []struct {
		name string
		size int
	}{
		{name: "an empty image", size: 0},
		{name: "a small unaligned image", size: 1000},
		{name: "an image of whole buffers", size: 2 * DefaultWriteBufferSize},
		{name: "several buffers and an unaligned tail", size: 3*DefaultWriteBufferSize + 4097},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			fx := newDeviceFixture(t, "rota.slot=A", "")
			sys := fx.open(t)
			img, sum := testImage(tt.size, uint64(tt.size))
			before := fx.readPart(t, "sda2")

			var progress []int64
			res, err := sys.WriteImage(context.Background(), mustSlot(t, sys, "rootfs.1"),
				bytes.NewReader(img), int64(len(img)), WriteOptions{
					SHA256:   "sha256:" + sum,
					Verify:   true,
					Progress: func(n int64) { progress = append(progress, n) },
				})
			require.NoError(t, err)

			assert.Equal(t, WriteResult{Size: int64(len(img)), SHA256: sum, Verified: true}, res)
			assert.Equal(t, img, fx.readPart(t, "sda3"),
				"a file slot without size holds exactly the image")
			assert.Equal(t, before, fx.readPart(t, "sda2"), "the booted slot is untouched")
			if tt.size > 0 {
				require.NotEmpty(t, progress)
				assert.Equal(t, int64(tt.size), progress[len(progress)-1])
				assert.IsNonDecreasing(t, progress)
			}
		})
	}
}

func TestWriteImage_SizedFileSlotKeepsItsLength(t *testing.T) {
	cfg := strings.Replace(fixtureConfig, `bootname = "B"`, "bootname = \"B\"\nsize = 4096", 1)
	fx := newDeviceFixture(t, "rota.slot=A", cfg)
	sys := fx.open(t)

	_, err := sys.WriteImage(context.Background(), mustSlot(t, sys, "rootfs.1"),
		strings.NewReader("new"), 3, WriteOptions{Verify: true})
	require.NoError(t, err)

	got := fx.readPart(t, "sda3")
	require.Len(t, got, 4096)
	assert.Equal(t, "new", string(got[:3]))
}

func TestWriteImage_Refuses(t *testing.T) {
	sizedConfig := strings.Replace(fixtureConfig, `bootname = "B"`,
		"bootname = \"B\"\nsize = 100", 1)
	aliasConfig := strings.Replace(fixtureConfig, `device = "/dev/sda3"`,
		`device = "/dev/disk/by-label/root-a"`, 1)

	tests := []struct {
		name    string
		config  string
		cmdline string
		mounts  string
		slot    string
		image   string
		size    int64
		opts    WriteOptions
		wantErr error
		want    string
	}{
		{
			name:    "the booted slot",
			slot:    "rootfs.0",
			wantErr: ErrBootedSlot,
		},
		{
			name:    "a child of the booted slot",
			slot:    "boot.0",
			wantErr: ErrBootedSlot,
		},
		{
			name:    "the booted slot's device under another name",
			config:  aliasConfig,
			slot:    "rootfs.1",
			wantErr: ErrBootedSlot,
			want:    "is the device of booted slot rootfs.0",
		},
		{
			name:    "any slot while the booted slot is unknown",
			cmdline: "quiet",
			slot:    "rootfs.1",
			wantErr: ErrBootedSlot,
		},
		{
			name:    "a mounted slot, by its path",
			mounts:  "40 22 8:3 / /mnt rw - ext4 DEVROOT/sda3 rw\n",
			slot:    "rootfs.1",
			wantErr: ErrMounted,
			want:    "mounted on /mnt",
		},
		{
			name:    "a mounted slot, by a link to it",
			mounts:  "40 22 8:3 / /mnt/b\\040c rw - ext4 DEVROOT/disk/by-uuid/b00b-0001 rw\n",
			slot:    "boot.1",
			wantErr: ErrMounted,
			want:    "mounted on /mnt/b c",
		},
		{
			name:    "an image larger than the slot",
			config:  sizedConfig,
			slot:    "rootfs.1",
			size:    101,
			wantErr: ErrTooLarge,
		},
		{
			name:    "an image shorter than declared",
			slot:    "rootfs.1",
			image:   "abc",
			size:    4,
			wantErr: ErrImageSize,
		},
		{
			name:    "an image longer than declared",
			slot:    "rootfs.1",
			image:   "abcde",
			size:    4,
			wantErr: ErrImageSize,
		},
		{
			name:    "an image with another sha256",
			slot:    "rootfs.1",
			image:   "abcd",
			size:    4,
			opts:    WriteOptions{SHA256: strings.Repeat("0", 64)},
			wantErr: ErrDigestMismatch,
		},
		{
			name:  "a malformed expected sha256",
			slot:  "rootfs.1",
			image: "abcd",
			size:  4,
			opts:  WriteOptions{SHA256: "sha256:xyz"},
			want:  `bad expected sha256 "sha256:xyz"`,
		},
		{
			name: "a negative size",
			slot: "rootfs.1",
			size: -1,
			want: "negative image size",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cmdline := tt.cmdline
			if cmdline == "" {
				cmdline = "root=PARTUUID=0000aaaa-02"
			}
			fx := newDeviceFixture(t, cmdline, tt.config)
			fx.setMounts(t, strings.ReplaceAll(tt.mounts, "DEVROOT", fx.devRoot))
			sys := fx.open(t, WithBootloader(noReporter{newTestFileBoot(t, fx)}))
			parts := map[string][]byte{}
			for part := range fixtureParts {
				parts[part] = fx.readPart(t, part)
			}

			image := tt.image
			if image == "" && tt.size > 0 {
				image = strings.Repeat("z", int(tt.size))
			}
			_, err := sys.WriteImage(context.Background(), mustSlot(t, sys, tt.slot),
				strings.NewReader(image), tt.size, tt.opts)
			require.Error(t, err)
			if tt.wantErr != nil {
				require.ErrorIs(t, err, tt.wantErr)
			}
			assert.Contains(t, err.Error(), tt.want)

			if tt.wantErr != ErrImageSize && tt.wantErr != ErrDigestMismatch {
				for part, before := range parts {
					assert.Equal(t, before, fx.readPart(t, part),
						"%s is not written when the write is refused", part)
				}
			}
		})
	}
}

func TestWriteImage_VerifyCatchesCorruption(t *testing.T) {
	fx := newDeviceFixture(t, "rota.slot=A", "")
	sys := fx.open(t)
	img, sum := testImage(DefaultWriteBufferSize+10, 1)

	_, err := sys.WriteImage(context.Background(), mustSlot(t, sys, "rootfs.1"),
		bytes.NewReader(img), int64(len(img)), WriteOptions{
			SHA256: sum,
			Verify: true,
			beforeVerify: func(path string) {
				f, err := os.OpenFile(path, os.O_WRONLY, 0)
				require.NoError(t, err)
				_, err = f.WriteAt([]byte{^img[12345]}, 12345)
				require.NoError(t, err)
				require.NoError(t, f.Close())
			},
		})
	require.ErrorIs(t, err, ErrDigestMismatch)
	assert.Contains(t, err.Error(), "read back")
}

func TestWriteImage_Cancelled(t *testing.T) {
	fx := newDeviceFixture(t, "rota.slot=A", "")
	sys := fx.open(t)
	ctx, cancel := context.WithCancel(context.Background())
	img, _ := testImage(3*DefaultWriteBufferSize, 2)

	_, err := sys.WriteImage(ctx, mustSlot(t, sys, "rootfs.1"), bytes.NewReader(img),
		int64(len(img)), WriteOptions{Progress: func(int64) { cancel() }})
	require.ErrorIs(t, err, context.Canceled)
}

func TestWriteImage_MissingDevice(t *testing.T) {
	fx := newDeviceFixture(t, "rota.slot=A", "")
	require.NoError(t, os.Remove(filepath.Join(fx.devRoot, "sda3")))
	sys := fx.open(t)

	_, err := sys.WriteImage(context.Background(), mustSlot(t, sys, "rootfs.1"),
		io.LimitReader(nil, 0), 0, WriteOptions{})
	require.ErrorIs(t, err, os.ErrNotExist)
	assert.Contains(t, err.Error(), "write slot rootfs.1")
}

// newTestFileBoot returns the fixture's file boot loader.
func newTestFileBoot(t *testing.T, fx *deviceFixture) *FileBootloader {
	t.Helper()
	b, err := NewFileBootloader(fx.bootState, "A", "B")
	require.NoError(t, err)
	return b
}
