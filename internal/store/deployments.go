package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"maps"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/rotaupdate/rota/poll"
)

// finalStates lists the final states as an SQL list, for NOT IN.
const finalStates = `('success', 'failure', 'rolled-back', 'already-installed', 'skipped')`

const deploymentColumns = `id, name, release_id, target_group, target_filter, strategy,
	status, created, updated`

func scanDeployment(sc scanner) (Deployment, error) {
	var (
		d                Deployment
		filter           sql.NullString
		strategy         string
		created, updated sql.NullInt64
	)
	err := sc.Scan(&d.ID, &d.Name, &d.ReleaseID, &d.Target.Group, &filter, &strategy,
		&d.Status, &created, &updated)
	if err != nil {
		return Deployment{}, err
	}
	if filter.Valid {
		d.Target.Filter = new(DeviceFilter)
		if err := jsonUnmarshal(filter.String, d.Target.Filter); err != nil {
			return Deployment{}, fmt.Errorf("deployment %s: %w", d.ID, err)
		}
	}
	if err := jsonUnmarshal(strategy, &d.Strategy); err != nil {
		return Deployment{}, fmt.Errorf("deployment %s: %w", d.ID, err)
	}
	d.Created, d.Updated = fromMicro(created), fromMicro(updated)
	return d, nil
}

// CreateDeployment implements Store.
func (s *sqlStore) CreateDeployment(ctx context.Context, d Deployment) (Deployment, error) {
	if d.ID == "" {
		d.ID = newID()
	}
	if d.Status == "" {
		d.Status = DeploymentActive
	}
	d.Created = s.stamp()
	d.Updated = d.Created
	err := s.update(ctx, "create deployment "+d.ID, func(tx conn) error {
		if err := d.validate(); err != nil {
			return err
		}
		var filter any
		if d.Target.Filter != nil {
			filter = toJSON(d.Target.Filter)
		}
		_, err := tx.ExecContext(ctx, `INSERT INTO deployments (`+deploymentColumns+`)
			VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)`,
			d.ID, d.Name, d.ReleaseID, d.Target.Group, filter, toJSON(d.Strategy),
			d.Status, micro(d.Created), micro(d.Updated))
		switch {
		case s.d.isUnique(err):
			return ErrExists
		case s.d.isForeignKey(err):
			return fmt.Errorf("release %s: %w", d.ReleaseID, ErrNotFound)
		}
		return err
	})
	return d, err
}

func (d *Deployment) validate() error {
	switch {
	case d.ReleaseID == "":
		return fmt.Errorf("%w: release ID is required", ErrInvalid)
	case (d.Target.Group == "") == (d.Target.Filter == nil):
		return fmt.Errorf("%w: target needs a group or a filter, not both", ErrInvalid)
	case !d.Status.valid():
		return fmt.Errorf("%w: deployment status %q", ErrInvalid, d.Status)
	case d.Strategy.MaxConcurrent < 0 || d.Strategy.Retries < 0:
		return fmt.Errorf("%w: negative max concurrent or retries", ErrInvalid)
	}
	return nil
}

// Deployment implements Store.
func (s *sqlStore) Deployment(ctx context.Context, id string) (Deployment, error) {
	return deploymentByID(ctx, s.reader(), id, false)
}

// deploymentByID reads a deployment. With lock, writers that change the
// deployment or lock it too wait until q, a transaction, ends.
func deploymentByID(ctx context.Context, q conn, id string, lock bool) (Deployment, error) {
	row := q.QueryRowContext(ctx, q.locking(
		`SELECT `+deploymentColumns+` FROM deployments WHERE id = ?`, lock), id)
	d, err := scanDeployment(row)
	if err != nil {
		return Deployment{}, fmt.Errorf("get deployment %s: %w", id, notFound(err))
	}
	return d, nil
}

// ListDeployments implements Store.
func (s *sqlStore) ListDeployments(ctx context.Context, f DeploymentFilter,
	p Page) ([]Deployment, string, error) {
	limit, err := p.limit()
	if err != nil {
		return nil, "", fmt.Errorf("list deployments: %w", err)
	}
	w := &where{}
	w.add("id > ?", p.After)
	if f.Status != "" {
		w.add("status = ?", f.Status)
	}
	rows, err := s.reader().QueryContext(ctx, `SELECT `+deploymentColumns+` FROM deployments`+
		w.String()+` ORDER BY id LIMIT ?`, append(w.args, limit+1)...)
	if err != nil {
		return nil, "", fmt.Errorf("list deployments: %w", err)
	}
	defer rows.Close()
	var deps []Deployment
	for rows.Next() {
		d, err := scanDeployment(rows)
		if err != nil {
			return nil, "", fmt.Errorf("list deployments: %w", err)
		}
		deps = append(deps, d)
	}
	if err := rows.Err(); err != nil {
		return nil, "", fmt.Errorf("list deployments: %w", err)
	}
	if len(deps) > limit {
		deps = deps[:limit]
		return deps, deps[limit-1].ID, nil
	}
	return deps, "", nil
}

