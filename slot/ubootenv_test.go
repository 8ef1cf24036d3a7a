package slot

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"hash/crc32"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// ubootTestSize is the environment size used by the tests.
const ubootTestSize = 0x400

// ubootImage builds one copy by hand (not with MarshalImage) so the codec
// is checked against an independent encoder. data is the data area's start.
func ubootImage(redundant bool, flags byte, data string) []byte {
	hdr := 4
	if redundant {
		hdr = 5
	}
	img := make([]byte, ubootTestSize)
	copy(img[hdr:], data)
	if redundant {
		img[4] = flags
	}
	binary.LittleEndian.PutUint32(img, crc32.ChecksumIEEE(img[hdr:]))
	return img
}

// ubootVars returns env's variables as a map.
func ubootVars(env *UBootEnv) map[string]string {
	vars := map[string]string{}
	for _, n := range env.Names() {
		vars[n], _ = env.Get(n)
	}
	return vars
}

func TestParseFWEnvConfig(t *testing.T) {
	tests := []struct {
		name    string
		text    string
		want    []UBootEnvLocation
		wantErr string
	}{
		{
			name: "one line is the single layout",
			text: "# device offset size\n/dev/mmcblk0 0x3f8000 0x4000\n",
			want: []UBootEnvLocation{{Device: "/dev/mmcblk0", Offset: 0x3f8000, Size: 0x4000}},
		},
		{
			name: "two lines are the redundant layout, sectors optional",
			text: "/dev/mmcblk0\t0x3f8000\t0x4000 0x200 0x20\n\n  /dev/mmcblk0 0x3fc000 0x4000\n",
			want: []UBootEnvLocation{
				{
					Device: "/dev/mmcblk0", Offset: 0x3f8000, Size: 0x4000,
					SectorSize: 0x200, Sectors: 0x20,
				},
				{Device: "/dev/mmcblk0", Offset: 0x3fc000, Size: 0x4000},
			},
		},
		{
			name: "sizes are hexadecimal even without 0x, offsets are C integers",
			text: "/f 4096 1000 200\n/g 010 0X1000\n",
			want: []UBootEnvLocation{
				{Device: "/f", Offset: 4096, Size: 0x1000, SectorSize: 0x200},
				{Device: "/g", Offset: 8, Size: 0x1000},
			},
		},
		{
			name: "trailing comments and extra fields are ignored",
			text: "/f 0 0x400 # env\n/g 0 0x400 0x400 1 extra\n",
			want: []UBootEnvLocation{
				{Device: "/f", Size: 0x400},
				{Device: "/g", Size: 0x400, SectorSize: 0x400, Sectors: 1},
			},
		},
		{name: "an empty file has no copies", text: "# nothing\n", wantErr: "0 copies"},
		{
			name: "three copies are refused",
			text: "/a 0 400\n/b 0 400\n/c 0 400\n", wantErr: "line 3",
		},
		{
			name: "a missing size is refused",
			text: "/a 0\n", wantErr: "want device, offset and size",
		},
		{name: "a negative offset is refused", text: "/a -0x400 400\n", wantErr: `offset "-0x400"`},
		{name: "a bad octal offset is refused", text: "/a 08 400\n", wantErr: `offset "08"`},
		{name: "a bad size is refused", text: "/a 0 0xzz\n", wantErr: `size "0xzz"`},
		{name: "a huge size is refused", text: "/a 0 0x10000000\n", wantErr: "outside"},
		{name: "a tiny size is refused", text: "/a 0 4\n", wantErr: "outside"},
		{name: "an overflowing size is refused", text: "/a 0 fffffffffffffffff\n", wantErr: "size"},
		{
			name: "copies of different sizes are refused",
			text: "/a 0 400\n/b 0 800\n", wantErr: "differ",
		},
		{
			name: "overlapping copies are refused",
			text: "/a 0 400\n/a 0x200 400\n", wantErr: "overlap",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg, err := ParseFWEnvConfig([]byte(tt.text))
			if tt.wantErr != "" {
				assert.ErrorContains(t, err, tt.wantErr)
				return
			}
			require.NoError(t, err)
			assert.Equal(t, tt.want, cfg.Copies)
		})
	}
}

func TestReadFWEnvConfig(t *testing.T) {
	path := filepath.Join(t.TempDir(), "fw_env.config")
	require.NoError(t, os.WriteFile(path, []byte("/a 0 400\n/b 0 zz\n"), 0o644))
	_, err := ReadFWEnvConfig(path)
	assert.ErrorContains(t, err, path+": parse fw_env config line 2")

	require.NoError(t, os.WriteFile(path, bytes.Repeat([]byte("#"), 1<<20), 0o644))
	_, err = ReadFWEnvConfig(path)
	assert.ErrorContains(t, err, "larger than")
}

