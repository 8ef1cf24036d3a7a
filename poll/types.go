package poll

import (
	"encoding/hex"
	"fmt"
	"net/url"
	"strings"
	"time"
	"unicode/utf8"
)

// APIPath is the base path of the device API on a server.
const APIPath = "/api/device/v1"

// Limits of the device API. Servers reject requests beyond them with
// [ErrInvalid]; the client truncates logs and messages to fit.
const (
	// MaxAttributes is the most identity or inventory attributes a
	// request may carry.
	MaxAttributes = 128

	// MaxAttributeKeySize is the longest attribute name, in bytes.
	MaxAttributeKeySize = 64

	// MaxAttributeValueSize is the longest attribute value, in bytes.
	MaxAttributeValueSize = 1024

	// MaxFieldSize is the longest short string field, such as a
	// version, a slot name or a compatible string, in bytes.
	MaxFieldSize = 256

	// MaxSlots is the most slots a check request may describe.
	MaxSlots = 32

	// MaxLogLines is the most log lines a report may carry.
	MaxLogLines = 100

	// MaxLogLineSize is the longest log line of a report, in bytes.
	MaxLogLineSize = 1024

	// MaxMessageSize is the longest report message, in bytes.
	MaxMessageSize = 4096

	// MaxReportIDSize is the longest report id, in bytes.
	MaxReportIDSize = 64

	// MaxWindows is the most maintenance windows an update may carry.
	MaxWindows = 16

	// MaxAuthPayloadSize is the largest signed auth payload, in bytes,
	// before base64 encoding.
	MaxAuthPayloadSize = 16 << 10

	// MaxClockSkew is how far an auth request's timestamp may be from
	// the server's clock.
	MaxClockSkew = 5 * time.Minute
)

// Identity names a device by attributes such as its serial number or MAC
// address. Together with the device's public key it is what an operator
// sees when admitting the device.
type Identity struct {
	// Attributes maps attribute names to values; nil means none.
	Attributes map[string]string `json:"attributes"`
}

// AuthState is the admission state of a device.
type AuthState string

// The admission states.
const (
	// AuthAccepted means the device was admitted and holds a token.
	AuthAccepted AuthState = "accepted"

	// AuthPending means the device waits for an operator to admit it.
	AuthPending AuthState = "pending"

	// AuthRejected means an operator refused the device.
	AuthRejected AuthState = "rejected"
)

// AuthPayload is the signed part of an auth request.
type AuthPayload struct {
	// Identity holds the device's identity attributes.
	Identity Identity `json:"identity"`

	// PublicKey is the device's Ed25519 public key as a PEM "PUBLIC KEY"
	// block (PKIX).
	PublicKey string `json:"publicKey"`

	// Timestamp is when the request was made; the server refuses it if it
	// is more than MaxClockSkew away from its own clock.
	Timestamp time.Time `json:"timestamp"`

	// Nonce is a random string, unique per request, that lets the server
	// refuse replays.
	Nonce string `json:"nonce"`

	// EnrollmentToken, if set, asks the server to admit the device at
	// once; empty means the device waits for an operator.
	EnrollmentToken string `json:"enrollmentToken,omitempty"`
}

// AuthRequest is the body of POST /auth. The signature covers the exact
// bytes of the payload, so neither side needs canonical JSON.
type AuthRequest struct {
	// Payload is the standard base64 encoding of the JSON of an
	// AuthPayload.
	Payload string `json:"payload"`

	// Signature is the standard base64 encoding of the Ed25519 signature
	// over the decoded Payload bytes.
	Signature string `json:"signature"`
}

// AuthResponse is the body of the answer to POST /auth.
type AuthResponse struct {
	// Status is the device's admission state.
	Status AuthState `json:"status"`

	// Token is the bearer token; set only when Status is accepted.
	Token string `json:"token,omitempty"`

	// ExpiresAt is when Token expires; zero only when there is no token.
	ExpiresAt time.Time `json:"expiresAt,omitzero"`

	// RetryAfter is how many seconds a pending device should wait before
	// asking again; zero means the server did not say.
	RetryAfter int `json:"retryAfter,omitempty"`
}

