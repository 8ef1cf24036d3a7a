package store

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"maps"
	"slices"
	"sort"
	"strings"
	"time"
)

const deviceColumns = `id, key_id, public_key, identity, status, tags, groups_json,
	inventory, last_check, installed_version, installed_digest, slots, created, updated`

func scanDevice(sc scanner) (Device, error) {
	var (
		d                          Device
		identity, tags, groups     string
		inventory                  string
		lastCheck, created, update sql.NullInt64
		slots                      sql.NullString
	)
	err := sc.Scan(&d.ID, &d.KeyID, &d.PublicKeyPEM, &identity, &d.Status, &tags, &groups,
		&inventory, &lastCheck, &d.InstalledVersion, &d.InstalledDigest, &slots,
		&created, &update)
	if err != nil {
		return Device{}, err
	}
	for _, f := range []struct {
		src string
		dst any
	}{{identity, &d.Identity}, {tags, &d.Tags}, {groups, &d.Groups}, {inventory, &d.Inventory}} {
		if err := jsonUnmarshal(f.src, f.dst); err != nil {
			return Device{}, fmt.Errorf("device %s: %w", d.ID, err)
		}
	}
	d.LastCheck = fromMicro(lastCheck)
	d.Slots = fromRawJSON(slots)
	d.Created, d.Updated = fromMicro(created), fromMicro(update)
	return d, nil
}

// CreateDevice implements Store.
func (s *sqlStore) CreateDevice(ctx context.Context, d Device) (Device, error) {
	err := s.update(ctx, "create device "+d.ID, func(tx conn) error {
		var err error
		d, err = s.insertDevice(ctx, tx, d)
		return err
	})
	return d, err
}

// ImportDevices implements Store.
func (s *sqlStore) ImportDevices(ctx context.Context, ds []Device) error {
	return s.update(ctx, fmt.Sprintf("import %d devices", len(ds)), func(tx conn) error {
		for i, d := range ds {
			if _, err := s.insertDevice(ctx, tx, d); err != nil {
				return fmt.Errorf("device %d (key %.80s): %w", i, d.KeyID, err)
			}
		}
		return nil
	})
}