func TestParseUBootEnvImage(t *testing.T) {
	tests := []struct {
		name      string
		img       []byte
		redundant bool
		want      map[string]string
		wantFlags byte
		wantErr   string
	}{
		{
			name: "single layout", img: ubootImage(false, 0, "a=1\x00b=x=y\x00\x00"),
			want: map[string]string{"a": "1", "b": "x=y"},
		},
		{
			name: "redundant layout with flags", redundant: true,
			img:  ubootImage(true, 7, "a=\x00nl=1\n2\x00\x00"),
			want: map[string]string{"a": "", "nl": "1\n2"}, wantFlags: 7,
		},
		{name: "an empty environment", img: ubootImage(false, 0, ""), want: map[string]string{}},
		{
			name: "data after the terminator is ignored",
			img:  ubootImage(false, 0, "a=1\x00\x00junk\xff"), want: map[string]string{"a": "1"},
		},
		{
			name: "a last entry ending at the area's end is valid",
			img:  ubootImage(false, 0, "v="+strings.Repeat("x", ubootTestSize-7)+"\x00"),
			want: map[string]string{"v": strings.Repeat("x", ubootTestSize-7)},
		},
		{
			name: "a crc mismatch is corrupt",
			img: func() []byte {
				img := ubootImage(false, 0, "a=1\x00\x00")
				img[100] ^= 1
				return img
			}(),
			wantErr: "crc",
		},
		{
			name: "the flags byte is not part of the crc but the layout matters", redundant: true,
			img: ubootImage(false, 0, "a=1\x00\x00"), wantErr: "crc",
		},
		{
			name: "an entry without '=' is corrupt",
			img:  ubootImage(false, 0, "a=1\x00b\x00\x00"), wantErr: "no '='",
		},
		{
			name: "an empty name is corrupt",
			img:  ubootImage(false, 0, "=1\x00\x00"), wantErr: "empty name",
		},
		{
			name: "a name set twice is corrupt",
			img:  ubootImage(false, 0, "a=1\x00a=2\x00\x00"), wantErr: "twice",
		},
		{
			name:    "data without terminator is corrupt",
			img:     ubootImage(false, 0, "v="+strings.Repeat("x", ubootTestSize-6)),
			wantErr: "no terminating NUL",
		},
		{name: "a tiny image is corrupt", img: make([]byte, 8), wantErr: "size"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			env, flags, err := ParseUBootEnvImage(tt.img, tt.redundant)
			if tt.wantErr != "" {
				require.ErrorIs(t, err, ErrCorruptEnv)
				assert.ErrorContains(t, err, tt.wantErr)
				return
			}
			require.NoError(t, err)
			assert.Equal(t, tt.want, ubootVars(env))
			assert.Equal(t, tt.wantFlags, flags)
		})
	}
}

func TestUBootEnv_MarshalImage(t *testing.T) {
	t.Run("variables are sorted and NUL padded", func(t *testing.T) {
		env := NewUBootEnv()
		require.NoError(t, env.Set("b", "2"))
		require.NoError(t, env.Set("a", "1"))
		for _, redundant := range []bool{false, true} {
			img, err := env.MarshalImage(ubootTestSize, redundant, 9)
			require.NoError(t, err)
			assert.Equal(t, ubootImage(redundant, 9, "a=1\x00b=2\x00\x00"), img)
		}
	})
	t.Run("the environment and its final NUL must fit", func(t *testing.T) {
		env := NewUBootEnv()
		fits := ubootTestSize - len("CRC!v=\x00\x00")
		require.NoError(t, env.Set("v", strings.Repeat("x", fits)))
		_, err := env.MarshalImage(ubootTestSize, false, 0)
		require.NoError(t, err)
		_, err = env.MarshalImage(ubootTestSize, true, 0)
		assert.ErrorIs(t, err, ErrEnvFull, "the flags byte takes one more")
		assert.ErrorContains(t, err, "needs at least 1025 bytes of 1024")
	})
	t.Run("bad names and values are refused", func(t *testing.T) {
		env := &UBootEnv{}
		assert.ErrorContains(t, env.Set("", "x"), "empty name")
		assert.ErrorContains(t, env.Set("a=b", "x"), "'='")
		assert.ErrorContains(t, env.Set("a", "x\x00"), "NUL")
		assert.Empty(t, env.Names())
	})
}

