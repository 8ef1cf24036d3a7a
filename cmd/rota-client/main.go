// Command rota-client is the ROTA update agent for a device. It polls the
// server over HTTPS (the device opens no port), installs updates into the
// passive slots, reboots into them once and commits or rolls back.
//
//	rota-client [--config FILE] [--once]    run the agent
//	rota-client status [--json]             show the agent's and the slots' state
//	rota-client approve                     approve the reboot into a held update
//	rota-client simulate --server URL ...   run simulated devices in one process
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime/debug"
	"strings"
	"syscall"
	"time"

	"github.com/rotaupdate/rota"
	"github.com/rotaupdate/rota/bundle"
	"github.com/rotaupdate/rota/internal/cli"
	"github.com/rotaupdate/rota/poll"
	"github.com/rotaupdate/rota/slot"
)

// DefaultMemoryLimit is the Go memory limit rota-client sets unless
// GOMEMLIMIT is set: it keeps the collector tight so that the agent's
// resident memory stays small on small devices.
const DefaultMemoryLimit = 20 << 20

func main() {
	if os.Getenv("GOMEMLIMIT") == "" {
		debug.SetMemoryLimit(DefaultMemoryLimit)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	switch {
	case err == nil, errors.Is(err, flag.ErrHelp):
	case errors.Is(err, errUsage):
		fmt.Fprintln(os.Stderr, "rota-client:", err)
		os.Exit(2)
	default:
		fmt.Fprintln(os.Stderr, "rota-client:", err)
		os.Exit(1)
	}
}

var errUsage = errors.New("usage")

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	cmd := "run"
	if len(args) > 0 && !strings.HasPrefix(args[0], "-") {
		cmd, args = args[0], args[1:]
	}
	switch cmd {
	case "run":
		return runAgent(ctx, args, stderr)
	case "status":
		return runStatus(ctx, args, stdout, stderr)
	case "approve":
		return runApprove(args, stdout, stderr)
	case "simulate":
		return runSimulate(ctx, args, stdout, stderr)
	case "help":
		fmt.Fprintln(stdout, "usage: rota-client [run|status|approve|simulate] [flags]; "+
			"see rota-client COMMAND -h")
		return nil
	}
	return fmt.Errorf("%w: unknown command %q", errUsage, cmd)
}

func newFlags(name string, stderr io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet("rota-client "+name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	return fs
}

func parse(fs *flag.FlagSet, args []string) error {
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return err
		}
		return fmt.Errorf("%w: %v", errUsage, err)
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("%w: unexpected argument %q", errUsage, fs.Arg(0))
	}
	return nil
}

// device is what the daemon and the status command open.
type device struct {
	cfg    *config
	sysCfg *slot.Config
	sys    *slot.System
}

func openDevice(configPath string, log *slog.Logger) (*device, error) {
	cfg, err := loadConfig(configPath)
	if err != nil {
		return nil, err
	}
	sysCfg, err := slot.LoadConfig(cfg.SystemConfig)
	if err != nil {
		return nil, err
	}
	opts := []slot.Option{}
	if log != nil {
		opts = append(opts, slot.WithLogger(log))
	}
	sys, err := slot.Open(sysCfg, opts...)
	if err != nil {
		return nil, err
	}
	if cfg.Keyring == "" {
		cfg.Keyring = sysCfg.Install.Keyring
	}
	if cfg.DeviceKey == "" {
		cfg.DeviceKey = filepath.Join(sysCfg.DataDir, "device.key")
	}
	return &device{cfg: cfg, sysCfg: sysCfg, sys: sys}, nil
}

