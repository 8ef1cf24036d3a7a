package slot

import (
	"bytes"
	"context"
	"encoding/binary"
	"os"
	"path/filepath"
	"testing"
	"unicode/utf16"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// encodeLoadOption builds an EFI_LOAD_OPTION.
func encodeLoadOption(attrs uint32, desc string, filePath, optional []byte) []byte {
	var b bytes.Buffer
	_ = binary.Write(&b, binary.LittleEndian, attrs)
	_ = binary.Write(&b, binary.LittleEndian, uint16(len(filePath)))
	_ = binary.Write(&b, binary.LittleEndian, append(utf16.Encode([]rune(desc)), 0))
	b.Write(filePath)
	b.Write(optional)
	return b.Bytes()
}

// efiVarFile is an efivarfs file: attributes, then data.
func efiVarFile(data []byte) []byte {
	return append([]byte{efiVarBootAttrs, 0, 0, 0}, data...)
}

func uint16s(v ...uint16) []byte {
	out := make([]byte, 2*len(v))
	for i, x := range v {
		binary.LittleEndian.PutUint16(out[2*i:], x)
	}
	return out
}

// devicePathEnd is an end-of-device-path node.
var devicePathEnd = []byte{0x7f, 0xff, 0x04, 0x00}

// newFakeEFIVars writes Boot0001 "ROTA A", Boot0002 "ROTA B", Boot0003
// "UEFI Shell" and BootOrder 0003,0001,0002 into a fresh directory.
func newFakeEFIVars(t *testing.T) *EFI {
	t.Helper()
	e := &EFI{
		Dir:          t.TempDir(),
		Descriptions: map[string]string{"A": "ROTA A", "B": "ROTA B"},
	}
	for n, desc := range map[uint16]string{1: "ROTA A", 2: "ROTA B", 3: "UEFI Shell"} {
		writeTestVar(t, e, "Boot"+hex4(n), efiVarFile(encodeLoadOption(1, desc, devicePathEnd, nil)))
	}
	writeTestVar(t, e, "BootOrder", efiVarFile(uint16s(3, 1, 2)))
	return e
}

func hex4(n uint16) string {
	const digits = "0123456789ABCDEF"
	return string([]byte{digits[n>>12], digits[n>>8&0xf], digits[n>>4&0xf], digits[n&0xf]})
}

func writeTestVar(t *testing.T, e *EFI, name string, raw []byte) {
	t.Helper()
	require.NoError(t, os.WriteFile(e.varPath(name), raw, 0o644))
}

func readTestVar(t *testing.T, e *EFI, name string) []byte {
	t.Helper()
	raw, err := os.ReadFile(e.varPath(name))
	require.NoError(t, err)
	return raw
}

func TestEFI_Scripts(t *testing.T) {
	scripts := []struct {
		name   string
		script string
	}{
		{"the first slot in BootOrder is primary", `
			primary A
			state A good
			state B good
			boot -`},
		{"an active slot boots once through BootNext", `
			active B 3
			primary B
			bad B
			state B bad
			primary A
			active B
			state B 1
			boot B
			state B bad
			boot -`},
		{"a slot marked good moves to the front of BootOrder", `
			bad B
			active B
			boot B
			good B
			state B good
			primary B
			boot B`},
	}
	for _, tc := range scripts {
		t.Run(tc.name, func(t *testing.T) {
			runBootScript(t, newFakeEFIVars(t), tc.script)
		})
	}
}

func TestEFI_Variables(t *testing.T) {
	ctx := context.Background()
	e := newFakeEFIVars(t)
	e.Descriptions = nil
	e.Numbers = map[string]uint16{"A": 1, "B": 2}

	require.NoError(t, e.Mark(ctx, "B", Mark{Kind: MarkActive}))
	assert.Equal(t, efiVarFile(uint16s(2)), readTestVar(t, e, "BootNext"))

	require.NoError(t, e.Mark(ctx, "B", Mark{Kind: MarkGood}))
	assert.Equal(t, efiVarFile(uint16s(2, 3, 1)), readTestVar(t, e, "BootOrder"))

	require.NoError(t, e.Mark(ctx, "B", Mark{Kind: MarkBad}))
	assert.Equal(t, efiVarFile(uint16s(3, 1)), readTestVar(t, e, "BootOrder"))
	assert.NoFileExists(t, e.varPath("BootNext"), "BootNext naming a bad slot is cleared")
	assert.FileExists(t, e.varPath("Boot0002"), "the load option stays")

	got, err := e.SimulateBoot(ctx)
	require.NoError(t, err)
	assert.Empty(t, got, "the shell is first and is no slot")
	assert.Equal(t, []byte{efiVarCurrentAttrs, 0, 0, 0, 3, 0}, readTestVar(t, e, "BootCurrent"))
	_, err = e.Booted(ctx)
	require.ErrorIs(t, err, ErrUnknownBootname)

	require.NoError(t, e.Mark(ctx, "A", Mark{Kind: MarkActive}))
	got, err = e.SimulateBoot(ctx)
	require.NoError(t, err)
	assert.Equal(t, "A", got)
	booted, err := e.Booted(ctx)
	require.NoError(t, err)
	assert.Equal(t, "A", booted)
}

func TestEFI_Errors(t *testing.T) {
	ctx := context.Background()
	shortDesc := encodeLoadOption(1, "ROTA A", devicePathEnd, nil)[:10]
	full := encodeLoadOption(1, "ROTA A", devicePathEnd, nil)
	truncated := full[:len(full)-2]

	tests := []struct {
		name    string
		varName string
		raw     []byte
		wantErr error
	}{
		{"a variable shorter than its attributes is corrupt", "BootOrder", []byte{7, 0}, ErrCorruptEnv},
		{"an odd BootOrder is corrupt", "BootOrder", efiVarFile([]byte{1, 0, 2}), ErrCorruptEnv},
		{"a three-byte BootNext is corrupt", "BootNext", efiVarFile([]byte{1, 0, 0}), ErrCorruptEnv},
		{"an empty BootNext is corrupt", "BootNext", efiVarFile(nil), ErrCorruptEnv},
		{"an unterminated description is corrupt", "Boot0001", efiVarFile(shortDesc), ErrCorruptEnv},
		{"a file path list past the end is corrupt", "Boot0001",
			efiVarFile(truncated), ErrCorruptEnv},
		{"a variable over the cap is corrupt", "BootOrder",
			efiVarFile(make([]byte, MaxEFIVarSize)), ErrCorruptEnv},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e := newFakeEFIVars(t)
			writeTestVar(t, e, tc.varName, tc.raw)

			_, err := e.State(ctx, "A")
			require.ErrorIs(t, err, tc.wantErr)
			assert.Contains(t, err.Error(), e.varPath(tc.varName))
		})
	}

	t.Run("an unknown bootname is refused", func(t *testing.T) {
		e := newFakeEFIVars(t)
		_, err := e.State(ctx, "C")
		require.ErrorIs(t, err, ErrUnknownBootname)
		require.ErrorIs(t, e.Mark(ctx, "C", Mark{Kind: MarkGood}), ErrUnknownBootname)
	})

	t.Run("a fixed number without load option is unknown", func(t *testing.T) {
		e := newFakeEFIVars(t)
		e.Numbers = map[string]uint16{"A": 0x1234}
		_, err := e.State(ctx, "A")
		require.ErrorIs(t, err, ErrUnknownBootname)
	})

	t.Run("a description shared by two options is corrupt", func(t *testing.T) {
		e := newFakeEFIVars(t)
		writeTestVar(t, e, "Boot0009", efiVarFile(encodeLoadOption(1, "ROTA A", devicePathEnd, nil)))
		_, err := e.State(ctx, "A")
		require.ErrorIs(t, err, ErrCorruptEnv)
	})

	t.Run("a missing BootCurrent fails", func(t *testing.T) {
		_, err := newFakeEFIVars(t).Booted(ctx)
		require.ErrorIs(t, err, os.ErrNotExist)
	})

	t.Run("nothing to boot fails", func(t *testing.T) {
		e := newFakeEFIVars(t)
		writeTestVar(t, e, "BootOrder", efiVarFile(nil))
		_, err := e.SimulateBoot(ctx)
		require.ErrorIs(t, err, ErrNoBootableSlot)
	})
}

