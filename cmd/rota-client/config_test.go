package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestLoadConfig(t *testing.T) {
	dir := t.TempDir()
	abs := func(name string) string { return filepath.Join(dir, name) }

	tests := []struct {
		name    string
		file    string
		want    *config
		wantErr string
	}{
		{
			name: "a file with only the server gets every default",
			file: `server = "https://rota.example.com"`,
			want: &config{
				Server:        "https://rota.example.com",
				SystemConfig:  "/etc/rota/system.toml",
				RebootCommand: []string{"systemctl", "reboot"},
				LogFormat:     "text",
				LogLevel:      "info",
			},
		},
		{
			name: "every key is read",
			file: `server = "https://rota.example.com"
system-config = "/etc/acme/system.toml"
keyring = "/etc/acme/keys.pub"
device-key = "/var/lib/acme/device.key"
enrollment-token = "t0k3n"
ca-file = "/etc/acme/ca.pem"
cert-file = "/etc/acme/client.pem"
key-file = "/etc/acme/client.key"
inventory-dir = "/etc/acme/inventory.d"
health-dir = "/etc/acme/health.d"
hooks-dir = "/etc/acme/hooks.d"
require-approval = true
download-only = true
reboot-command = ["/sbin/reboot", "-f"]
log-format = "json"
log-level = "debug"

[identity]
serial = "SN-42"
mac = "02:00:00:00:00:2a"
`,
			want: &config{
				Server:          "https://rota.example.com",
				SystemConfig:    "/etc/acme/system.toml",
				Keyring:         "/etc/acme/keys.pub",
				DeviceKey:       "/var/lib/acme/device.key",
				EnrollmentToken: "t0k3n",
				Identity:        map[string]string{"serial": "SN-42", "mac": "02:00:00:00:00:2a"},
				CAFile:          "/etc/acme/ca.pem",
				CertFile:        "/etc/acme/client.pem",
				KeyFile:         "/etc/acme/client.key",
				InventoryDir:    "/etc/acme/inventory.d",
				HealthDir:       "/etc/acme/health.d",
				HooksDir:        "/etc/acme/hooks.d",
				RequireApproval: true,
				DownloadOnly:    true,
				RebootCommand:   []string{"/sbin/reboot", "-f"},
				LogFormat:       "json",
				LogLevel:        "debug",
			},
		},
		{
			name: "relative paths are relative to the file's directory",
			file: `server = "https://rota.example.com"
system-config = "system.toml"
keyring = "keys/release.pub"
device-key = "../state/device.key"
ca-file = "tls/ca.pem"
cert-file = "tls/client.pem"
key-file = "tls/client.key"
inventory-dir = "inventory.d"
health-dir = "health.d"
hooks-dir = "hooks.d"
`,
			want: &config{
				Server:        "https://rota.example.com",
				SystemConfig:  abs("system.toml"),
				Keyring:       abs("keys/release.pub"),
				DeviceKey:     filepath.Join(filepath.Dir(dir), "state", "device.key"),
				CAFile:        abs("tls/ca.pem"),
				CertFile:      abs("tls/client.pem"),
				KeyFile:       abs("tls/client.key"),
				InventoryDir:  abs("inventory.d"),
				HealthDir:     abs("health.d"),
				HooksDir:      abs("hooks.d"),
				RebootCommand: []string{"systemctl", "reboot"},
				LogFormat:     "text",
				LogLevel:      "info",
			},
		},
		{
			name:    "an unknown key is refused",
			file:    "server = \"https://rota.example.com\"\npoll-interval = 60\n",
			wantErr: "unknown keys poll-interval",
		},
		{
			name: "identity attributes are free-form keys",
			file: "server = \"https://x\"\n[identity]\nanything = \"goes\"\n",
			want: &config{
				Server:        "https://x",
				SystemConfig:  "/etc/rota/system.toml",
				Identity:      map[string]string{"anything": "goes"},
				RebootCommand: []string{"systemctl", "reboot"},
				LogFormat:     "text",
				LogLevel:      "info",
			},
		},
		{
			name:    "an unknown table is refused",
			file:    "server = \"https://rota.example.com\"\n[tls]\nca = \"x\"\n",
			wantErr: "unknown keys tls",
		},
		{
			name:    "a log format other than text or json is refused",
			file:    "server = \"https://rota.example.com\"\nlog-format = \"xml\"\n",
			wantErr: `log-format "xml"`,
		},
		{
			name:    "an unknown log level is refused",
			file:    "server = \"https://rota.example.com\"\nlog-level = \"verbose\"\n",
			wantErr: `log-level "verbose"`,
		},
		{
			name:    "a file without server is refused",
			file:    "log-level = \"debug\"\n",
			wantErr: "server is required",
		},
		{
			name:    "a value of the wrong type is refused",
			file:    "server = \"https://rota.example.com\"\nrequire-approval = \"yes\"\n",
			wantErr: "parse configuration",
		},
		{
			name:    "a syntax error is refused",
			file:    "server = https://rota.example.com\n",
			wantErr: "parse configuration",
		},
		{
			name:    "a file over 1 MiB is refused",
			file:    "server = \"https://x\"\n#" + strings.Repeat("x", maxConfigSize) + "\n",
			wantErr: "larger than",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := filepath.Join(dir, "client.toml")
			require.NoError(t, os.WriteFile(p, []byte(tt.file), 0o644))
			got, err := loadConfig(p)
			if tt.wantErr != "" {
				require.ErrorContains(t, err, tt.wantErr)
				assert.Contains(t, err.Error(), p, "the error names the file")
				return
			}
			require.NoError(t, err)
			assert.Equal(t, tt.want, got)
		})
	}
}

func TestLoadConfig_MissingFile(t *testing.T) {
	_, err := loadConfig(filepath.Join(t.TempDir(), "client.toml"))
	require.ErrorIs(t, err, os.ErrNotExist)
	assert.ErrorContains(t, err, "read configuration")
}