// ubootFixture is a redundant or single environment in temporary files,
// with a config file for the fw_* tools.
type ubootFixture struct {
	cfg     UBootEnvConfig
	cfgPath string
}

// newUBootFixture lays out copies in zeroed temporary files. layout is
// "single" (a whole file), "single region" (a region of a larger file),
// "two files" or "one file" (two regions of one file).
func newUBootFixture(t *testing.T, layout string) ubootFixture {
	t.Helper()
	dir := t.TempDir()
	var locs []UBootEnvLocation
	switch layout {
	case "single":
		locs = []UBootEnvLocation{{Device: filepath.Join(dir, "env"), Size: ubootTestSize}}
	case "single region":
		locs = []UBootEnvLocation{
			{Device: filepath.Join(dir, "disk"), Offset: 0x1000, Size: ubootTestSize},
		}
	case "two files":
		locs = []UBootEnvLocation{
			{Device: filepath.Join(dir, "env1"), Size: ubootTestSize},
			{Device: filepath.Join(dir, "env2"), Size: ubootTestSize},
		}
	case "one file":
		locs = []UBootEnvLocation{
			{Device: filepath.Join(dir, "disk"), Offset: 0x1000, Size: ubootTestSize},
			{Device: filepath.Join(dir, "disk"), Offset: 0x2000, Size: ubootTestSize},
		}
	default:
		t.Fatalf("unknown layout %q", layout)
	}

	var text strings.Builder
	for _, l := range locs {
		fmt.Fprintf(&text, "%s %#x %#x\n", l.Device, l.Offset, l.Size)
		// A copy that is a whole file is replaced by rename; one inside a
		// larger file (as on a disk) is written in place.
		size := l.Size
		if l.Offset > 0 {
			size = 0x3000
		}
		require.NoError(t, os.WriteFile(l.Device, make([]byte, size), 0o644))
	}
	cfgPath := filepath.Join(dir, "fw_env.config")
	require.NoError(t, os.WriteFile(cfgPath, []byte(text.String()), 0o644))
	cfg, err := ReadFWEnvConfig(cfgPath)
	require.NoError(t, err)
	require.Equal(t, locs, cfg.Copies)
	return ubootFixture{cfg: cfg, cfgPath: cfgPath}
}

// copyBytes reads copy i as stored.
func (f ubootFixture) copyBytes(t *testing.T, i int) []byte {
	t.Helper()
	l := f.cfg.Copies[i]
	data, err := os.ReadFile(l.Device)
	require.NoError(t, err)
	require.GreaterOrEqual(t, int64(len(data)), l.Offset+l.Size)
	return data[l.Offset : l.Offset+l.Size]
}

// putCopy stores img as copy i.
func (f ubootFixture) putCopy(t *testing.T, i int, img []byte) {
	t.Helper()
	l := f.cfg.Copies[i]
	file, err := os.OpenFile(l.Device, os.O_WRONLY, 0)
	require.NoError(t, err)
	_, err = file.WriteAt(img, l.Offset)
	require.NoError(t, err)
	require.NoError(t, file.Close())
}

// fwTool runs fw_printenv or fw_setenv on the fixture's config.
func (f ubootFixture) fwTool(t *testing.T, tool string, args ...string) (string, error) {
	t.Helper()
	var stdout, stderr bytes.Buffer
	cmd := exec.Command(requireTool(t, tool), append([]string{"-c", f.cfgPath}, args...)...)
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	if err != nil {
		err = fmt.Errorf("%s: %w: %s", tool, err, stderr.String())
	}
	return stdout.String(), err
}

// ubootLayouts are the fixture layouts every interop test runs on.
var ubootLayouts = []string{"single", "single region", "two files", "one file"}

