package store

import (
	"context"
	"encoding/json"
	"errors"
	"time"

	"github.com/rotaupdate/rota/poll"
)

// Errors a Store returns; test for them with errors.Is.
var (
	// ErrNotFound is returned when the named object does not exist.
	ErrNotFound = errors.New("store: not found")

	// ErrExists is returned when creating an object whose ID or other
	// unique key, such as a device key ID or a release digest, is taken.
	ErrExists = errors.New("store: already exists")

	// ErrInvalid is returned when an argument is malformed, such as an
	// unknown status or a negative limit; nothing was written.
	ErrInvalid = errors.New("store: invalid argument")

	// ErrInvalidTransition is returned when a device's admission status
	// or a deployment's status may not change to the one asked for.
	ErrInvalidTransition = errors.New("store: invalid status transition")

	// ErrInUse is returned when deleting an object that others refer to,
	// such as a release that a deployment uses.
	ErrInUse = errors.New("store: in use")

	// ErrDeviceBusy is returned when adding a device to a deployment while
	// it takes part, unfinished, in another active or paused deployment.
	ErrDeviceBusy = errors.New("store: device in another deployment")

	// ErrLastAdmin is returned when updating or deleting a user would
	// leave no user with the admin role.
	ErrLastAdmin = errors.New("store: the last admin")

	// ErrSchemaTooNew is returned by OpenSQLite and OpenPostgres when the
	// database was migrated by a newer version of this package than the
	// running one.
	ErrSchemaTooNew = errors.New("store: database schema newer than this program")
)

// Page limits a listing with keyset pagination: items come ordered by ID,
// starting after the cursor.
type Page struct {
	// After is the cursor returned with the previous page; empty means
	// start at the beginning.
	After string

	// Limit is the most items to return; zero means DefaultPageLimit, and
	// more than MaxPageLimit is cut to MaxPageLimit.
	Limit int
}

// Page sizes.
const (
	// DefaultPageLimit is the page size when Page.Limit is zero.
	DefaultPageLimit = 100

	// MaxPageLimit is the largest page a listing returns.
	MaxPageLimit = 1000

	// MaxDeviceLog is how many report log lines are kept per device and
	// deployment; older lines are dropped first.
	MaxDeviceLog = 2 * poll.MaxLogLines
)

// AdmissionStatus is a device's admission status.
type AdmissionStatus string

// The admission statuses.
const (
	// StatusPending means the device asked for admission and waits for
	// an operator or an enrollment token.
	StatusPending AdmissionStatus = "pending"

	// StatusAccepted means the device is admitted.
	StatusAccepted AdmissionStatus = "accepted"

	// StatusRejected means an operator refused the device.
	StatusRejected AdmissionStatus = "rejected"

	// StatusDecommissioned means the device was retired for good.
	StatusDecommissioned AdmissionStatus = "decommissioned"
)

// CanBecome reports whether a device may move from status s to to.
// Pending devices may be accepted, rejected or decommissioned; accepted
// and rejected devices may swap or be decommissioned; decommissioning is
// final, and nothing returns to pending.
func (s AdmissionStatus) CanBecome(to AdmissionStatus) bool {
	switch s {
	case StatusPending:
		return to == StatusAccepted || to == StatusRejected || to == StatusDecommissioned
	case StatusAccepted:
		return to == StatusRejected || to == StatusDecommissioned
	case StatusRejected:
		return to == StatusAccepted || to == StatusDecommissioned
	}
	return false
}

func (s AdmissionStatus) valid() bool {
	switch s {
	case StatusPending, StatusAccepted, StatusRejected, StatusDecommissioned:
		return true
	}
	return false
}

// Device is a device the server knows of.
type Device struct {
	// ID names the device; empty on create means the store picks one.
	ID string

	// KeyID identifies the device's public key, such as its fingerprint;
	// required and unique.
	KeyID string

	// PublicKeyPEM is the device's public key as a PEM block; required.
	PublicKeyPEM string

	// Identity holds the identity attributes the device sent; nil means
	// none.
	Identity map[string]string

	// Status is the admission status; empty on create means
	// StatusPending.
	Status AdmissionStatus

	// Tags are free labels set by operators; nil means none.
	Tags []string

	// Groups are the static groups the device belongs to; nil means none.
	Groups []string

	// Inventory holds the attributes the device last reported; nil means
	// none.
	Inventory map[string]string

	// LastCheck is when the device last checked for updates; zero means
	// never.
	LastCheck time.Time

	// InstalledVersion is the version the device last said it runs;
	// empty means unknown.
	InstalledVersion string

	// InstalledDigest is the bundle digest the device last said it runs;
	// empty means unknown.
	InstalledDigest string

	// Slots is the JSON of the device's last reported []poll.SlotInfo;
	// nil means not reported.
	Slots json.RawMessage

	// Created and Updated are set by the store; checks, which come with
	// every poll, do not change Updated.
	Created, Updated time.Time
}