func runAgent(ctx context.Context, args []string, stderr io.Writer) error {
	fs := newFlags("run", stderr)
	configPath := fs.String("config", DefaultConfigPath, "configuration `file`")
	once := fs.Bool("once", false, "run one cycle (poll, and finish what it starts) and exit")
	if err := parse(fs, args); err != nil {
		return err
	}
	cfg, err := loadConfig(*configPath)
	if err != nil {
		return err
	}
	log := cli.NewLogger(stderr, cfg.LogFormat, cfg.LogLevel)
	d, err := openDevice(*configPath, log)
	if err != nil {
		return err
	}
	key, err := poll.LoadOrCreateKey(d.cfg.DeviceKey)
	if err != nil {
		return err
	}
	identity := d.cfg.Identity
	if len(identity) == 0 {
		identity = defaultIdentity()
	}
	client, err := poll.New(poll.Config{
		ServerURL:       d.cfg.Server,
		Key:             key,
		Identity:        identity,
		EnrollmentToken: d.cfg.EnrollmentToken,
		CAFile:          d.cfg.CAFile,
		CertFile:        d.cfg.CertFile,
		KeyFile:         d.cfg.KeyFile,
		Logger:          log,
	})
	if err != nil {
		return err
	}
	kr, err := bundle.LoadKeyring(d.cfg.Keyring)
	if err != nil {
		return err
	}
	agent, err := rota.NewAgent(rota.AgentOptions{
		System:          d.sys,
		Server:          rota.PollServer{Client: client},
		Keyring:         kr,
		Rebooter:        commandRebooter(d.cfg.RebootCommand),
		HealthDir:       d.cfg.HealthDir,
		HooksDir:        d.cfg.HooksDir,
		RequireApproval: d.cfg.RequireApproval,
		DownloadOnly:    d.cfg.DownloadOnly,
		Logger:          log,
	})
	if err != nil {
		return err
	}
	log.Info("rota-client started", "version", rota.Version, "server", d.cfg.Server)
	if err := admit(ctx, client, log, *once); err != nil {
		if ctx.Err() != nil {
			// Stopped while waiting for admission, as by systemctl stop.
			log.Info("rota-client stopped")
			return nil
		}
		return err
	}
	sendInventory(ctx, client, d.cfg.InventoryDir, d.sysCfg.DataDir, log)
	if *once {
		return runOnce(ctx, agent)
	}
	err = agent.Run(ctx)
	if errors.Is(err, rota.ErrRebooting) {
		log.Info("waiting for the reboot")
		<-ctx.Done()
		return nil
	}
	if ctx.Err() != nil {
		log.Info("rota-client stopped")
		return nil
	}
	return err
}

// admit authenticates until the server accepts the device. A pending
// device asks again after the server's delay.
func admit(ctx context.Context, c *poll.Client, log *slog.Logger, once bool) error {
	for {
		st, err := c.Authenticate(ctx)
		if err == nil && st.State == poll.AuthAccepted {
			return nil
		}
		if errors.Is(err, poll.ErrRejected) {
			return err
		}
		wait := rota.DefaultRetryWait
		if err == nil && st.RetryAfter > 0 {
			wait = st.RetryAfter
		}
		if once {
			if err != nil {
				return err
			}
			return fmt.Errorf("device not admitted yet (%s)", st.State)
		}
		log.Info("waiting for admission", "state", st.State, "err", err, "retry", wait)
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(poll.Jitter(wait, 0.2)):
		}
	}
}

func sendInventory(ctx context.Context, c *poll.Client, dir, dataDir string, log *slog.Logger) {
	inv, err := poll.Collector{ScriptDir: dir, DataDir: dataDir}.Collect(ctx)
	if err != nil {
		log.Warn("collect inventory", "err", err)
	}
	if len(inv) == 0 {
		return
	}
	if err := c.Inventory(ctx, inv); err != nil {
		log.Warn("send inventory", "err", err)
	}
}

// runOnce steps the agent until it has nothing to do right now.
func runOnce(ctx context.Context, a *rota.Agent) error {
	for {
		wait, err := a.Step(ctx)
		if errors.Is(err, rota.ErrRebooting) {
			return nil
		}
		if err != nil {
			return err
		}
		j, jerr := a.Journal()
		if jerr != nil {
			return jerr
		}
		if wait > 0 && (j.State == rota.StateIdle || j.State == rota.StateApproval) {
			return nil
		}
		if wait > 0 {
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-time.After(wait):
			}
		}
	}
}