func TestReadUBootEnv_CopySelection(t *testing.T) {
	tests := []struct {
		name             string
		flags1, flags2   byte
		corrupt1, corr2  bool
		want             string
		wantErrSubstring string
	}{
		{name: "the larger counter wins", flags1: 1, flags2: 2, want: "two"},
		{name: "the first copy can be newer", flags1: 2, flags2: 1, want: "one"},
		{name: "0 is newer than 255", flags1: 255, flags2: 0, want: "two"},
		{name: "0 is newer than 255 in the first copy", flags1: 0, flags2: 255, want: "one"},
		{name: "254 is newer than 0", flags1: 254, flags2: 0, want: "one"},
		{name: "equal counters pick the first copy", flags1: 5, flags2: 5, want: "one"},
		{name: "a bad crc loses to an older copy", flags1: 1, flags2: 2, corr2: true, want: "one"},
		{
			name:   "a bad first copy leaves the second",
			flags1: 3, flags2: 2, corrupt1: true, want: "two",
		},
		{
			name: "two bad copies are corrupt", flags1: 1, flags2: 2, corrupt1: true, corr2: true,
			wantErrSubstring: "both copies are unusable",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newUBootFixture(t, "two files")
			for i, c := range []struct {
				flags   byte
				corrupt bool
				v       string
			}{{tt.flags1, tt.corrupt1, "one"}, {tt.flags2, tt.corr2, "two"}} {
				img := ubootImage(true, c.flags, "v="+c.v+"\x00\x00")
				if c.corrupt {
					img[0] ^= 0xff
				}
				f.putCopy(t, i, img)
			}

			env, err := ReadUBootEnv(f.cfg)
			out, toolErr := f.fwTool(t, "fw_printenv", "v")
			if tt.wantErrSubstring != "" {
				require.ErrorIs(t, err, ErrCorruptEnv)
				assert.ErrorContains(t, err, tt.wantErrSubstring)
				assert.ErrorContains(t, err, f.cfg.Copies[0].Device+"@0x0")
				assert.ErrorContains(t, err, f.cfg.Copies[1].Device+"@0x0")
				assert.Error(t, toolErr, "fw_printenv agrees")
				return
			}
			require.NoError(t, err)
			assert.Equal(t, map[string]string{"v": tt.want}, ubootVars(env))
			require.NoError(t, toolErr)
			assert.Equal(t, "v="+tt.want+"\n", out, "fw_printenv agrees")
		})
	}
}

func TestWriteUBootEnv(t *testing.T) {
	for _, layout := range ubootLayouts {
		t.Run(layout, func(t *testing.T) {
			f := newUBootFixture(t, layout)
			env := NewUBootEnv()
			require.NoError(t, env.Set("round", "0"))
			require.NoError(t, WriteUBootEnv(f.cfg, env), "the first write needs no valid copy")

			for round := 1; round <= 300; round++ {
				var before [][]byte
				_, cur, err := readUBootEnv(f.cfg)
				require.NoError(t, err)
				for i := range f.cfg.Copies {
					before = append(before, f.copyBytes(t, i))
				}

				require.NoError(t, env.Set("round", fmt.Sprint(round)))
				require.NoError(t, WriteUBootEnv(f.cfg, env))

				got, newCur, err := readUBootEnv(f.cfg)
				require.NoError(t, err)
				require.Equal(t, fmt.Sprint(round), ubootVars(got)["round"])
				if !f.cfg.Redundant() {
					continue
				}
				require.Equal(t, 1-cur, newCur, "round %d writes the other copy", round)
				require.Equal(t, before[cur], f.copyBytes(t, cur),
					"round %d leaves the previously valid copy byte-identical", round)
				require.Equal(t, before[cur][4]+1, f.copyBytes(t, newCur)[4],
					"round %d increments the flags counter, wrapping", round)
			}
		})
	}
}

func TestUBootEnv_InteropFwSetenvWritesWeRead(t *testing.T) {
	requireTool(t, "fw_setenv")
	for _, layout := range ubootLayouts {
		t.Run(layout, func(t *testing.T) {
			f := newUBootFixture(t, layout)
			defaults := filepath.Join(t.TempDir(), "defaults")
			require.NoError(t, os.WriteFile(defaults, []byte("bootdelay=3\n"), 0o644))
			_, err := f.fwTool(t, "fw_setenv", "-f", defaults, "first", "1")
			require.NoError(t, err)

			values := map[string]string{
				"bootdelay": "3", "first": "1", "spaces": "a b  c", "equals": "k=v",
				"BOOT_ORDER": "B A", "BOOT_A_LEFT": "3", "long": strings.Repeat("L", 500),
			}
			for _, name := range []string{"spaces", "equals", "BOOT_ORDER", "BOOT_A_LEFT", "long"} {
				_, err := f.fwTool(t, "fw_setenv", name, values[name])
				require.NoError(t, err)
			}
			env, err := ReadUBootEnv(f.cfg)
			require.NoError(t, err)
			assert.Equal(t, values, ubootVars(env))

			// fw_setenv with a name alone deletes the variable.
			_, err = f.fwTool(t, "fw_setenv", "long")
			require.NoError(t, err)
			env, err = ReadUBootEnv(f.cfg)
			require.NoError(t, err)
			_, ok := env.Get("long")
			assert.False(t, ok)
		})
	}
}