// CheckInfo is what a device told the server when it last checked.
type CheckInfo struct {
	// At is when the check happened; zero means now.
	At time.Time

	// Version and Digest describe the installed release; empty means
	// unknown.
	Version, Digest string

	// Slots is the JSON of the reported []poll.SlotInfo; nil keeps the
	// slots stored before.
	Slots json.RawMessage
}

// DeviceFilter selects devices; every set field must match, and the zero
// filter matches every device.
type DeviceFilter struct {
	// Status matches the admission status; empty matches any.
	Status AdmissionStatus `json:"status,omitempty"`

	// Version matches the installed version; empty matches any.
	Version string `json:"version,omitempty"`

	// Group matches devices in this group; empty matches any.
	Group string `json:"group,omitempty"`

	// Tag matches devices with this tag; empty matches any.
	Tag string `json:"tag,omitempty"`

	// Inventory matches devices whose inventory holds every one of these
	// name-value pairs; nil matches any.
	Inventory map[string]string `json:"inventory,omitempty"`
}

// Release is a signed bundle the server can deploy.
type Release struct {
	// ID names the release; empty on create means the store picks one.
	ID string

	// Version is the bundle's version; required.
	Version string

	// Compatible is the bundle's compatible string; required.
	Compatible string

	// Digest is the bundle manifest digest, "sha256:…"; required and
	// unique.
	Digest string

	// Size is the size of the .rota file in bytes.
	Size int64

	// Location is where the bundle is stored, such as an OCI reference;
	// required.
	Location string

	// SignatureKeyIDs lists the IDs of the keys that signed the bundle;
	// nil means none were recorded.
	SignatureKeyIDs []string

	// Images is the JSON describing the bundle's slot images; nil means
	// not recorded.
	Images json.RawMessage

	// Created is set by the store.
	Created time.Time
}

// DeploymentStatus is a deployment's status.
type DeploymentStatus string

// The deployment statuses.
const (
	// DeploymentActive means devices are being updated.
	DeploymentActive DeploymentStatus = "active"

	// DeploymentPaused means no further device starts until resumed.
	DeploymentPaused DeploymentStatus = "paused"

	// DeploymentAborted means the deployment was stopped for good.
	DeploymentAborted DeploymentStatus = "aborted"

	// DeploymentFinished means every device reached a final state.
	DeploymentFinished DeploymentStatus = "finished"
)

// CanBecome reports whether a deployment may move from status s to to:
// active and paused swap, either may be aborted, and an active deployment
// may finish. Aborted and finished are final.
func (s DeploymentStatus) CanBecome(to DeploymentStatus) bool {
	switch s {
	case DeploymentActive:
		return to == DeploymentPaused || to == DeploymentAborted || to == DeploymentFinished
	case DeploymentPaused:
		return to == DeploymentActive || to == DeploymentAborted
	}
	return false
}

func (s DeploymentStatus) valid() bool {
	switch s {
	case DeploymentActive, DeploymentPaused, DeploymentAborted, DeploymentFinished:
		return true
	}
	return false
}

// Target selects the devices of a deployment: a static group, or a filter
// evaluated when the deployment is created. Exactly one is set.
type Target struct {
	// Group names a static group; empty means Filter is used.
	Group string

	// Filter selects devices; nil means Group is used.
	Filter *DeviceFilter
}

// Strategy says how a deployment rolls out. The zero Strategy updates
// every device at once, with no limits.
type Strategy struct {
	// Phases split the devices; nil means one phase with every device.
	Phases []Phase `json:"phases,omitempty"`

	// FailureThreshold pauses the deployment when a phase's failures
	// exceed it; the zero value never pauses.
	FailureThreshold Threshold `json:"failureThreshold,omitzero"`

	// MaxConcurrent is the most devices updating at once; zero means no
	// limit.
	MaxConcurrent int `json:"maxConcurrent,omitempty"`

	// Windows are when devices may install; nil means at any time.
	Windows []MaintenanceWindow `json:"windows,omitempty"`

	// Retries is how many more times a failed device is offered the
	// update; zero means never.
	Retries int `json:"retries,omitempty"`
}