// SetDeploymentStatus implements Store.
func (s *sqlStore) SetDeploymentStatus(ctx context.Context, id string,
	to DeploymentStatus) (Deployment, error) {
	var d Deployment
	op := fmt.Sprintf("set deployment %s status %s", id, to)
	err := s.update(ctx, op, func(tx conn) error {
		if !to.valid() {
			return fmt.Errorf("%w: deployment status %q", ErrInvalid, to)
		}
		var err error
		d, err = deploymentByID(ctx, tx, id, true)
		if err != nil || d.Status == to {
			return err
		}
		if !d.Status.CanBecome(to) {
			return fmt.Errorf("%w: from %s", ErrInvalidTransition, d.Status)
		}
		d.Status, d.Updated = to, s.stamp()
		_, err = tx.ExecContext(ctx, `UPDATE deployments SET status = ?, updated = ? WHERE id = ?`,
			d.Status, micro(d.Updated), id)
		if err != nil || to != DeploymentAborted {
			return err
		}
		return skipPending(ctx, tx, id, d.Updated)
	})
	return d, err
}

// skipPending marks the devices of a deployment that were never started
// as skipped and moves them in the counts by the phases the update
// returns, which are exactly the rows it changed even while devices
// report concurrently.
func skipPending(ctx context.Context, tx conn, deploymentID string, now time.Time) error {
	rows, err := tx.QueryContext(ctx, `UPDATE deployment_devices
		SET state = ?, updated = ?, finished = ?
		WHERE deployment_id = ? AND state = ? AND started IS NULL RETURNING phase`,
		StateSkipped, micro(now), micro(now), deploymentID, StatePending)
	if err != nil {
		return err
	}
	skipped := map[int]int{}
	for rows.Next() {
		var phase int
		if err := rows.Scan(&phase); err != nil {
			rows.Close()
			return err
		}
		skipped[phase]++
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return err
	}
	for _, phase := range slices.Sorted(maps.Keys(skipped)) {
		err := shift(ctx, tx, deploymentID, phase, StatePending, StateSkipped, skipped[phase])
		if err != nil {
			return err
		}
	}
	return nil
}

// move counts one device of a phase out of state from and into state to.
func move(ctx context.Context, tx conn, deploymentID string, phase int,
	from, to TargetState) error {
	return shift(ctx, tx, deploymentID, phase, from, to, 1)
}

// shift counts n devices of a phase out of state from and into state to.
// It writes the two counts in the order of their states, so that two
// transactions shifting between the same states in opposite directions
// never wait for each other in a cycle.
func shift(ctx context.Context, tx conn, deploymentID string, phase int,
	from, to TargetState, n int) error {
	if from == to || n == 0 {
		return nil
	}
	take := func() error {
		_, err := tx.ExecContext(ctx, `UPDATE deployment_counts SET n = n - ?
			WHERE deployment_id = ? AND phase = ? AND state = ?`, n, deploymentID, phase, from)
		return err
	}
	give := func() error { return addCount(ctx, tx, deploymentID, phase, to, n) }
	first, second := take, give
	if to < from {
		first, second = give, take
	}
	if err := first(); err != nil {
		return err
	}
	return second()
}

// addCount adds n devices to the count of a phase and state.
func addCount(ctx context.Context, tx conn, deploymentID string, phase int,
	state TargetState, n int) error {
	_, err := tx.ExecContext(ctx, `INSERT INTO deployment_counts (deployment_id, phase, state, n)
		VALUES (?, ?, ?, ?)
		ON CONFLICT (deployment_id, phase, state) DO UPDATE SET n = deployment_counts.n + ?`,
		deploymentID, phase, state, n, n)
	return err
}

