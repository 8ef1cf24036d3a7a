package rota

import (
	"encoding/json"
	"errors"
	"fmt"
	"github.com/rotaupdate/rota/internal/atomicfile"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"time"

	"github.com/rotaupdate/rota/bundle"
)

// AgentState is a state of the update agent. Each is persisted before
// the agent acts in it, so a restart at any instant resumes where the
// agent was.
type AgentState string

// The agent's states.
const (
	// StateIdle: no update in progress; the agent polls.
	StateIdle AgentState = "idle"

	// StateInstall: an update is being downloaded and streamed into the
	// passive slots. A restart resumes at the last durable checkpoint.
	StateInstall AgentState = "install"

	// StateApproval: the update is installed and verified but not active;
	// the agent waits for local approval (see AgentOptions.RequireApproval).
	StateApproval AgentState = "approval"

	// StateReboot: the new slot is active for one try; the device is to
	// boot into it.
	StateReboot AgentState = "reboot"

	// StateVerify: the device booted the new slot, which now checks its
	// own health before it is committed.
	StateVerify AgentState = "verify"

	// StateRollback: the new slot failed its checks and is marked bad;
	// the device is to boot back into the old slot.
	StateRollback AgentState = "rollback"
)

// JournalFile is the agent's state file in the data directory.
const JournalFile = "agent.json"

// maxJournalSize caps the journal the agent reads.
const maxJournalSize = 1 << 20

// Journal is the agent's persisted state.
type Journal struct {
	// State is the current state.
	State AgentState `json:"state"`

	// Deployment, Version, Digest, BundleURL and Size describe the update
	// in progress; empty when idle.
	Deployment string `json:"deployment,omitempty"`
	Version    string `json:"version,omitempty"`
	Digest     string `json:"digest,omitempty"`
	BundleURL  string `json:"bundleUrl,omitempty"`
	Size       int64  `json:"size,omitempty"`

	// From is the slot the device ran when the update began; Target is
	// the slot the update was installed to.
	From   string `json:"from,omitempty"`
	Target string `json:"target,omitempty"`

	// Attempt counts install attempts of this deployment.
	Attempt int `json:"attempt,omitempty"`

	// Checkpoint is the last durable resume point of the install.
	Checkpoint *bundle.Checkpoint `json:"checkpoint,omitempty"`

	// Reason says why a rollback happens.
	Reason string `json:"reason,omitempty"`

	// Last describes the outcome of the last finished deployment.
	Last *Outcome `json:"last,omitempty"`

	// Updated is when the journal was last written.
	Updated time.Time `json:"updated"`
}

// Outcome is how a deployment ended on this device.
type Outcome struct {
	Deployment string    `json:"deployment"`
	Version    string    `json:"version"`
	State      string    `json:"state"`
	Message    string    `json:"message,omitempty"`
	Time       time.Time `json:"time"`
}

// ErrCorruptJournal is returned when the agent's state file cannot be
// read. The agent does not guess: remove the file to start idle (the slot
// states in the boot loader are unaffected).
var ErrCorruptJournal = errors.New("rota: corrupt agent journal")

func loadJournal(dir string) (*Journal, error) {
	p := filepath.Join(dir, JournalFile)
	f, err := os.Open(p)
	if errors.Is(err, fs.ErrNotExist) {
		return &Journal{State: StateIdle}, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read journal %s: %w", p, err)
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, maxJournalSize+1))
	if err != nil {
		return nil, fmt.Errorf("read journal %s: %w", p, err)
	}
	var j Journal
	if len(b) > maxJournalSize {
		return nil, fmt.Errorf("%w: %s is larger than %d bytes", ErrCorruptJournal, p, maxJournalSize)
	}
	if err := json.Unmarshal(b, &j); err != nil {
		return nil, fmt.Errorf("%w: %s: %v", ErrCorruptJournal, p, err)
	}
	switch j.State {
	case StateIdle, StateInstall, StateApproval, StateReboot, StateVerify, StateRollback:
	default:
		return nil, fmt.Errorf("%w: %s: unknown state %q", ErrCorruptJournal, p, j.State)
	}
	return &j, nil
}

// saveJournal writes j atomically and durably.
func saveJournal(dir string, j *Journal) error {
	j.Updated = time.Now().UTC()
	b, err := json.MarshalIndent(j, "", "  ")
	if err != nil {
		return fmt.Errorf("encode journal: %w", err)
	}
	p := filepath.Join(dir, JournalFile)
	err = atomicfile.Write(p, 0o644, func(w io.Writer) error {
		_, err := w.Write(append(b, '\n'))
		return err
	})
	if err != nil {
		return fmt.Errorf("save journal: %w", err)
	}
	return nil
}