// Phase is one step of a phased rollout. Its size is Percent or Count;
// it starts at StartAt, or when the previous phase's successes reach
// AfterSuccessPercent, then waits Soak before the next phase may start.
type Phase struct {
	// Percent is the share of the target devices in this phase, 1 to
	// 100; zero means Count is used.
	Percent int `json:"percent,omitempty"`

	// Count is the number of devices in this phase; zero with a zero
	// Percent means every remaining device.
	Count int `json:"count,omitempty"`

	// StartAt is when the phase starts; zero means it follows the
	// previous phase.
	StartAt time.Time `json:"startAt,omitzero"`

	// AfterSuccessPercent is the share of the previous phase that must
	// have succeeded before this one starts; zero means 100.
	AfterSuccessPercent int `json:"afterSuccessPercent,omitempty"`

	// Soak is how long to wait after this phase succeeds before the next
	// starts; zero means no wait.
	Soak time.Duration `json:"soak,omitempty"`
}

// Threshold is a limit given as a count or a percentage; the zero value
// means no limit.
type Threshold struct {
	// Count is the limit as a number of devices; zero means unset.
	Count int `json:"count,omitempty"`

	// Percent is the limit as a share of the phase's devices; zero means
	// unset.
	Percent int `json:"percent,omitempty"`
}

// MaintenanceWindow is a weekly span of time in a time zone.
type MaintenanceWindow struct {
	// Days are the weekdays the window opens on; nil means every day.
	Days []time.Weekday `json:"days,omitempty"`

	// Start is the opening time of day, "15:04".
	Start string `json:"start"`

	// Duration is how long the window stays open.
	Duration time.Duration `json:"duration"`

	// TimeZone is an IANA zone name; empty means UTC.
	TimeZone string `json:"timeZone,omitempty"`
}

// Deployment rolls a release out to a set of devices.
type Deployment struct {
	// ID names the deployment; empty on create means the store picks one.
	ID string

	// Name is a human-readable name; empty means none.
	Name string

	// ReleaseID names the release deployed; required.
	ReleaseID string

	// Target selects the devices.
	Target Target

	// Strategy says how the rollout proceeds.
	Strategy Strategy

	// Status is the deployment's status; empty on create means
	// DeploymentActive.
	Status DeploymentStatus

	// Created and Updated are set by the store.
	Created, Updated time.Time
}

// DeploymentFilter selects deployments; the zero filter matches all.
type DeploymentFilter struct {
	// Status matches the deployment status; empty matches any.
	Status DeploymentStatus
}

// TargetState is the state of one device in one deployment: a report
// state, or StatePending or StateSkipped.
type TargetState string

// The device states that are not reported by devices.
const (
	// StatePending means the device has not reported yet.
	StatePending TargetState = "pending"

	// StateSkipped means the device will not be updated, for example
	// because the deployment was aborted before it started.
	StateSkipped TargetState = "skipped"
)

// Final reports whether s is a state the device leaves only when the
// server retries it: success, failure, rolled back, already installed
// or skipped.
func (s TargetState) Final() bool {
	switch poll.ReportState(s) {
	case poll.ReportSuccess, poll.ReportFailure, poll.ReportRolledBack,
		poll.ReportAlreadyInstalled:
		return true
	}
	return s == StateSkipped
}

// DeviceDeployment is one device's progress in one deployment.
type DeviceDeployment struct {
	// DeploymentID and DeviceID name the pair.
	DeploymentID, DeviceID string

	// Phase is the index of the device's phase, from zero.
	Phase int

	// State is the device's state in the deployment.
	State TargetState

	// Started is when the server first offered the update to the device;
	// zero means not yet.
	Started time.Time

	// Attempts counts how many times the update was offered.
	Attempts int

	// LastReport is the time of the last report; zero means none.
	LastReport time.Time

	// Message is the message of the last report; empty means none.
	Message string

	// Log holds the last MaxDeviceLog log lines reported; nil means none.
	Log []string

	// Finished is when the device reached its final state, set by the
	// store; zero while it has none. Later reports do not move it.
	Finished time.Time

	// Created and Updated are set by the store.
	Created, Updated time.Time
}