// CheckRequest is the body of POST /check: what the device runs now.
type CheckRequest struct {
	// Compatible is the device's compatible string; required.
	Compatible string `json:"compatible"`

	// AgentVersion is the version of the update agent; empty means
	// unknown.
	AgentVersion string `json:"agentVersion,omitempty"`

	// Installed describes the release the device runs.
	Installed Installed `json:"installed"`

	// Slots describes the device's slots; nil means not reported.
	Slots []SlotInfo `json:"slots,omitempty"`

	// State is the agent's state name; empty means idle.
	State string `json:"state,omitempty"`
}

// Installed describes the release a device runs.
type Installed struct {
	// Version is the release's version; empty means unknown.
	Version string `json:"version,omitempty"`

	// Digest is the bundle manifest digest ("sha256:…"); empty means
	// unknown, such as on a factory image.
	Digest string `json:"digest,omitempty"`

	// RollbackIndex is the device's rollback index; zero means none.
	RollbackIndex uint64 `json:"rollbackIndex,omitempty"`
}

// SlotInfo describes one slot of a device.
type SlotInfo struct {
	// Name is the slot's name, such as "rootfs.0"; required.
	Name string `json:"name"`

	// Class is the slot's image class, such as "rootfs"; required.
	Class string `json:"class"`

	// Bootname is the name the boot loader knows the slot by; empty for
	// slots that are not booted directly.
	Bootname string `json:"bootname,omitempty"`

	// Booted is true for the slot the running system was booted from.
	Booted bool `json:"booted,omitempty"`

	// Primary is true for the slot the boot loader will try first.
	Primary bool `json:"primary,omitempty"`

	// State is the state of the slot's last install; empty means none.
	State string `json:"state,omitempty"`

	// Version is the version installed in the slot; empty if unknown.
	Version string `json:"version,omitempty"`

	// Digest is the bundle digest installed in the slot; empty if
	// unknown.
	Digest string `json:"digest,omitempty"`
}

// CheckResponse is the answer to POST /check.
type CheckResponse struct {
	// Update is the update the device should install; nil means none.
	Update *Update `json:"update"`

	// PollInterval is how many seconds the device should wait before its
	// next check; zero means DefaultPollInterval. See NextPoll.
	PollInterval int `json:"pollInterval,omitempty"`

	// NotModified is set by Client.Check when the server answered 304
	// and this is the previous answer; it is not part of the wire format.
	NotModified bool `json:"-"`
}

// Interval returns PollInterval as a duration; zero means unset.
func (r *CheckResponse) Interval() time.Duration {
	return time.Duration(r.PollInterval) * time.Second
}

// Update is an update offered to a device.
type Update struct {
	// DeploymentID names the deployment; reports are sent to it.
	DeploymentID string `json:"deploymentId"`

	// Version is the release's version.
	Version string `json:"version"`

	// BundleURL is where to download the .rota file: an absolute URL,
	// or a reference resolved against the server URL.
	BundleURL string `json:"bundleUrl"`

	// Digest is the bundle manifest digest, "sha256:" and 64 hex digits.
	Digest string `json:"digest"`

	// Size is the size of the .rota file in bytes.
	Size int64 `json:"size"`

	// MaintenanceWindows lists when the update may be installed; nil
	// means at any time.
	MaintenanceWindows []Window `json:"maintenanceWindows,omitempty"`
}

// Window is a span of time, start inclusive, end exclusive.
type Window struct {
	// Start is when the window opens.
	Start time.Time `json:"start"`

	// End is when the window closes.
	End time.Time `json:"end"`
}

// UntilWindow says how long to wait at now before the update may be
// installed: zero if a window is open or there are none, and ok false if
// every window has closed.
func (u *Update) UntilWindow(now time.Time) (wait time.Duration, ok bool) {
	if len(u.MaintenanceWindows) == 0 {
		return 0, true
	}
	for _, w := range u.MaintenanceWindows {
		switch {
		case !now.Before(w.Start) && now.Before(w.End):
			return 0, true
		case now.Before(w.Start) && (!ok || w.Start.Sub(now) < wait):
			wait, ok = w.Start.Sub(now), true
		}
	}
	return wait, ok
}

// ReportState is a deployment state a device reports.
type ReportState string