func TestUBootEnv_InteropWeWriteFwPrintenvReads(t *testing.T) {
	requireTool(t, "fw_printenv")
	for _, layout := range ubootLayouts {
		t.Run(layout, func(t *testing.T) {
			f := newUBootFixture(t, layout)
			env := NewUBootEnv()
			vars := map[string]string{
				"b": "2", "a": "1", "spaces": "x y", "equals": "k=v=w", "nl": "1\n2", "empty": "",
			}
			for n, v := range vars {
				require.NoError(t, env.Set(n, v))
			}
			want := "a=1\nb=2\nempty=\nequals=k=v=w\nnl=1\n2\nspaces=x y\n"

			// Alternate writers so each reads what the other wrote.
			for round := range 4 {
				require.NoError(t, WriteUBootEnv(f.cfg, env))
				out, err := f.fwTool(t, "fw_printenv")
				require.NoError(t, err)
				assert.Equal(t, want, out, "round %d", round)

				_, err = f.fwTool(t, "fw_setenv", "tool", fmt.Sprint(round))
				require.NoError(t, err)
				env, err = ReadUBootEnv(f.cfg)
				require.NoError(t, err)
				env.Unset("tool")
			}
		})
	}
}

func TestUBootEnv_InteropCorruptCopy(t *testing.T) {
	requireTool(t, "fw_printenv")
	for _, layout := range []string{"two files", "one file"} {
		t.Run(layout, func(t *testing.T) {
			f := newUBootFixture(t, layout)
			env := NewUBootEnv()
			require.NoError(t, env.Set("v", "old"))
			require.NoError(t, WriteUBootEnv(f.cfg, env))
			require.NoError(t, env.Set("v", "new"))
			require.NoError(t, WriteUBootEnv(f.cfg, env))

			// Damage the newer copy: both readers fall back to the older.
			_, cur, err := readUBootEnv(f.cfg)
			require.NoError(t, err)
			img := f.copyBytes(t, cur)
			img[ubootTestSize-1] ^= 0x55
			f.putCopy(t, cur, img)

			got, err := ReadUBootEnv(f.cfg)
			require.NoError(t, err)
			assert.Equal(t, "old", ubootVars(got)["v"])
			out, err := f.fwTool(t, "fw_printenv", "v")
			require.NoError(t, err)
			assert.Equal(t, "v=old\n", out)

			// Damage the other too: nothing is readable.
			img = f.copyBytes(t, 1-cur)
			img[10] ^= 0x55
			f.putCopy(t, 1-cur, img)
			_, err = ReadUBootEnv(f.cfg)
			require.ErrorIs(t, err, ErrCorruptEnv)
			assert.ErrorContains(t, err, "both copies are unusable")
			assert.ErrorContains(t, err, "crc")
		})
	}
}

func FuzzUBootEnv(f *testing.F) {
	f.Add(ubootImage(false, 0, "a=1\x00b=2\x00\x00"), false)
	f.Add(ubootImage(true, 3, "BOOT_ORDER=A B\x00BOOT_A_LEFT=3\x00\x00"), true)
	f.Add(ubootImage(true, 3, "bad\x00\x00"), true)
	f.Add(make([]byte, 32), false)
	f.Fuzz(func(t *testing.T, img []byte, redundant bool) {
		// Fix the CRC of most inputs so the fuzzer reaches the data parser.
		hdr := 4
		if redundant {
			hdr = 5
		}
		if len(img) > hdr && img[0]&1 == 0 {
			binary.LittleEndian.PutUint32(img, crc32.ChecksumIEEE(img[hdr:]))
		}

		env, flags, err := ParseUBootEnvImage(img, redundant)
		if err != nil {
			require.ErrorIs(t, err, ErrCorruptEnv)
			return
		}
		again, err := env.MarshalImage(len(img), redundant, flags)
		if err != nil {
			// Sorting cannot grow the data, but a last entry that ended
			// the area without the final NUL needs one more byte.
			require.ErrorIs(t, err, ErrEnvFull)
			return
		}
		env2, flags2, err := ParseUBootEnvImage(again, redundant)
		require.NoError(t, err)
		assert.Equal(t, ubootVars(env), ubootVars(env2))
		assert.Equal(t, flags, flags2)
		third, err := env2.MarshalImage(len(img), redundant, flags2)
		require.NoError(t, err)
		assert.Equal(t, again, third, "encoding is stable")
	})
}