// commandRebooter reboots by running a command, such as systemctl reboot.
type commandRebooter []string

func (c commandRebooter) Reboot(ctx context.Context) error {
	out, err := exec.CommandContext(ctx, c[0], c[1:]...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("run %s: %w: %s", strings.Join(c, " "), err, out)
	}
	return nil
}

func defaultIdentity() map[string]string {
	id := map[string]string{}
	if b, err := os.ReadFile("/etc/machine-id"); err == nil {
		id["machine-id"] = strings.TrimSpace(string(b))
	}
	if h, err := os.Hostname(); err == nil {
		id["hostname"] = h
	}
	return id
}

func runStatus(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("status", stderr)
	configPath := fs.String("config", DefaultConfigPath, "configuration `file`")
	asJSON := fs.Bool("json", false, "print JSON")
	if err := parse(fs, args); err != nil {
		return err
	}
	d, err := openDevice(*configPath, nil)
	if err != nil {
		return err
	}
	j, err := loadAgentJournal(d.sysCfg.DataDir)
	if err != nil {
		return err
	}
	st, err := d.sys.Status(ctx)
	if err != nil {
		return err
	}
	if *asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(map[string]any{"agent": j, "slots": st})
	}
	fmt.Fprintf(stdout, "agent state: %s\n", j.State)
	if j.Deployment != "" {
		fmt.Fprintf(stdout, "deployment:  %s (version %s, target %s)\n", j.Deployment, j.Version,
			j.Target)
	}
	if j.Checkpoint != nil {
		fmt.Fprintf(stdout, "installed:   %d bytes of image %d so far\n", j.Checkpoint.Uncompressed,
			j.Checkpoint.Image)
	}
	if j.Last != nil {
		fmt.Fprintf(stdout, "last:        %s %s: %s %s\n", j.Last.Deployment, j.Last.Version,
			j.Last.State, j.Last.Message)
	}
	for _, s := range st.Slots {
		mark := " "
		if s.Booted {
			mark = "*"
		}
		ver := "-"
		if s.Install != nil && s.Install.Version != "" {
			ver = s.Install.Version
		}
		fmt.Fprintf(stdout, "%s %-10s %-7s %-6s %s\n", mark, s.Name, s.Class, s.Boot, ver)
	}
	return nil
}

func loadAgentJournal(dataDir string) (*rota.Journal, error) {
	a := &rota.Journal{State: rota.StateIdle}
	b, err := os.ReadFile(filepath.Join(dataDir, rota.JournalFile))
	if errors.Is(err, os.ErrNotExist) {
		return a, nil
	}
	if err != nil {
		return nil, err
	}
	if err := json.Unmarshal(b, a); err != nil {
		return nil, fmt.Errorf("%w: %v", rota.ErrCorruptJournal, err)
	}
	return a, nil
}

func runApprove(args []string, stdout, stderr io.Writer) error {
	fs := newFlags("approve", stderr)
	configPath := fs.String("config", DefaultConfigPath, "configuration `file`")
	if err := parse(fs, args); err != nil {
		return err
	}
	d, err := openDevice(*configPath, nil)
	if err != nil {
		return err
	}
	// An approval left behind would let the next held update through
	// unapproved, so only an update that waits now can be approved.
	j, err := loadAgentJournal(d.sysCfg.DataDir)
	if err != nil {
		return err
	}
	if j.State != rota.StateApproval {
		return fmt.Errorf("approve: no update waits for approval (agent state %s)", j.State)
	}
	p := filepath.Join(d.sysCfg.DataDir, rota.ApprovalFile)
	if err := os.WriteFile(p, []byte(time.Now().UTC().Format(time.RFC3339)+"\n"), 0o644); err != nil {
		return err
	}
	fmt.Fprintln(stdout, "approved: the agent reboots into the held update")
	return nil
}
