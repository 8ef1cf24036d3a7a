package store

import (
	"context"
	"database/sql"
	"fmt"
	"strings"
	"sync"
	"time"
)

// checkQueryTimeout bounds one CheckState query, which serves several
// callers and so runs under none of their contexts.
const checkQueryTimeout = 30 * time.Second

// checkBatcher gathers concurrent CheckState calls into queries of many
// devices each. A call made while fewer than maxQueries queries are out
// starts one at once; calls made while they are all out wait and go
// together in the next. A lone call therefore waits for nothing, and a
// burst of update checks costs the database one round trip per batch
// rather than per device.
type checkBatcher struct {
	s          *sqlStore
	maxQueries int // the most queries out at once
	maxBatch   int // the most devices one query reads

	mu      sync.Mutex
	pending []*checkCall
	queries int // queries out
}

// checkCall is one CheckState call waiting for its batch.
type checkCall struct {
	id   string
	st   CheckState
	err  error
	done chan struct{}
}

// get returns the check state of device id, read in some batch.
func (b *checkBatcher) get(ctx context.Context, id string) (CheckState, error) {
	c := &checkCall{id: id, done: make(chan struct{})}
	b.mu.Lock()
	b.pending = append(b.pending, c)
	if b.queries < b.maxQueries {
		b.queries++
		go b.run()
	}
	b.mu.Unlock()
	select {
	case <-c.done:
		return c.st, c.err
	case <-ctx.Done():
		return CheckState{}, fmt.Errorf("get check state of device %s: %w", id, ctx.Err())
	}
}

// run reads batches of the pending calls until none is left.
func (b *checkBatcher) run() {
	for {
		b.mu.Lock()
		n := min(len(b.pending), b.maxBatch)
		if n == 0 {
			b.queries--
			b.mu.Unlock()
			return
		}
		batch := b.pending[:n:n]
		b.pending = b.pending[n:]
		if len(b.pending) == 0 {
			b.pending = nil // let the backing array go
		}
		b.mu.Unlock()

		ids := make([]string, len(batch))
		for i, c := range batch {
			ids[i] = c.id
		}
		ctx, cancel := context.WithTimeout(context.Background(), checkQueryTimeout)
		states, err := b.s.checkStates(ctx, ids)
		cancel()
		for _, c := range batch {
			switch st, ok := states[c.id]; {
			case err != nil:
				c.err = err
			case !ok:
				c.err = fmt.Errorf("get check state of device %s: %w", c.id, ErrNotFound)
			default:
				c.st = st
			}
			close(c.done)
		}
	}
}

// CheckState implements Store.
func (s *sqlStore) CheckState(ctx context.Context, deviceID string) (CheckState, error) {
	return s.checks.get(ctx, deviceID)
}

// checkStates reads the check states of the devices ids in one query;
// devices that do not exist are missing from the map.
func (s *sqlStore) checkStates(ctx context.Context, ids []string) (map[string]CheckState,
	error) {
	// Batches of a power of two in size, the rest filled with the last
	// ID again, keep the number of distinct statements small.
	size := 1
	for size < len(ids) {
		size *= 2
	}
	args := make([]any, size)
	for i := range args {
		args[i] = ids[min(i, len(ids)-1)]
	}
	// A device takes part in one active deployment at most; should it
	// be in several, the newest counts.
	rows, err := s.reader().QueryContext(ctx, `SELECT d.id, d.status, d.last_check,
		d.installed_version, d.installed_digest, d.slots, dd.deployment_id, dd.phase,
		dd.state, dd.started, dd.attempts, dd.last_report, dd.message, dd.log, dd.finished,
		dd.created, dd.updated
		FROM devices d LEFT JOIN deployment_devices dd ON dd.device_id = d.id
			AND dd.state NOT IN `+finalStates+`
			AND EXISTS (SELECT 1 FROM deployments x WHERE x.id = dd.deployment_id
				AND x.status IN ('active', 'paused'))
		WHERE d.id IN (?`+strings.Repeat(", ?", size-1)+`)`, args...)
	if err != nil {
		return nil, fmt.Errorf("get check state of %d devices: %w", len(ids), err)
	}
	defer rows.Close()
	states := make(map[string]CheckState, len(ids))
	for rows.Next() {
		st, err := scanCheckState(rows)
		if err != nil {
			return nil, fmt.Errorf("get check state of %d devices: %w", len(ids), err)
		}
		if old, ok := states[st.Device.ID]; ok && old.Deployment != nil &&
			(st.Deployment == nil || st.Deployment.Created.Before(old.Deployment.Created)) {
			continue
		}
		states[st.Device.ID] = st
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("get check state of %d devices: %w", len(ids), err)
	}
	return states, nil
}

func scanCheckState(sc scanner) (CheckState, error) {
	var (
		st                   CheckState
		lastCheck            sql.NullInt64
		slots                sql.NullString
		depID, state, msg    sql.NullString
		log                  sql.NullString
		phase, attempts      sql.NullInt64
		started, last, c, up sql.NullInt64
		finished             sql.NullInt64
	)
	err := sc.Scan(&st.Device.ID, &st.Device.Status, &lastCheck, &st.Device.InstalledVersion,
		&st.Device.InstalledDigest, &slots, &depID, &phase, &state, &started, &attempts, &last,
		&msg, &log, &finished, &c, &up)
	if err != nil {
		return CheckState{}, err
	}
	st.Device.LastCheck = fromMicro(lastCheck)
	st.Device.Slots = fromRawJSON(slots)
	if !depID.Valid {
		return st, nil
	}
	dd := &DeviceDeployment{DeploymentID: depID.String, DeviceID: st.Device.ID,
		Phase: int(phase.Int64), State: TargetState(state.String), Started: fromMicro(started),
		Attempts: int(attempts.Int64), LastReport: fromMicro(last), Message: msg.String,
		Finished: fromMicro(finished), Created: fromMicro(c), Updated: fromMicro(up)}
	if err := jsonUnmarshal(log.String, &dd.Log); err != nil {
		return CheckState{}, fmt.Errorf("device %s in deployment %s: %w", st.Device.ID,
			dd.DeploymentID, err)
	}
	st.Deployment = dd
	return st, nil
}