func TestParseEFILoadOption(t *testing.T) {
	tests := []struct {
		name    string
		data    []byte
		want    efiLoadOption
		wantErr bool
	}{
		{"a plain option", encodeLoadOption(1, "ROTA A", devicePathEnd, nil),
			efiLoadOption{Attributes: 1, Description: "ROTA A", FilePathList: devicePathEnd,
				OptionalData: []byte{}}, false},
		{"optional data follows the path", encodeLoadOption(9, "Ω", devicePathEnd, []byte("x")),
			efiLoadOption{Attributes: 9, Description: "Ω", FilePathList: devicePathEnd,
				OptionalData: []byte("x")}, false},
		{"an empty description", encodeLoadOption(0, "", nil, nil),
			efiLoadOption{FilePathList: []byte{}, OptionalData: []byte{}}, false},
		{"too short", []byte{1, 0, 0, 0, 0}, efiLoadOption{}, true},
		{"an odd trailing byte in the description",
			[]byte{1, 0, 0, 0, 0, 0, 'A', 0, 'B'}, efiLoadOption{}, true},
		{"an unpaired surrogate", []byte{1, 0, 0, 0, 0, 0, 0x00, 0xd8, 'A', 0, 0, 0},
			efiLoadOption{}, true},
		{"a lone low surrogate", []byte{1, 0, 0, 0, 0, 0, 0x00, 0xdc, 0, 0}, efiLoadOption{}, true},
		{"a path length past the end", []byte{1, 0, 0, 0, 9, 0, 'A', 0, 0, 0, 1}, efiLoadOption{}, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := parseEFILoadOption(tc.data)
			if tc.wantErr {
				require.Error(t, err)
				return
			}
			require.NoError(t, err)
			assert.Equal(t, tc.want, got)
		})
	}
}

func TestEFI_ClearImmutableOnOrdinaryFile(t *testing.T) {
	p := filepath.Join(t.TempDir(), "v")
	require.NoError(t, os.WriteFile(p, []byte{7, 0, 0, 0}, 0o644))
	require.NoError(t, efiClearImmutable(p))
	require.NoError(t, efiClearImmutable(p+"-missing"))
	assert.False(t, onEFIVarFS(filepath.Dir(p)))
}

func FuzzParseEFIVariable(f *testing.F) {
	f.Add(efiVarFile(encodeLoadOption(1, "ROTA A", devicePathEnd, []byte("opt"))))
	f.Add(efiVarFile(uint16s(1, 2, 3)))
	f.Add([]byte{7, 0, 0})
	f.Add([]byte{7, 0, 0, 0, 1, 0, 0, 0, 0xff, 0xff, 0, 0})

	f.Fuzz(func(t *testing.T, raw []byte) {
		_, data, err := parseEFIVariable(raw)
		if err != nil {
			return
		}
		_, _ = parseUint16s(data)
		opt, err := parseEFILoadOption(data)
		if err != nil {
			return
		}
		again := encodeLoadOption(opt.Attributes, opt.Description, opt.FilePathList, opt.OptionalData)
		if !bytes.Equal(again, data) {
			t.Fatalf("re-encoding %x gave %x", data, again)
		}
	})
}