// AddDeploymentDevices implements Store. The deployment's row is locked
// first, then each device's row in the order of their IDs: two calls
// adding the same device to two deployments queue on the device, and
// the second sees the first's row when it checks that the device is
// free. Taking the devices in one order keeps two such calls from
// waiting for each other.
func (s *sqlStore) AddDeploymentDevices(ctx context.Context, deploymentID string, phase int,
	deviceIDs []string) error {
	op := fmt.Sprintf("add %d devices to deployment %s", len(deviceIDs), deploymentID)
	return s.update(ctx, op, func(tx conn) error {
		d, err := deploymentByID(ctx, tx, deploymentID, true)
		if err != nil {
			return err
		}
		switch {
		case d.Status != DeploymentActive && d.Status != DeploymentPaused:
			return fmt.Errorf("%w: deployment is %s", ErrInvalidTransition, d.Status)
		case phase < 0 || phase >= max(1, len(d.Strategy.Phases)):
			return fmt.Errorf("%w: phase %d", ErrInvalid, phase)
		}
		now := micro(s.stamp())
		for _, dev := range slices.Sorted(slices.Values(deviceIDs)) {
			err := lockRows(ctx, tx, `SELECT id FROM devices WHERE id = ?`, dev)
			if err != nil {
				return err
			}
			if err := checkNotBusy(ctx, tx, deploymentID, dev); err != nil {
				return err
			}
			_, err = tx.ExecContext(ctx, `INSERT INTO deployment_devices (deployment_id,
				device_id, phase, state, attempts, message, log, created, updated)
				VALUES (?, ?, ?, ?, 0, '', 'null', ?, ?)`,
				deploymentID, dev, phase, StatePending, now, now)
			switch {
			case s.d.isUnique(err):
				return fmt.Errorf("device %s: %w", dev, ErrExists)
			case s.d.isForeignKey(err):
				return fmt.Errorf("device %s: %w", dev, ErrNotFound)
			case err != nil:
				return err
			}
		}
		return addCount(ctx, tx, deploymentID, phase, StatePending, len(deviceIDs))
	})
}

func checkNotBusy(ctx context.Context, tx conn, deploymentID, deviceID string) error {
	var other string
	err := tx.QueryRowContext(ctx, `SELECT dd.deployment_id FROM deployment_devices dd
		JOIN deployments d ON d.id = dd.deployment_id
		WHERE dd.device_id = ? AND dd.deployment_id <> ?
		AND d.status IN ('active', 'paused') AND dd.state NOT IN `+finalStates+`
		LIMIT 1`, deviceID, deploymentID).Scan(&other)
	if errors.Is(err, sql.ErrNoRows) {
		return nil
	}
	if err != nil {
		return err
	}
	return fmt.Errorf("device %s in deployment %s: %w", deviceID, other, ErrDeviceBusy)
}

// StartDevices implements Store. Counting the devices in progress and
// marking new ones happen in one write transaction that holds the
// deployment: SQLite runs one writer at a time, and on PostgreSQL the
// transaction locks the deployment's row first. Concurrent calls, from
// this process or another sharing the database, run one after the other
// and cannot overshoot MaxConcurrent.
func (s *sqlStore) StartDevices(ctx context.Context, deploymentID string,
	phase, n int) ([]string, error) {
	var started []string
	op := fmt.Sprintf("start devices of deployment %s phase %d", deploymentID, phase)
	err := s.update(ctx, op, func(tx conn) error {
		d, err := deploymentByID(ctx, tx, deploymentID, true)
		if err != nil || d.Status != DeploymentActive {
			return err
		}
		room := n
		if d.Strategy.MaxConcurrent > 0 {
			busy, err := inProgress(ctx, tx, deploymentID)
			if err != nil {
				return err
			}
			room = min(room, d.Strategy.MaxConcurrent-busy)
		}
		if room <= 0 {
			return nil
		}
		started, err = pendingDevices(ctx, tx, deploymentID, phase, room)
		if err != nil {
			return err
		}
		now := micro(s.stamp())
		for _, dev := range started {
			_, err := tx.ExecContext(ctx, `UPDATE deployment_devices
				SET started = ?, attempts = attempts + 1, updated = ?
				WHERE deployment_id = ? AND device_id = ?`, now, now, deploymentID, dev)
			if err != nil {
				return err
			}
		}
		return nil
	})
	return started, err
}

func pendingDevices(ctx context.Context, tx conn, deploymentID string,
	phase, n int) ([]string, error) {
	rows, err := tx.QueryContext(ctx, tx.locking(`SELECT device_id FROM deployment_devices
		WHERE deployment_id = ? AND phase = ? AND state = ? AND started IS NULL
		ORDER BY device_id LIMIT ?`, true), deploymentID, phase, StatePending, n)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var ids []string
	for rows.Next() {
		var id string
		if err := rows.Scan(&id); err != nil {
			return nil, err
		}
		ids = append(ids, id)
	}
	return ids, rows.Err()
}