func (s *sqlStore) insertDevice(ctx context.Context, q conn, d Device) (Device, error) {
	if d.ID == "" {
		d.ID = newID()
	}
	if d.Status == "" {
		d.Status = StatusPending
	}
	switch {
	case d.KeyID == "" || d.PublicKeyPEM == "":
		return d, fmt.Errorf("%w: key ID and public key are required", ErrInvalid)
	case !d.Status.valid():
		return d, fmt.Errorf("%w: admission status %q", ErrInvalid, d.Status)
	}
	d.Tags, d.Groups = normalize(d.Tags), normalize(d.Groups)
	d.Created = s.stamp()
	d.Updated = d.Created
	_, err := q.ExecContext(ctx, `INSERT INTO devices (`+deviceColumns+`)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
		d.ID, d.KeyID, d.PublicKeyPEM, toJSON(nilIfEmpty(d.Identity)), d.Status,
		toJSON(d.Tags), toJSON(d.Groups), toJSON(nilIfEmpty(d.Inventory)),
		micro(d.LastCheck), d.InstalledVersion, d.InstalledDigest, rawJSON(d.Slots),
		micro(d.Created), micro(d.Updated))
	if s.d.isUnique(err) {
		return d, ErrExists
	}
	if err != nil {
		return d, err
	}
	if err := insertSet(ctx, q, "device_tags", "tag", d.ID, d.Tags); err != nil {
		return d, err
	}
	if err := insertSet(ctx, q, "device_groups", "group_name", d.ID, d.Groups); err != nil {
		return d, err
	}
	return d, insertInventory(ctx, q, d.ID, d.Inventory)
}

// Device implements Store.
func (s *sqlStore) Device(ctx context.Context, id string) (Device, error) {
	return s.deviceBy(ctx, s.reader(), "id", id, false)
}

// DeviceByKey implements Store.
func (s *sqlStore) DeviceByKey(ctx context.Context, keyID string) (Device, error) {
	return s.deviceBy(ctx, s.reader(), "key_id", keyID, false)
}

// deviceBy reads the device whose column col is v. With lock, writers
// that change the device or lock it too wait until q, a transaction, ends.
func (s *sqlStore) deviceBy(ctx context.Context, q conn, col, v string,
	lock bool) (Device, error) {
	row := q.QueryRowContext(ctx,
		q.locking(`SELECT `+deviceColumns+` FROM devices WHERE `+col+` = ?`, lock), v)
	d, err := scanDevice(row)
	if err != nil {
		return Device{}, fmt.Errorf("get device %s %s: %w", col, v, notFound(err))
	}
	return d, nil
}

func deviceWhere(f DeviceFilter) (*where, error) {
	w := &where{key: "d.id"}
	if f.Status != "" {
		if !f.Status.valid() {
			return nil, fmt.Errorf("%w: admission status %q", ErrInvalid, f.Status)
		}
		w.add("d.status = ?", f.Status)
	}
	if f.Version != "" {
		w.add("d.installed_version = ?", f.Version)
	}
	// Joins rather than subqueries let the planner walk one index in
	// device ID order from the cursor and stop after a page, so a page
	// costs the same at any depth. The first join drives: a tag is
	// usually the most selective, then a group.
	if f.Tag != "" {
		w.join("t", `JOIN device_tags t ON t.device_id = d.id AND t.tag = ?`, f.Tag)
	}
	if f.Group != "" {
		w.join("g", `JOIN device_groups g ON g.device_id = d.id AND g.group_name = ?`, f.Group)
	}
	for i, k := range slices.Sorted(maps.Keys(f.Inventory)) {
		a := fmt.Sprintf("i%d", i)
		w.join(a, `JOIN device_inventory `+a+` ON `+a+`.device_id = d.id
			AND `+a+`.name = ? AND `+a+`.value = ?`, k, f.Inventory[k])
	}
	return w, nil
}

// ListDevices implements Store.
func (s *sqlStore) ListDevices(ctx context.Context, f DeviceFilter,
	p Page) ([]Device, string, error) {
	devs, next, err := s.listDevices(ctx, f, p)
	if err != nil {
		return nil, "", fmt.Errorf("list devices: %w", err)
	}
	return devs, next, nil
}

func (s *sqlStore) listDevices(ctx context.Context, f DeviceFilter,
	p Page) ([]Device, string, error) {
	limit, err := p.limit()
	if err != nil {
		return nil, "", err
	}
	w, err := deviceWhere(f)
	if err != nil {
		return nil, "", err
	}
	if p.After != "" {
		w.after(p.After, s.d.cursorBothSides)
	}
	// One row more than asked tells whether a next page exists.
	rows, err := s.reader().QueryContext(ctx, `SELECT `+prefixed("d.", deviceColumns)+
		` FROM devices d`+w.String()+` ORDER BY `+w.key+` LIMIT ?`, append(w.all(), limit+1)...)
	if err != nil {
		return nil, "", err
	}
	defer rows.Close()
	var devs []Device
	for rows.Next() {
		d, err := scanDevice(rows)
		if err != nil {
			return nil, "", err
		}
		devs = append(devs, d)
	}
	if err := rows.Err(); err != nil {
		return nil, "", err
	}
	if len(devs) > limit {
		devs = devs[:limit]
		return devs, devs[limit-1].ID, nil
	}
	return devs, "", nil
}

// CountDevices implements Store.
func (s *sqlStore) CountDevices(ctx context.Context, f DeviceFilter) (int, error) {
	w, err := deviceWhere(f)
	if err != nil {
		return 0, fmt.Errorf("count devices: %w", err)
	}
	var n int
	err = s.reader().QueryRowContext(ctx, `SELECT COUNT(*) FROM devices d`+w.String(),
		w.all()...).Scan(&n)
	if err != nil {
		return 0, fmt.Errorf("count devices: %w", err)
	}
	return n, nil
}

// SetDeviceStatus implements Store.
func (s *sqlStore) SetDeviceStatus(ctx context.Context, id string,
	to AdmissionStatus) (Device, error) {
	var d Device
	err := s.update(ctx, fmt.Sprintf("set device %s status %s", id, to), func(tx conn) error {
		if !to.valid() {
			return fmt.Errorf("%w: admission status %q", ErrInvalid, to)
		}
		var err error
		d, err = s.deviceBy(ctx, tx, "id", id, true)
		if err != nil || d.Status == to {
			return err
		}
		if !d.Status.CanBecome(to) {
			return fmt.Errorf("%w: from %s", ErrInvalidTransition, d.Status)
		}
		d.Status, d.Updated = to, s.stamp()
		_, err = tx.ExecContext(ctx, `UPDATE devices SET status = ?, updated = ? WHERE id = ?`,
			d.Status, micro(d.Updated), id)
		return err
	})
	return d, err
}

// RecordCheck implements Store.
func (s *sqlStore) RecordCheck(ctx context.Context, id string, c CheckInfo) error {
	if c.At.IsZero() {
		c.At = s.stamp()
	}
	return s.update(ctx, "record check of device "+id, func(tx conn) error {
		return mustAffect(tx.ExecContext(ctx, `UPDATE devices SET last_check = ?,
			installed_version = ?, installed_digest = ?, slots = COALESCE(?, slots)
			WHERE id = ?`,
			micro(c.At), c.Version, c.Digest, rawJSON(c.Slots), id))
	})
}

// touchChunk is the most devices one TouchDevices statement updates;
// two parameters each stay far under either database's limit.
const touchChunk = 500

// TouchDevices implements Store.
func (s *sqlStore) TouchDevices(ctx context.Context, seen map[string]time.Time) error {
	if len(seen) == 0 {
		return nil
	}
	ids := slices.Sorted(maps.Keys(seen)) // one lock order for every writer
	return s.update(ctx, fmt.Sprintf("record checks of %d devices", len(ids)),
		func(tx conn) error {
			for chunk := range slices.Chunk(ids, touchChunk) {
				// One statement per chunk: a round trip per device costs
				// a busy fleet more than the update itself.
				args := make([]any, 0, 2*len(chunk))
				for _, id := range chunk {
					args = append(args, id, micro(seen[id]))
				}
				_, err := tx.ExecContext(ctx, `UPDATE devices SET last_check = v.column2
					FROM (VALUES (?, CAST(? AS BIGINT))`+
					strings.Repeat(", (?, CAST(? AS BIGINT))", len(chunk)-1)+`) AS v
					WHERE devices.id = v.column1
						AND (devices.last_check IS NULL OR devices.last_check < v.column2)`,
					args...)
				if err != nil {
					return err
				}
			}
			return nil
		})
}

// SetInventory implements Store.
func (s *sqlStore) SetInventory(ctx context.Context, id string, attrs map[string]string) error {
	return s.update(ctx, "set inventory of device "+id, func(tx conn) error {
		err := mustAffect(tx.ExecContext(ctx,
			`UPDATE devices SET inventory = ?, updated = ? WHERE id = ?`,
			toJSON(nilIfEmpty(attrs)), micro(s.stamp()), id))
		if err != nil {
			return err
		}
		return replaceInventory(ctx, tx, id, attrs)
	})
}

// SetTags implements Store.
func (s *sqlStore) SetTags(ctx context.Context, id string, tags []string) error {
	return s.setLabels(ctx, id, "tags", "device_tags", "tag", tags)
}

// SetGroups implements Store.
func (s *sqlStore) SetGroups(ctx context.Context, id string, groups []string) error {
	return s.setLabels(ctx, id, "groups_json", "device_groups", "group_name", groups)
}

func (s *sqlStore) setLabels(ctx context.Context, id, jsonCol, table, col string,
	labels []string) error {
	labels = normalize(labels)
	return s.update(ctx, "set "+col+"s of device "+id, func(tx conn) error {
		err := mustAffect(tx.ExecContext(ctx,
			`UPDATE devices SET `+jsonCol+` = ?, updated = ? WHERE id = ?`,
			toJSON(labels), micro(s.stamp()), id))
		if err != nil {
			return err
		}
		return replaceSet(ctx, tx, table, col, id, labels)
	})
}

// Groups implements Store.
func (s *sqlStore) Groups(ctx context.Context) ([]string, error) {
	rows, err := s.reader().QueryContext(ctx,
		`SELECT DISTINCT group_name FROM device_groups ORDER BY group_name`)
	if err != nil {
		return nil, fmt.Errorf("list groups: %w", err)
	}
	defer rows.Close()
	var groups []string
	for rows.Next() {
		var g string
		if err := rows.Scan(&g); err != nil {
			return nil, fmt.Errorf("list groups: %w", err)
		}
		groups = append(groups, g)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("list groups: %w", err)
	}
	return groups, nil
}

// DeleteDevice implements Store.
func (s *sqlStore) DeleteDevice(ctx context.Context, id string) error {
	return s.update(ctx, "delete device "+id, func(tx conn) error {
		// Lock the device, then its rows in deployments, in the order
		// AddDeploymentDevices and RecordReport take them, so that their
		// states cannot change before the counts are corrected.
		err := lockRows(ctx, tx, `SELECT id FROM devices WHERE id = ?`, id)
		if err != nil {
			return err
		}
		err = lockRows(ctx, tx, `SELECT deployment_id FROM deployment_devices
			WHERE device_id = ? ORDER BY deployment_id`, id)
		if err != nil {
			return err
		}
		// Counts are kept by hand, so take the device out of them first.
		_, err = tx.ExecContext(ctx, `UPDATE deployment_counts SET n = n - 1
			WHERE EXISTS (SELECT 1 FROM deployment_devices dd
				WHERE dd.device_id = ? AND dd.deployment_id = deployment_counts.deployment_id
				AND dd.phase = deployment_counts.phase AND dd.state = deployment_counts.state)`,
			id)
		if err != nil {
			return err
		}
		return mustAffect(tx.ExecContext(ctx, `DELETE FROM devices WHERE id = ?`, id))
	})
}

func replaceSet(ctx context.Context, q conn, table, col, id string, values []string) error {
	_, err := q.ExecContext(ctx, `DELETE FROM `+table+` WHERE device_id = ?`, id)
	if err != nil {
		return err
	}
	return insertSet(ctx, q, table, col, id, values)
}

func insertSet(ctx context.Context, q conn, table, col, id string, values []string) error {
	for _, v := range values {
		_, err := q.ExecContext(ctx,
			`INSERT INTO `+table+` (device_id, `+col+`) VALUES (?, ?)`, id, v)
		if err != nil {
			return err
		}
	}
	return nil
}

func replaceInventory(ctx context.Context, q conn, id string, attrs map[string]string) error {
	_, err := q.ExecContext(ctx, `DELETE FROM device_inventory WHERE device_id = ?`, id)
	if err != nil {
		return err
	}
	return insertInventory(ctx, q, id, attrs)
}

func insertInventory(ctx context.Context, q conn, id string, attrs map[string]string) error {
	for k, v := range attrs {
		_, err := q.ExecContext(ctx,
			`INSERT INTO device_inventory (device_id, name, value) VALUES (?, ?, ?)`, id, k, v)
		if err != nil {
			return err
		}
	}
	return nil
}

// normalize sorts labels and drops empty and repeated ones.
func normalize(labels []string) []string {
	if len(labels) == 0 {
		return nil
	}
	out := slices.Clone(labels)
	sort.Strings(out)
	out = slices.Compact(out)
	out = slices.DeleteFunc(out, func(s string) bool { return s == "" })
	if len(out) == 0 {
		return nil
	}
	return out
}

// nilIfEmpty stores an empty map as JSON null, so it reads back as nil.
func nilIfEmpty(m map[string]string) map[string]string {
	if len(m) == 0 {
		return nil
	}
	return m
}

func jsonUnmarshal(src string, dst any) error {
	if err := json.Unmarshal([]byte(src), dst); err != nil {
		return fmt.Errorf("decode stored JSON: %w", err)
	}
	return nil
}

// prefixed qualifies each column of a comma-separated list with a
// table alias.
func prefixed(alias, cols string) string {
	fields := strings.Split(cols, ",")
	for i, c := range fields {
		fields[i] = alias + strings.TrimSpace(c)
	}
	return strings.Join(fields, ", ")
}
