package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/rotaupdate/rota"
	"github.com/rotaupdate/rota/bundle"
	"github.com/rotaupdate/rota/internal/cli"
	"github.com/rotaupdate/rota/poll"
	"github.com/rotaupdate/rota/slot"
)

// simConfig is the device configuration of a simulated device: two file
// slots and the file boot loader, under the device's own directory.
const simConfig = `compatible = %q
data-dir = "data"

[bootloader]
backend = "file"

[[slot]]
name = "rootfs.0"
class = "rootfs"
device = "rootfs-a.img"
bootname = "A"

[[slot]]
name = "rootfs.1"
class = "rootfs"
device = "rootfs-b.img"
bootname = "B"
`

// simOptions are the flags of rota-client simulate.
type simOptions struct {
	server     string
	dir        string
	devices    int
	compatible string
	keyring    string
	token      string
	prefix     string
	badVersion string
	poll       time.Duration
	log        *slog.Logger
}

func runSimulate(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("simulate", stderr)
	var o simOptions
	fs.StringVar(&o.server, "server", "", "server base `URL`")
	fs.StringVar(&o.dir, "dir", "rota-sim", "`directory` for the devices' files")
	fs.IntVar(&o.devices, "devices", 10, "number of simulated devices")
	fs.StringVar(&o.compatible, "compatible", "rota-sim", "the devices' compatible string")
	fs.StringVar(&o.keyring, "keyring", "", "trusted bundle key `file`s, comma-separated")
	fs.StringVar(&o.token, "enrollment-token", "", "enrollment token for automatic admission")
	fs.StringVar(&o.prefix, "serial-prefix", "sim-", "serial number prefix")
	fs.StringVar(&o.badVersion, "fail-health", "",
		"comma-separated `versions` whose health check fails on every device")
	fs.DurationVar(&o.poll, "poll", 0, "override the server's poll interval (0 keeps it)")
	format := fs.String("log-format", "text", "text or json")
	level := fs.String("log-level", "info", "debug, info, warn or error")
	if err := parse(fs, args); err != nil {
		return err
	}
	if o.server == "" || o.keyring == "" || o.devices < 1 {
		return fmt.Errorf("%w: --server, --keyring and --devices >= 1 are required", errUsage)
	}
	o.log = cli.NewLogger(stderr, *format, *level)
	kr, err := bundle.LoadKeyring(strings.Split(o.keyring, ",")...)
	if err != nil {
		return err
	}
	o.log.Info("starting simulated devices", "devices", o.devices, "server", o.server)
	var wg sync.WaitGroup
	errs := make(chan error, o.devices)
	for i := range o.devices {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := simulateDevice(ctx, o, kr, i); err != nil && ctx.Err() == nil {
				errs <- fmt.Errorf("device %d: %w", i, err)
			}
		}()
	}
	wg.Wait()
	close(errs)
	var all []error
	for err := range errs {
		all = append(all, err)
	}
	return errors.Join(all...)
}

// simulateDevice runs one simulated device until ctx ends: an agent that,
// when it asks for a reboot, is stopped while the simulated boot loader
// boots, then started again, as on real hardware.
func simulateDevice(ctx context.Context, o simOptions, kr *bundle.Keyring, i int) error {
	serial := fmt.Sprintf("%s%05d", o.prefix, i)
	dir := filepath.Join(o.dir, serial)
	if err := provision(dir, o.compatible); err != nil {
		return err
	}
	log := o.log.With("device", serial)
	key, err := poll.LoadOrCreateKey(filepath.Join(dir, "data", "device.key"))
	if err != nil {
		return err
	}
	client, err := poll.New(poll.Config{
		ServerURL:       o.server,
		Key:             key,
		Identity:        map[string]string{"serial": serial},
		EnrollmentToken: o.token,
		Logger:          log,
	})
	if err != nil {
		return err
	}
	// Devices start at random times, as a fleet does.
	if !sleep(ctx, time.Duration(rand.Int64N(int64(time.Second)))) {
		return nil
	}
	if err := admit(ctx, client, log, false); err != nil {
		return err
	}
	inv := map[string]string{"os": "rota-sim", "serial": serial, "hardware": "simulated"}
	if err := client.Inventory(ctx, inv); err != nil {
		log.Warn("send inventory", "err", err)
	}
	bad := map[string]bool{}
	for _, v := range strings.Split(o.badVersion, ",") {
		if v != "" {
			bad[v] = true
		}
	}
	var server rota.Server = rota.PollServer{Client: client}
	if o.poll > 0 {
		server = fixedPoll{Server: server, every: o.poll}
	}
	for ctx.Err() == nil {
		cfg, err := slot.LoadConfig(filepath.Join(dir, "system.toml"))
		if err != nil {
			return err
		}
		sys, err := slot.Open(cfg, slot.WithCmdline(filepath.Join(dir, "cmdline")))
		if err != nil {
			return err
		}
		agent, err := rota.NewAgent(rota.AgentOptions{
			System:   sys,
			Server:   server,
			Keyring:  kr,
			Rebooter: noopRebooter{},
			Logger:   log,
			HealthCheck: func(ctx context.Context, version string) error {
				if bad[version] {
					return fmt.Errorf("simulated health check fails for version %s", version)
				}
				return nil
			},
		})
		if err != nil {
			return err
		}
		err = agent.Run(ctx)
		if !errors.Is(err, rota.ErrRebooting) {
			return err
		}
		booted, err := sys.Bootloader().(*slot.FileBootloader).SimulateBoot(ctx)
		if err != nil {
			return err
		}
		log.Info("simulated reboot", "booted", booted)
	}
	return nil
}

// provision creates a simulated device's files unless they exist.
func provision(dir, compatible string) error {
	if err := os.MkdirAll(filepath.Join(dir, "data"), 0o755); err != nil {
		return err
	}
	files := map[string]string{
		"system.toml":  fmt.Sprintf(simConfig, compatible),
		"cmdline":      "",
		"rootfs-a.img": "factory image\n",
		"rootfs-b.img": "",
	}
	for name, content := range files {
		p := filepath.Join(dir, name)
		if _, err := os.Stat(p); err == nil {
			continue
		}
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			return err
		}
	}
	return nil
}

// noopRebooter lets the simulation perform the reboot itself.
type noopRebooter struct{}

func (noopRebooter) Reboot(context.Context) error { return nil }

// fixedPoll overrides the server's poll interval.
type fixedPoll struct {
	rota.Server
	every time.Duration
}

func (f fixedPoll) Check(ctx context.Context, req poll.CheckRequest) (*poll.CheckResponse, error) {
	r, err := f.Server.Check(ctx, req)
	if err == nil {
		c := *r
		c.PollInterval = max(1, int(f.every/time.Second))
		r = &c
	}
	return r, err
}

func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}