// inProgress counts the started devices not in a final state. The
// partial index deployment_devices_in_progress holds exactly these rows,
// so the count reads no more of them than the deployment runs at once.
func inProgress(ctx context.Context, q conn, deploymentID string) (int, error) {
	var n int
	err := q.QueryRowContext(ctx, `SELECT COUNT(*) FROM deployment_devices
		WHERE deployment_id = ? AND started IS NOT NULL AND state NOT IN `+finalStates,
		deploymentID).Scan(&n)
	return n, err
}

// RetryDevice implements Store.
func (s *sqlStore) RetryDevice(ctx context.Context, deploymentID, deviceID string) (bool, error) {
	retried := false
	op := fmt.Sprintf("retry device %s in deployment %s", deviceID, deploymentID)
	err := s.update(ctx, op, func(tx conn) error {
		d, err := deploymentByID(ctx, tx, deploymentID, false)
		if err != nil {
			return err
		}
		// The device's row first, as AddDeploymentDevices takes it: a
		// device that failed here may since have joined another
		// deployment, and then it is not taken back.
		if err := lockRows(ctx, tx, `SELECT id FROM devices WHERE id = ?`, deviceID); err != nil {
			return err
		}
		dd, err := deviceDeployment(ctx, tx, deploymentID, deviceID, true)
		if err != nil {
			return err
		}
		failed := dd.State == TargetState(poll.ReportFailure) ||
			dd.State == TargetState(poll.ReportRolledBack)
		if !failed || d.Status != DeploymentActive || dd.Attempts > d.Strategy.Retries {
			return nil
		}
		switch err := checkNotBusy(ctx, tx, deploymentID, deviceID); {
		case errors.Is(err, ErrDeviceBusy):
			return nil
		case err != nil:
			return err
		}
		_, err = tx.ExecContext(ctx, `UPDATE deployment_devices
			SET state = ?, started = NULL, updated = ?, finished = NULL
			WHERE deployment_id = ? AND device_id = ?`,
			StatePending, micro(s.stamp()), deploymentID, deviceID)
		if err != nil {
			return err
		}
		retried = true
		return move(ctx, tx, deploymentID, dd.Phase, dd.State, StatePending)
	})
	return retried, err
}

const deviceDeploymentColumns = `deployment_id, device_id, phase, state, started, attempts,
	last_report, message, log, finished, created, updated`

func scanDeviceDeployment(sc scanner) (DeviceDeployment, error) {
	var (
		dd                      DeviceDeployment
		log                     string
		started, last, finished sql.NullInt64
		created, updated        sql.NullInt64
	)
	err := sc.Scan(&dd.DeploymentID, &dd.DeviceID, &dd.Phase, &dd.State, &started,
		&dd.Attempts, &last, &dd.Message, &log, &finished, &created, &updated)
	if err != nil {
		return DeviceDeployment{}, err
	}
	if err := jsonUnmarshal(log, &dd.Log); err != nil {
		return DeviceDeployment{}, fmt.Errorf("device %s in deployment %s: %w",
			dd.DeviceID, dd.DeploymentID, err)
	}
	dd.Started, dd.LastReport, dd.Finished = fromMicro(started), fromMicro(last),
		fromMicro(finished)
	dd.Created, dd.Updated = fromMicro(created), fromMicro(updated)
	return dd, nil
}

// deviceDeployment reads one device's state in one deployment. With lock,
// writers that change it or lock it too wait until q, a transaction, ends.
func deviceDeployment(ctx context.Context, q conn, deploymentID, deviceID string,
	lock bool) (DeviceDeployment, error) {
	row := q.QueryRowContext(ctx, q.locking(`SELECT `+deviceDeploymentColumns+`
		FROM deployment_devices WHERE deployment_id = ? AND device_id = ?`, lock),
		deploymentID, deviceID)
	dd, err := scanDeviceDeployment(row)
	if err != nil {
		return DeviceDeployment{}, fmt.Errorf("get device %s in deployment %s: %w",
			deviceID, deploymentID, notFound(err))
	}
	return dd, nil
}

// DeviceDeployment implements Store.
func (s *sqlStore) DeviceDeployment(ctx context.Context, deploymentID,
	deviceID string) (DeviceDeployment, error) {
	return deviceDeployment(ctx, s.reader(), deploymentID, deviceID, false)
}

// ActiveDeviceDeployment implements Store.
func (s *sqlStore) ActiveDeviceDeployment(ctx context.Context,
	deviceID string) (DeviceDeployment, error) {
	row := s.reader().QueryRowContext(ctx, `SELECT `+prefixed("dd.", deviceDeploymentColumns)+`
		FROM deployment_devices dd JOIN deployments d ON d.id = dd.deployment_id
		WHERE dd.device_id = ? AND d.status IN ('active', 'paused')
		AND dd.state NOT IN `+finalStates+`
		ORDER BY dd.created DESC LIMIT 1`, deviceID)
	dd, err := scanDeviceDeployment(row)
	if err != nil {
		return DeviceDeployment{}, fmt.Errorf("get active deployment of device %s: %w",
			deviceID, notFound(err))
	}
	return dd, nil
}

