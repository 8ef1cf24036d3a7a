package main

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/BurntSushi/toml"
)

// DefaultConfigPath is where rota-client reads its configuration.
const DefaultConfigPath = "/etc/rota/client.toml"

// maxConfigSize caps the configuration file.
const maxConfigSize = 1 << 20

// config is the rota-client configuration file (TOML). Relative paths are
// relative to the file's directory.
type config struct {
	// Server is the server's base URL; required.
	Server string `toml:"server"`

	// SystemConfig is the device configuration (slots, boot loader, data
	// directory); default /etc/rota/system.toml.
	SystemConfig string `toml:"system-config"`

	// Keyring is the file of trusted bundle keys; default the device
	// configuration's [install] keyring.
	Keyring string `toml:"keyring"`

	// DeviceKey is the device's Ed25519 key, created on first start;
	// default DATA/device.key.
	DeviceKey string `toml:"device-key"`

	// EnrollmentToken asks the server to admit the device at once.
	EnrollmentToken string `toml:"enrollment-token"`

	// Identity holds identity attributes; default the machine ID.
	Identity map[string]string `toml:"identity"`

	// CAFile, CertFile and KeyFile configure TLS.
	CAFile   string `toml:"ca-file"`
	CertFile string `toml:"cert-file"`
	KeyFile  string `toml:"key-file"`

	// InventoryDir, HealthDir and HooksDir hold executables.
	InventoryDir string `toml:"inventory-dir"`
	HealthDir    string `toml:"health-dir"`
	HooksDir     string `toml:"hooks-dir"`

	// RequireApproval and DownloadOnly hold updates before the reboot.
	RequireApproval bool `toml:"require-approval"`
	DownloadOnly    bool `toml:"download-only"`

	// RebootCommand reboots the device; default ["systemctl", "reboot"].
	RebootCommand []string `toml:"reboot-command"`

	// LogFormat is "text" (default) or "json"; LogLevel is debug, info
	// (default), warn or error.
	LogFormat string `toml:"log-format"`
	LogLevel  string `toml:"log-level"`
}

func loadConfig(path string) (*config, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("read configuration: %w", err)
	}
	defer f.Close()
	b := make([]byte, maxConfigSize+1)
	n, _ := f.Read(b)
	if n > maxConfigSize {
		return nil, fmt.Errorf("read configuration %s: larger than %d bytes", path, maxConfigSize)
	}
	var c config
	md, err := toml.Decode(string(b[:n]), &c)
	if err != nil {
		return nil, fmt.Errorf("parse configuration %s: %w", path, err)
	}
	if und := md.Undecoded(); len(und) > 0 {
		keys := make([]string, len(und))
		for i, k := range und {
			keys[i] = k.String()
		}
		return nil, fmt.Errorf("configuration %s: unknown keys %s", path, strings.Join(keys, ", "))
	}
	if err := c.complete(filepath.Dir(path)); err != nil {
		return nil, fmt.Errorf("configuration %s: %w", path, err)
	}
	return &c, nil
}

// complete checks c and fills in defaults.
func (c *config) complete(dir string) error {
	if c.Server == "" {
		return errors.New("server is required")
	}
	if c.SystemConfig == "" {
		c.SystemConfig = "/etc/rota/system.toml"
	}
	if len(c.RebootCommand) == 0 {
		c.RebootCommand = []string{"systemctl", "reboot"}
	}
	switch c.LogFormat {
	case "":
		c.LogFormat = "text"
	case "text", "json":
	default:
		return fmt.Errorf("log-format %q: want text or json", c.LogFormat)
	}
	switch c.LogLevel {
	case "":
		c.LogLevel = "info"
	case "debug", "info", "warn", "error":
	default:
		return fmt.Errorf("log-level %q: want debug, info, warn or error", c.LogLevel)
	}
	for _, p := range []*string{&c.SystemConfig, &c.Keyring, &c.DeviceKey, &c.CAFile,
		&c.CertFile, &c.KeyFile, &c.InventoryDir, &c.HealthDir, &c.HooksDir} {
		if *p != "" && !filepath.IsAbs(*p) {
			*p = filepath.Join(dir, *p)
		}
	}
	return nil
}
