package main

import (
	"context"
	"os"
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
	testscript.Run(t, testscript.Params{Dir: "testdata/script"})
}
