package store

import (
	"context"
	"database/sql"
	"fmt"
	"time"

	"github.com/rotaupdate/rota/poll"
)

// RecordReport implements Store. It reads the device's state with a row
// lock, so that two reports of one device, even to two servers sharing
// the database, apply one after the other.
func (s *sqlStore) RecordReport(ctx context.Context, deploymentID, deviceID string,
	r poll.Report) (bool, error) {
	recorded := false
	op := fmt.Sprintf("record report %s of device %s in deployment %s",
		r.ID, deviceID, deploymentID)
	err := s.update(ctx, op, func(tx conn) error {
		if err := r.Validate(); err != nil {
			return fmt.Errorf("%w: %w", ErrInvalid, err)
		}
		dd, err := deviceDeployment(ctx, tx, deploymentID, deviceID, true)
		if err != nil {
			return err
		}
		now := s.stamp()
		var done, total any
		if r.Progress != nil {
			done, total = r.Progress.Done, r.Progress.Total
		}
		res, err := tx.ExecContext(ctx, `INSERT INTO reports (deployment_id, device_id, state,
			report_id, message, log, progress_done, progress_total, reported, received)
			VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
			ON CONFLICT (deployment_id, device_id, state, report_id) DO NOTHING`,
			deploymentID, deviceID, r.State, r.ID, r.Message, toJSON(r.Log), done, total,
			micro(r.Time), micro(now))
		if err != nil {
			return err
		}
		if n, err := res.RowsAffected(); err != nil || n == 0 {
			return err
		}
		recorded = true
		return s.advance(ctx, tx, dd, r, now)
	})
	return recorded, err
}

// advance moves a device's state in a deployment after a new report.
func (s *sqlStore) advance(ctx context.Context, tx conn, dd DeviceDeployment, r poll.Report,
	now time.Time) error {
	state := TargetState(r.State)
	if dd.State.Final() && !state.Final() {
		// A late retry of an earlier report must not undo the outcome.
		state = dd.State
	}
	log := append(dd.Log, r.Log...)
	if len(log) > MaxDeviceLog {
		log = log[len(log)-MaxDeviceLog:]
	}
	at := r.Time
	if at.IsZero() {
		at = now
	}
	started := dd.Started
	if started.IsZero() {
		started = now
	}
	finished := dd.Finished
	if state.Final() && !dd.State.Final() {
		finished = now
	}
	_, err := tx.ExecContext(ctx, `UPDATE deployment_devices SET state = ?, started = ?,
		last_report = ?, message = ?, log = ?, finished = ?, updated = ?
		WHERE deployment_id = ? AND device_id = ?`,
		state, micro(started), micro(at), r.Message, toJSON(log), micro(finished), micro(now),
		dd.DeploymentID, dd.DeviceID)
	if err != nil {
		return err
	}
	return move(ctx, tx, dd.DeploymentID, dd.Phase, dd.State, state)
}

// Reports implements Store.
func (s *sqlStore) Reports(ctx context.Context, deploymentID, deviceID string) ([]Report, error) {
	rows, err := s.reader().QueryContext(ctx, `SELECT state, report_id, message, log, progress_done,
		progress_total, reported, received FROM reports
		WHERE deployment_id = ? AND device_id = ? ORDER BY received, report_id`,
		deploymentID, deviceID)
	if err != nil {
		return nil, fmt.Errorf("list reports of device %s in deployment %s: %w",
			deviceID, deploymentID, err)
	}
	defer rows.Close()
	var reports []Report
	for rows.Next() {
		r, err := scanReport(rows)
		if err != nil {
			return nil, fmt.Errorf("list reports of device %s in deployment %s: %w",
				deviceID, deploymentID, err)
		}
		r.DeploymentID, r.DeviceID = deploymentID, deviceID
		reports = append(reports, r)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("list reports of device %s in deployment %s: %w",
			deviceID, deploymentID, err)
	}
	return reports, nil
}

func scanReport(sc scanner) (Report, error) {
	var (
		r                  Report
		log                string
		done, total        sql.NullInt64
		reported, received sql.NullInt64
	)
	err := sc.Scan(&r.State, &r.ID, &r.Message, &log, &done, &total, &reported, &received)
	if err != nil {
		return Report{}, err
	}
	if err := jsonUnmarshal(log, &r.Log); err != nil {
		return Report{}, err
	}
	if done.Valid {
		r.Progress = &poll.Progress{Done: done.Int64, Total: total.Int64}
	}
	r.Time, r.Received = fromMicro(reported), fromMicro(received)
	return r, nil
}