// The report states, in the order an install passes through them.
const (
	// ReportDownloading means the bundle is being downloaded.
	ReportDownloading ReportState = "downloading"

	// ReportInstalling means the bundle is being written to a slot.
	ReportInstalling ReportState = "installing"

	// ReportRebooting means the device reboots into the new slot.
	ReportRebooting ReportState = "rebooting"

	// ReportVerifying means the new system checks its own health.
	ReportVerifying ReportState = "verifying"

	// ReportSuccess means the new system was committed.
	ReportSuccess ReportState = "success"

	// ReportFailure means the install failed before the reboot.
	ReportFailure ReportState = "failure"

	// ReportRolledBack means the device went back to the old system.
	ReportRolledBack ReportState = "rolled-back"

	// ReportAlreadyInstalled means the device already ran the release.
	ReportAlreadyInstalled ReportState = "already-installed"
)

func (s ReportState) valid() bool {
	switch s {
	case ReportDownloading, ReportInstalling, ReportRebooting,
		ReportVerifying, ReportSuccess, ReportFailure, ReportRolledBack,
		ReportAlreadyInstalled:
		return true
	}
	return false
}

// Report is the body of POST /deployments/{id}/reports. The server keeps
// one report per deployment, state and ID, so a retried report counts
// once.
type Report struct {
	// ID is chosen by the device, unique per report; Client.Report
	// fills in a random one when empty.
	ID string `json:"id"`

	// State is the deployment state reached; required.
	State ReportState `json:"state"`

	// Progress tells how far the state has come; nil means not known.
	Progress *Progress `json:"progress,omitempty"`

	// Message is a short human-readable explanation; empty means none.
	Message string `json:"message,omitempty"`

	// Log holds the last lines of the agent's log; nil means none.
	Log []string `json:"log,omitempty"`

	// Time is when the state was reached; Client.Report fills in the
	// current time when zero.
	Time time.Time `json:"time,omitzero"`
}

// Progress counts units of work, such as bytes downloaded.
type Progress struct {
	// Done is the work done so far.
	Done int64 `json:"done"`

	// Total is the whole work; zero means unknown.
	Total int64 `json:"total,omitempty"`
}

// InventoryRequest is the body of PUT /inventory.
type InventoryRequest struct {
	// Attributes replaces the device's inventory; nil means empty.
	Attributes map[string]string `json:"attributes"`
}

// Problem is an RFC 9457 problem document, the body of every error
// response of the device API.
type Problem struct {
	// Type is a URI naming the kind of problem; empty means
	// "about:blank".
	Type string `json:"type,omitempty"`

	// Title is a short summary of the kind of problem.
	Title string `json:"title,omitempty"`

	// Status repeats the HTTP status code; zero means not given.
	Status int `json:"status,omitempty"`

	// Detail explains this occurrence; empty means no detail.
	Detail string `json:"detail,omitempty"`
}

// Validate checks the request's structure and limits.
func (r *CheckRequest) Validate() error {
	if err := r.validate(); err != nil {
		return fmt.Errorf("check request: %w", err)
	}
	return nil
}

func (r *CheckRequest) validate() error {
	if r.Compatible == "" {
		return invalid("compatible is empty")
	}
	err := firstErr(
		checkField("compatible", r.Compatible),
		checkField("agentVersion", r.AgentVersion),
		checkField("state", r.State),
		checkField("installed.version", r.Installed.Version),
		checkDigest("installed.digest", r.Installed.Digest, true),
	)
	if err != nil {
		return err
	}
	if len(r.Slots) > MaxSlots {
		return invalid("%d slots, more than %d", len(r.Slots), MaxSlots)
	}
	for i, s := range r.Slots {
		if err := s.validate(); err != nil {
			return fmt.Errorf("slot %d: %w", i, err)
		}
	}
	return nil
}

func (s *SlotInfo) validate() error {
	if s.Name == "" || s.Class == "" {
		return invalid("name and class are required")
	}
	return firstErr(
		checkField("name", s.Name),
		checkField("class", s.Class),
		checkField("bootname", s.Bootname),
		checkField("state", s.State),
		checkField("version", s.Version),
		checkDigest("digest", s.Digest, true),
	)
}

// Validate checks the answer's structure and limits; Client.Check calls
// it so that a hostile server gets a clear error.
func (r *CheckResponse) Validate() error {
	if r.PollInterval < 0 {
		return fmt.Errorf("check response: %w", invalid("negative poll interval"))
	}
	u := r.Update
	if u == nil {
		return nil
	}
	err := firstErr(
		checkField("deploymentId", u.DeploymentID),
		checkField("version", u.Version),
		checkDigest("digest", u.Digest, false),
	)
	switch {
	case err != nil:
	case u.DeploymentID == "":
		err = invalid("deploymentId is empty")
	case u.Size <= 0:
		err = invalid("size %d is not positive", u.Size)
	case len(u.MaintenanceWindows) > MaxWindows:
		err = invalid("%d maintenance windows, more than %d", len(u.MaintenanceWindows), MaxWindows)
	case u.BundleURL == "":
		err = invalid("bundleUrl is empty")
	}
	if err == nil {
		_, perr := url.Parse(u.BundleURL)
		if perr != nil {
			err = invalid("bundleUrl: %v", perr)
		}
	}
	if err != nil {
		return fmt.Errorf("check response: update: %w", err)
	}
	return nil
}

