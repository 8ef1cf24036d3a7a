package main

import (
	"flag"
	"io"
	"net/netip"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func parseConfig(t *testing.T, args []string, env map[string]string) (*config, error) {
	t.Helper()
	var c config
	fs := flag.NewFlagSet("rota-server", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	c.flags(fs)
	if err := parseFlags(fs, args, func(k string) string { return env[k] }); err != nil {
		return nil, err
	}
	return &c, c.check()
}

func TestConfigDefaults(t *testing.T) {
	c, err := parseConfig(t, nil, nil)
	require.NoError(t, err)
	assert.Equal(t, ":8080", c.listen)
	assert.Equal(t, "rota-data", c.data)
	assert.Equal(t, filepath.Join("rota-data", "rota.db"), c.database)
	assert.False(t, c.postgres())
	assert.Equal(t, 5*time.Minute, c.pollInterval)
}

func TestConfigEnvironment(t *testing.T) {
	env := map[string]string{
		"ROTA_LISTEN":        "127.0.0.1:9000",
		"ROTA_DATA":          "/var/lib/rota",
		"ROTA_DATABASE":      "postgres://rota:secret@db/rota",
		"ROTA_POLL_INTERVAL": "30s",
		"ROTA_NO_SCHEDULER":  "true",
	}
	c, err := parseConfig(t, []string{"--listen", ":7000"}, env)
	require.NoError(t, err)
	assert.Equal(t, ":7000", c.listen, "a flag wins over its variable")
	assert.Equal(t, "/var/lib/rota", c.data)
	assert.True(t, c.postgres())
	assert.Equal(t, 30*time.Second, c.pollInterval)
	assert.True(t, c.noScheduler)
	assert.Equal(t, "postgres://rota:xxxxx@db/rota", redactURL(c.database))
}

func TestConfigErrors(t *testing.T) {
	for _, tc := range []struct {
		name string
		args []string
		env  map[string]string
		want string
	}{
		{"unknown flag", []string{"--nope"}, nil, "flag provided but not defined"},
		{"stray argument", []string{"extra"}, nil, `unexpected argument "extra"`},
		{"bad variable", nil, map[string]string{"ROTA_POLL_INTERVAL": "soon"},
			`ROTA_POLL_INTERVAL="soon"`},
		{"cert without key", []string{"--tls-cert", "c.pem"}, nil,
			"--tls-cert and --tls-key go together"},
		{"tiny poll interval", []string{"--poll-interval", "10ms"}, nil,
			"--poll-interval under 1s"},
		{"bad log format", []string{"--log-format", "xml"}, nil, "want text or json"},
		{"empty data", []string{"--data", ""}, nil, "--data is empty"},
		{"no upload", []string{"--max-upload", "0"}, nil, "--max-upload must be positive"},
		{"a host name as trusted proxy", []string{"--trusted-proxies", "10.0.0.0/8,lb.example"},
			nil, `--trusted-proxies: "lb.example" is not an IP address or CIDR prefix`},
		{"a prefix too long", []string{"--trusted-proxies", "10.0.0.0/33"}, nil,
			`"10.0.0.0/33" is not an IP address or CIDR prefix`},
		{"a trusted proxy with a zone", nil,
			map[string]string{"ROTA_TRUSTED_PROXIES": "fe80::1%eth0"},
			`"fe80::1%eth0" is not an IP address or CIDR prefix`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := parseConfig(t, tc.args, tc.env)
			require.Error(t, err)
			assert.Contains(t, err.Error(), tc.want)
		})
	}
}

func TestConfigTrustedProxies(t *testing.T) {
	tests := []struct {
		name string
		args []string
		env  map[string]string
		want []netip.Prefix
	}{
		{"none by default", nil, nil, nil},
		{"prefixes and addresses", []string{"--trusted-proxies",
			"10.0.0.0/8, 192.0.2.7,,2001:db8::/32 , 2001:db8::1"}, nil,
			[]netip.Prefix{netip.MustParsePrefix("10.0.0.0/8"),
				netip.MustParsePrefix("192.0.2.7/32"), netip.MustParsePrefix("2001:db8::/32"),
				netip.MustParsePrefix("2001:db8::1/128")}},
		{"a prefix is masked to its length", []string{"--trusted-proxies", "10.1.2.3/8"},
			nil, []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")}},
		{"from the environment", nil, map[string]string{"ROTA_TRUSTED_PROXIES": "172.16.0.0/12"},
			[]netip.Prefix{netip.MustParsePrefix("172.16.0.0/12")}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := parseConfig(t, tt.args, tt.env)
			require.NoError(t, err)
			assert.Equal(t, tt.want, c.proxies)
		})
	}
}

func TestKeyFiles(t *testing.T) {
	dir := t.TempDir()
	keys := filepath.Join(dir, "keys")
	require.NoError(t, mkdirWrite(filepath.Join(keys, "a.pub"), "x"))
	require.NoError(t, mkdirWrite(filepath.Join(keys, "a.key"), "secret"))
	c := &config{data: dir, keyring: " extra.pub, ,other.pub"}
	files, err := c.keyFiles()
	require.NoError(t, err)
	assert.Equal(t, []string{"extra.pub", "other.pub", filepath.Join(keys, "a.pub")}, files)
}

func mkdirWrite(path, content string) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	return os.WriteFile(path, []byte(content), 0o644)
}
