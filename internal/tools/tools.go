//go:build tools

// Package tools pins modules that the repository uses before any package
// imports them, so that go mod tidy keeps them.
package tools

import (
	_ "github.com/BurntSushi/toml"
	_ "github.com/hashicorp/go-retryablehttp"
	_ "github.com/rogpeppe/go-internal/testscript"
	_ "github.com/stretchr/testify/require"
	_ "golang.org/x/sys/unix"
	_ "golang.org/x/term"
)