// CheckState is what a device's update check reads of the store.
type CheckState struct {
	// Device holds the device's ID, Status, LastCheck, InstalledVersion,
	// InstalledDigest and Slots; its other fields are empty.
	Device Device

	// Deployment is the device's part in the active or paused deployment
	// it takes part in, unfinished; nil if none.
	Deployment *DeviceDeployment
}

// DeviceDeploymentFilter selects per-device deployment states; every set
// field must match.
type DeviceDeploymentFilter struct {
	// DeploymentID matches one deployment; empty matches any.
	DeploymentID string

	// DeviceID matches one device; empty matches any.
	DeviceID string

	// Phase matches one phase; nil matches any.
	Phase *int

	// State matches one state; empty matches any.
	State TargetState
}

// Counts maps states to numbers of devices.
type Counts map[TargetState]int

// Total returns the sum of the counts.
func (c Counts) Total() int {
	n := 0
	for _, v := range c {
		n += v
	}
	return n
}

// DeploymentCounts counts a deployment's devices by state.
type DeploymentCounts struct {
	// All counts every device of the deployment.
	All Counts

	// Phases counts the devices of each phase, by phase index.
	Phases map[int]Counts

	// InProgress counts devices started and not in a final state.
	InProgress int
}

// Report is a report a device sent, as stored.
type Report struct {
	// DeploymentID and DeviceID say who reported on what.
	DeploymentID, DeviceID string

	// Report is the report as the device sent it; its Time is zero when
	// the device did not say.
	poll.Report

	// Received is when the server stored the report.
	Received time.Time
}

// AuditEntry records one mutation.
type AuditEntry struct {
	// ID orders the entries; set by the store.
	ID int64

	// Actor is who acted, such as "user:alice" or "token:ci"; required.
	Actor string

	// Action is what was done, such as "device.accept"; required.
	Action string

	// Object names what it was done to, such as "device:42"; empty means
	// nothing in particular.
	Object string

	// At is when it happened; zero means now.
	At time.Time

	// Details is free JSON with more context; nil means none.
	Details json.RawMessage
}

// AuditFilter selects audit entries, newest first.
type AuditFilter struct {
	// Object matches entries about this object; empty matches any.
	Object string

	// Before is the ID to continue below, from the last entry of the
	// previous page; zero means start with the newest.
	Before int64

	// Limit is the most entries to return; zero means DefaultPageLimit.
	Limit int
}

// Role is what a user or token may do.
type Role string

// The roles.
const (
	// RoleAdmin may do everything, including managing users and tokens.
	RoleAdmin Role = "admin"

	// RoleOperator may manage releases, devices and deployments.
	RoleOperator Role = "operator"

	// RoleViewer may only read.
	RoleViewer Role = "viewer"
)

func (r Role) valid() bool {
	return r == RoleAdmin || r == RoleOperator || r == RoleViewer
}

// User is a person who logs in to the portal or management API.
type User struct {
	// Name is the login name; required and unique.
	Name string

	// Role is what the user may do; required.
	Role Role

	// PasswordHash is the encoded password hash, such as an argon2id
	// PHC string; the store never sees the password.
	PasswordHash string

	// Created and Updated are set by the store.
	Created, Updated time.Time
}

// APIToken is a bearer token for the management API. Only a hash of the
// secret is stored.
type APIToken struct {
	// ID names the token; empty on create means the store picks one.
	ID string

	// Name is a human-readable label; empty means none.
	Name string

	// Role is what the token may do; required.
	Role Role

	// Hash is the hash of the secret, such as its SHA-256; required and
	// unique.
	Hash []byte

	// Expires is when the token stops working; zero means never.
	Expires time.Time

	// Created is set by the store.
	Created time.Time
}

// Session is a logged-in portal session. Only a hash of its ID is stored.
type Session struct {
	// IDHash is the hash of the session cookie's value; required.
	IDHash []byte

	// UserName names the user; required.
	UserName string

	// CSRF is the session's anti-forgery token; required.
	CSRF string

	// Expires is when the session ends; required.
	Expires time.Time

	// Created is set by the store.
	Created time.Time
}

