// Command faultchild runs the update agent of one simulated device until
// its deployment finishes or it asks for a reboot. The agent's fault tests
// start it again and again and kill it with SIGKILL at chosen moments, as
// a device's init system and its power supply would.
//
//	ROTA_FAULT_DIR=DEV ROTA_FAULT_SERVER=URL ROTA_FAULT_KEYRING=PUB faultchild
//
// It exits 0 when the deployment finished, 3 when the agent asked for a
// reboot, and 1 on error.
package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"time"

	"github.com/rotaupdate/rota"
	"github.com/rotaupdate/rota/bundle"
	"github.com/rotaupdate/rota/poll"
	"github.com/rotaupdate/rota/slot"
)

// Exit codes.
const (
	exitDone   = 0
	exitFailed = 1
	exitReboot = 3
)

// Tunables: short waits, so that a test of hundreds of runs stays fast.
const (
	retryWait    = 5 * time.Millisecond
	syncInterval = 256 << 10
	maxSteps     = 1000
)

func main() {
	if err := run(context.Background()); err != nil {
		if errors.Is(err, rota.ErrRebooting) {
			os.Exit(exitReboot)
		}
		fmt.Fprintln(os.Stderr, "faultchild:", err)
		os.Exit(exitFailed)
	}
	os.Exit(exitDone)
}

func run(ctx context.Context) error {
	dir := os.Getenv("ROTA_FAULT_DIR")
	log := slog.New(slog.NewTextHandler(os.Stdout, nil))
	cfg, err := slot.LoadConfig(filepath.Join(dir, "system.toml"))
	if err != nil {
		return err
	}
	sys, err := slot.Open(cfg, slot.WithCmdline(filepath.Join(dir, "cmdline")))
	if err != nil {
		return err
	}
	key, err := poll.LoadOrCreateKey(filepath.Join(dir, "data", "device.key"))
	if err != nil {
		return err
	}
	client, err := poll.New(poll.Config{
		ServerURL:       os.Getenv("ROTA_FAULT_SERVER"),
		Key:             key,
		Identity:        map[string]string{"serial": "fault"},
		EnrollmentToken: "enroll",
		RetryWaitMin:    time.Millisecond,
		RetryWaitMax:    10 * time.Millisecond,
	})
	if err != nil {
		return err
	}
	if _, err := client.Authenticate(ctx); err != nil {
		return err
	}
	kr, err := bundle.LoadKeyring(os.Getenv("ROTA_FAULT_KEYRING"))
	if err != nil {
		return err
	}
	a, err := rota.NewAgent(rota.AgentOptions{
		System:       sys,
		Server:       rota.PollServer{Client: client},
		Keyring:      kr,
		Rebooter:     noReboot{},
		Logger:       log,
		RetryWait:    retryWait,
		SyncInterval: syncInterval,
	})
	if err != nil {
		return err
	}
	for range maxSteps {
		_, err := a.Step(ctx)
		if errors.Is(err, rota.ErrRebooting) {
			return err
		}
		j, jerr := a.Journal()
		if jerr != nil {
			return jerr
		}
		if j.State == rota.StateIdle && j.Last != nil {
			return nil
		}
		if err != nil {
			time.Sleep(retryWait)
		}
	}
	return errors.New("the agent did not finish")
}

// noReboot leaves the reboot to the test, which boots the simulated boot
// loader and starts the agent again.
type noReboot struct{}

func (noReboot) Reboot(context.Context) error { return nil }
