package main

import (
	"context"
	"math/rand/v2"
	"os"
	"strconv"
	"testing"

	"github.com/rogpeppe/go-internal/testscript"
)

// TestMain lets the test binary act as the rota command inside scripts.
func TestMain(m *testing.M) {
	testscript.Main(m, map[string]func(){
		"rota": func() {
			os.Exit(run(context.Background(), &cliEnv{
				stdin:  os.Stdin,
				stdout: os.Stdout,
				stderr: os.Stderr,
				getenv: os.Getenv,
			}, os.Args[1:]))
		},
	})
}

// TestScripts runs the command-line scenarios in testdata/script.
func TestScripts(t *testing.T) {
	testscript.Run(t, testscript.Params{
		Dir: "testdata/script",
		Cmds: map[string]func(ts *testscript.TestScript, neg bool, args []string){
			"mkimage": cmdMkimage,
			"corrupt": cmdCorrupt,
		},
	})
}

// cmdMkimage writes a compressible pseudo-random file:
// mkimage FILE SIZE [SEED].
func cmdMkimage(ts *testscript.TestScript, neg bool, args []string) {
	if neg || len(args) < 2 || len(args) > 3 {
		ts.Fatalf("usage: mkimage FILE SIZE [SEED]")
	}
	size, err := strconv.Atoi(args[1])
	ts.Check(err)
	seed := uint64(1)
	if len(args) == 3 {
		seed, err = strconv.ParseUint(args[2], 10, 64)
		ts.Check(err)
	}
	r := rand.New(rand.NewPCG(seed, seed))
	b := make([]byte, size)
	for i := range b {
		if i%7 == 0 {
			b[i] = byte(r.Uint32())
		}
	}
	ts.Check(os.WriteFile(ts.MkAbs(args[0]), b, 0o644))
}

// cmdCorrupt flips one byte of a file: corrupt FILE OFFSET, where a
// negative offset counts from the end.
func cmdCorrupt(ts *testscript.TestScript, neg bool, args []string) {
	if neg || len(args) != 2 {
		ts.Fatalf("usage: corrupt FILE OFFSET")
	}
	p := ts.MkAbs(args[0])
	b, err := os.ReadFile(p)
	ts.Check(err)
	off, err := strconv.Atoi(args[1])
	ts.Check(err)
	if off < 0 {
		off += len(b)
	}
	b[off] ^= 0xff
	ts.Check(os.WriteFile(p, b, 0o644))
}