// Validate checks the report's structure and limits.
func (r *Report) Validate() error {
	var err error
	switch {
	case r.ID == "" || len(r.ID) > MaxReportIDSize || !isToken(r.ID):
		err = invalid("id %q is not 1 to %d letters, digits, '-' or '_'", r.ID, MaxReportIDSize)
	case !r.State.valid():
		err = invalid("unknown state %q", r.State)
	case r.Progress != nil && (r.Progress.Done < 0 || r.Progress.Total < 0):
		err = invalid("negative progress")
	case len(r.Message) > MaxMessageSize || !utf8.ValidString(r.Message):
		err = invalid("message is over %d bytes or not UTF-8", MaxMessageSize)
	case len(r.Log) > MaxLogLines:
		err = invalid("%d log lines, more than %d", len(r.Log), MaxLogLines)
	}
	for i := 0; err == nil && i < len(r.Log); i++ {
		if len(r.Log[i]) > MaxLogLineSize || !utf8.ValidString(r.Log[i]) {
			err = invalid("log line %d is over %d bytes or not UTF-8", i, MaxLogLineSize)
		}
	}
	if err != nil {
		return fmt.Errorf("report: %w", err)
	}
	return nil
}

// Validate checks the request's attributes against the limits.
func (r *InventoryRequest) Validate() error {
	if err := ValidateAttributes(r.Attributes); err != nil {
		return fmt.Errorf("inventory: %w", err)
	}
	return nil
}

// ValidateAttributes checks identity or inventory attributes: at most
// MaxAttributes, names of 1 to MaxAttributeKeySize bytes made of ASCII
// letters, digits and "._-:/", values of at most MaxAttributeValueSize
// bytes of UTF-8.
func ValidateAttributes(attrs map[string]string) error {
	if len(attrs) > MaxAttributes {
		return invalid("%d attributes, more than %d", len(attrs), MaxAttributes)
	}
	for k, v := range attrs {
		if !validKey(k) {
			return invalid("attribute name %.80q is not 1 to %d bytes of [A-Za-z0-9._:/-]",
				k, MaxAttributeKeySize)
		}
		if len(v) > MaxAttributeValueSize || !utf8.ValidString(v) {
			return invalid("attribute %s: value is over %d bytes or not UTF-8",
				k, MaxAttributeValueSize)
		}
	}
	return nil
}

func validKey(k string) bool {
	if k == "" || len(k) > MaxAttributeKeySize {
		return false
	}
	for _, c := range []byte(k) {
		if !isTokenByte(c) && !strings.ContainsRune("._:/", rune(c)) {
			return false
		}
	}
	return true
}

func isToken(s string) bool {
	for _, c := range []byte(s) {
		if !isTokenByte(c) {
			return false
		}
	}
	return true
}

func isTokenByte(c byte) bool {
	return 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' ||
		c == '-' || c == '_'
}

func checkField(name, v string) error {
	if len(v) > MaxFieldSize || !utf8.ValidString(v) {
		return invalid("%s is over %d bytes or not UTF-8", name, MaxFieldSize)
	}
	return nil
}

// checkDigest accepts "sha256:" followed by 64 lowercase hex digits, or
// the empty string when optional.
func checkDigest(name, d string, optional bool) error {
	if d == "" && optional {
		return nil
	}
	hexPart, ok := strings.CutPrefix(d, "sha256:")
	if ok && len(hexPart) == 64 && strings.ToLower(hexPart) == hexPart {
		if _, err := hex.DecodeString(hexPart); err == nil {
			return nil
		}
	}
	return invalid("%s %.80q is not sha256:<64 hex digits>", name, d)
}

func firstErr(errs ...error) error {
	for _, err := range errs {
		if err != nil {
			return err
		}
	}
	return nil
}

func invalid(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrInvalid, fmt.Sprintf(format, args...))
}