// ListDeviceDeployments implements Store.
func (s *sqlStore) ListDeviceDeployments(ctx context.Context, f DeviceDeploymentFilter,
	p Page) ([]DeviceDeployment, string, error) {
	list, next, err := s.listDeviceDeployments(ctx, f, p)
	if err != nil {
		return nil, "", fmt.Errorf("list device deployments: %w", err)
	}
	return list, next, nil
}

func (s *sqlStore) listDeviceDeployments(ctx context.Context, f DeviceDeploymentFilter,
	p Page) ([]DeviceDeployment, string, error) {
	limit, err := p.limit()
	if err != nil {
		return nil, "", err
	}
	w := &where{}
	if f.DeploymentID != "" {
		w.add("deployment_id = ?", f.DeploymentID)
	}
	if f.DeviceID != "" {
		w.add("device_id = ?", f.DeviceID)
	}
	if f.Phase != nil {
		w.add("phase = ?", *f.Phase)
	}
	if f.State != "" {
		w.add("state = ?", f.State)
	}
	if p.After != "" {
		dep, dev, err := splitCursor(p.After)
		if err != nil {
			return nil, "", err
		}
		w.add("(deployment_id > ? OR (deployment_id = ? AND device_id > ?))", dep, dep, dev)
	}
	rows, err := s.reader().QueryContext(ctx, `SELECT `+deviceDeploymentColumns+`
		FROM deployment_devices`+w.String()+` ORDER BY deployment_id, device_id LIMIT ?`,
		append(w.args, limit+1)...)
	if err != nil {
		return nil, "", err
	}
	defer rows.Close()
	var list []DeviceDeployment
	for rows.Next() {
		dd, err := scanDeviceDeployment(rows)
		if err != nil {
			return nil, "", err
		}
		list = append(list, dd)
	}
	if err := rows.Err(); err != nil {
		return nil, "", err
	}
	if len(list) > limit {
		list = list[:limit]
		last := list[limit-1]
		return list, url.QueryEscape(last.DeploymentID) + "," + url.QueryEscape(last.DeviceID), nil
	}
	return list, "", nil
}

func splitCursor(c string) (string, string, error) {
	a, b, ok := strings.Cut(c, ",")
	dep, err1 := url.QueryUnescape(a)
	dev, err2 := url.QueryUnescape(b)
	if !ok || err1 != nil || err2 != nil {
		return "", "", fmt.Errorf("%w: cursor %q", ErrInvalid, c)
	}
	return dep, dev, nil
}

// DeploymentCounts implements Store.
func (s *sqlStore) DeploymentCounts(ctx context.Context,
	deploymentID string) (DeploymentCounts, error) {
	c, err := s.deploymentCounts(ctx, deploymentID)
	if err != nil {
		return DeploymentCounts{}, fmt.Errorf("count devices of deployment %s: %w",
			deploymentID, err)
	}
	return c, nil
}

func (s *sqlStore) deploymentCounts(ctx context.Context,
	deploymentID string) (DeploymentCounts, error) {
	// Read both in one transaction on one snapshot, so they agree with
	// each other.
	sqlTx, err := s.r.BeginTx(ctx, s.d.readTx)
	if err != nil {
		return DeploymentCounts{}, err
	}
	defer sqlTx.Rollback()
	tx := conn{q: sqlTx, d: s.d}
	if _, err := deploymentByID(ctx, tx, deploymentID, false); err != nil {
		return DeploymentCounts{}, err
	}
	c := DeploymentCounts{All: Counts{}, Phases: map[int]Counts{}}
	rows, err := tx.QueryContext(ctx, `SELECT phase, state, n FROM deployment_counts
		WHERE deployment_id = ? AND n > 0`, deploymentID)
	if err != nil {
		return DeploymentCounts{}, err
	}
	defer rows.Close()
	for rows.Next() {
		var (
			phase, n int
			state    TargetState
		)
		if err := rows.Scan(&phase, &state, &n); err != nil {
			return DeploymentCounts{}, err
		}
		if c.Phases[phase] == nil {
			c.Phases[phase] = Counts{}
		}
		c.Phases[phase][state] = n
		c.All[state] += n
	}
	if err := rows.Err(); err != nil {
		return DeploymentCounts{}, err
	}
	c.InProgress, err = inProgress(ctx, tx, deploymentID)
	return c, err
}