// Store keeps a server's state. Each method is one transaction: it either
// changes everything it says or nothing, and a change is durable once the
// method returns nil. A mutation called with a context from WithAudit
// also appends that audit entry in its transaction. Methods that create
// fill in IDs and times and return the object as stored. All methods are
// safe for concurrent use.
type Store interface {
	// Devices.

	// CreateDevice stores a new device; ErrExists if its ID or key ID
	// is taken.
	CreateDevice(ctx context.Context, d Device) (Device, error)
	// Device returns a device by ID.
	Device(ctx context.Context, id string) (Device, error)
	// DeviceByKey returns a device by its key ID.
	DeviceByKey(ctx context.Context, keyID string) (Device, error)
	// ListDevices returns a page of the devices matching f, ordered by
	// ID, and the cursor of the next page, empty on the last page.
	ListDevices(ctx context.Context, f DeviceFilter, p Page) ([]Device, string, error)
	// CountDevices counts the devices matching f.
	CountDevices(ctx context.Context, f DeviceFilter) (int, error)
	// SetDeviceStatus changes a device's admission status;
	// ErrInvalidTransition unless the current status CanBecome to. Asking
	// for the current status changes nothing and succeeds.
	SetDeviceStatus(ctx context.Context, id string, to AdmissionStatus) (Device, error)
	// ImportDevices stores many new devices in one transaction, such as a
	// production batch preauthorized by its keys; ErrExists if an ID or
	// key ID is taken, and then none is stored.
	ImportDevices(ctx context.Context, ds []Device) error
	// RecordCheck stores what a device said when it checked.
	RecordCheck(ctx context.Context, id string, c CheckInfo) error
	// TouchDevices records, in one transaction, when each device last
	// checked without reporting any change; a time older than the one
	// stored and an unknown device are ignored.
	TouchDevices(ctx context.Context, seen map[string]time.Time) error
	// SetInventory replaces a device's inventory.
	SetInventory(ctx context.Context, id string, attrs map[string]string) error
	// SetTags replaces a device's tags.
	SetTags(ctx context.Context, id string, tags []string) error
	// SetGroups replaces the groups a device belongs to.
	SetGroups(ctx context.Context, id string, groups []string) error
	// Groups lists every group with at least one device, sorted.
	Groups(ctx context.Context) ([]string, error)
	// DeleteDevice removes a device and its deployment history.
	DeleteDevice(ctx context.Context, id string) error

	// Releases.

	// CreateRelease stores a release; ErrExists if its digest is known.
	CreateRelease(ctx context.Context, r Release) (Release, error)
	// Release returns a release by ID.
	Release(ctx context.Context, id string) (Release, error)
	// ReleaseByDigest returns a release by its manifest digest.
	ReleaseByDigest(ctx context.Context, digest string) (Release, error)
	// ListReleases returns a page of releases ordered by ID.
	ListReleases(ctx context.Context, p Page) ([]Release, string, error)
	// DeleteRelease removes a release; ErrInUse if a deployment uses it.
	DeleteRelease(ctx context.Context, id string) error

	// Deployments.

	// CreateDeployment stores a deployment with no devices yet.
	CreateDeployment(ctx context.Context, d Deployment) (Deployment, error)
	// Deployment returns a deployment by ID.
	Deployment(ctx context.Context, id string) (Deployment, error)
	// ListDeployments returns a page of deployments ordered by ID.
	ListDeployments(ctx context.Context, f DeploymentFilter, p Page) ([]Deployment, string, error)
	// SetDeploymentStatus changes a deployment's status;
	// ErrInvalidTransition unless the current status CanBecome to.
	// Aborting also marks every device not yet started as skipped.
	SetDeploymentStatus(ctx context.Context, id string, to DeploymentStatus) (Deployment, error)
	// AddDeploymentDevices adds devices to a phase of a deployment, as
	// pending; ErrDeviceBusy if one is unfinished in another active or
	// paused deployment, and then none is added.
	AddDeploymentDevices(ctx context.Context, deploymentID string, phase int,
		deviceIDs []string) error
	// StartDevices picks the next pending devices of a phase that were
	// never offered the update, at most n and at most as many as the
	// strategy's MaxConcurrent leaves room for, and marks them started.
	StartDevices(ctx context.Context, deploymentID string, phase, n int) ([]string, error)
	// RetryDevice returns a device in a failed or rolled-back state to
	// pending and not started, if its attempts are within the strategy's
	// retries and it has not joined another active or paused deployment
	// since; it reports whether it did.
	RetryDevice(ctx context.Context, deploymentID, deviceID string) (bool, error)
	// DeviceDeployment returns one device's state in one deployment.
	DeviceDeployment(ctx context.Context, deploymentID, deviceID string) (DeviceDeployment, error)
	// ActiveDeviceDeployment returns the device's state in the active or
	// paused deployment it takes part in, unfinished; ErrNotFound if none.
	ActiveDeviceDeployment(ctx context.Context, deviceID string) (DeviceDeployment, error)
	// CheckState returns in one read what a device's update check needs:
	// the device's admission and what it last reported, and its part in
	// the active or paused deployment it takes part in, unfinished, if
	// any. ErrNotFound if there is no such device.
	CheckState(ctx context.Context, deviceID string) (CheckState, error)
	// ListDeviceDeployments returns a page of per-device states ordered
	// by deployment ID then device ID; the cursor is opaque.
	ListDeviceDeployments(ctx context.Context, f DeviceDeploymentFilter,
		p Page) ([]DeviceDeployment, string, error)
	// DeploymentCounts counts a deployment's devices by state and phase.
	DeploymentCounts(ctx context.Context, deploymentID string) (DeploymentCounts, error)

	// Reports.

	// RecordReport stores a device's report and moves the device's state
	// in the deployment, updating the counts, all in one transaction. A
	// report already stored (same deployment, device, state and ID)
	// changes nothing; recorded is false then. A report of a non-final
	// state never moves a device out of a final state. ErrNotFound if
	// the device is not part of the deployment.
	RecordReport(ctx context.Context, deploymentID, deviceID string,
		r poll.Report) (recorded bool, err error)
	// Reports lists a device's reports in a deployment, oldest first.
	Reports(ctx context.Context, deploymentID, deviceID string) ([]Report, error)

	// Audit log.

	// AppendAudit adds an entry to the audit log and returns its ID. To
	// record a mutation, pass the entry with WithAudit to the mutation
	// instead, so that both commit together.
	AppendAudit(ctx context.Context, e AuditEntry) (int64, error)
	// ListAudit returns audit entries, newest first.
	ListAudit(ctx context.Context, f AuditFilter) ([]AuditEntry, error)

	// Users, tokens and sessions.

	// CreateUser stores a user; ErrExists if the name is taken.
	CreateUser(ctx context.Context, u User) (User, error)
	// User returns a user by name.
	User(ctx context.Context, name string) (User, error)
	// ListUsers lists every user, by name.
	ListUsers(ctx context.Context) ([]User, error)
	// UpdateUser replaces a user's role and password hash; it refuses
	// with ErrLastAdmin to demote the last admin. A new password hash
	// ends every session of the user but keep, the ID hash of the
	// session making the change (nil for none).
	UpdateUser(ctx context.Context, u User, keep []byte) (User, error)
	// DeleteUser removes a user and their sessions; it refuses with
	// ErrLastAdmin to remove the last admin.
	DeleteUser(ctx context.Context, name string) error
	// CreateToken stores an API token; ErrExists if its hash is known.
	CreateToken(ctx context.Context, t APIToken) (APIToken, error)
	// TokenByHash returns the token with the hash, if not expired at now;
	// ErrNotFound otherwise.
	TokenByHash(ctx context.Context, hash []byte, now time.Time) (APIToken, error)
	// ListTokens lists every token, by ID.
	ListTokens(ctx context.Context) ([]APIToken, error)
	// DeleteToken removes a token.
	DeleteToken(ctx context.Context, id string) error
	// CreateSession stores a session; ErrNotFound if the user is unknown.
	CreateSession(ctx context.Context, s Session) (Session, error)
	// Session returns the session with the hash, if not expired at now;
	// ErrNotFound otherwise.
	Session(ctx context.Context, idHash []byte, now time.Time) (Session, error)
	// DeleteSession removes a session; deleting an unknown one succeeds.
	DeleteSession(ctx context.Context, idHash []byte) error
	// DeleteExpiredSessions removes sessions expired at now and returns
	// how many.
	DeleteExpiredSessions(ctx context.Context, now time.Time) (int, error)

	// UseNonce records that nonce, which names the key that used it, is
	// used until expires, and reports whether it was unused at now: true
	// for one caller only, on any replica sharing the store.
	UseNonce(ctx context.Context, nonce string, expires, now time.Time) (bool, error)

	// Secrets.

	// Secret returns the secret called name, storing value as it if
	// there is none yet, so that every server replica on the store gets
	// the value the first one stored.
	Secret(ctx context.Context, name string, value []byte) ([]byte, error)

	// Close releases the store's resources.
	Close() error
}
