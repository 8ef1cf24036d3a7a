package store

import (
	"context"
	"database/sql"
	"fmt"
)

const releaseColumns = `id, version, compatible, digest, size, location, signature_keys,
	images, created`

func scanRelease(sc scanner) (Release, error) {
	var (
		r       Release
		keys    string
		images  sql.NullString
		created sql.NullInt64
	)
	err := sc.Scan(&r.ID, &r.Version, &r.Compatible, &r.Digest, &r.Size, &r.Location, &keys,
		&images, &created)
	if err != nil {
		return Release{}, err
	}
	if err := jsonUnmarshal(keys, &r.SignatureKeyIDs); err != nil {
		return Release{}, fmt.Errorf("release %s: %w", r.ID, err)
	}
	r.Images, r.Created = fromRawJSON(images), fromMicro(created)
	return r, nil
}

// CreateRelease implements Store.
func (s *sqlStore) CreateRelease(ctx context.Context, r Release) (Release, error) {
	if r.ID == "" {
		r.ID = newID()
	}
	r.Created = s.stamp()
	err := s.update(ctx, "create release "+r.Digest, func(tx conn) error {
		if r.Version == "" || r.Compatible == "" || r.Digest == "" || r.Location == "" {
			return fmt.Errorf("%w: version, compatible, digest and location are required",
				ErrInvalid)
		}
		_, err := tx.ExecContext(ctx, `INSERT INTO releases (`+releaseColumns+`)
			VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)`,
			r.ID, r.Version, r.Compatible, r.Digest, r.Size, r.Location,
			toJSON(r.SignatureKeyIDs), rawJSON(r.Images), micro(r.Created))
		if s.d.isUnique(err) {
			return ErrExists
		}
		return err
	})
	return r, err
}

// Release implements Store.
func (s *sqlStore) Release(ctx context.Context, id string) (Release, error) {
	return s.releaseBy(ctx, "id", id)
}

// ReleaseByDigest implements Store.
func (s *sqlStore) ReleaseByDigest(ctx context.Context, digest string) (Release, error) {
	return s.releaseBy(ctx, "digest", digest)
}

func (s *sqlStore) releaseBy(ctx context.Context, col, v string) (Release, error) {
	row := s.reader().QueryRowContext(ctx,
		`SELECT `+releaseColumns+` FROM releases WHERE `+col+` = ?`, v)
	r, err := scanRelease(row)
	if err != nil {
		return Release{}, fmt.Errorf("get release %s %s: %w", col, v, notFound(err))
	}
	return r, nil
}

// ListReleases implements Store.
func (s *sqlStore) ListReleases(ctx context.Context, p Page) ([]Release, string, error) {
	limit, err := p.limit()
	if err != nil {
		return nil, "", fmt.Errorf("list releases: %w", err)
	}
	rows, err := s.reader().QueryContext(ctx, `SELECT `+releaseColumns+` FROM releases
		WHERE id > ? ORDER BY id LIMIT ?`, p.After, limit+1)
	if err != nil {
		return nil, "", fmt.Errorf("list releases: %w", err)
	}
	defer rows.Close()
	var rels []Release
	for rows.Next() {
		r, err := scanRelease(rows)
		if err != nil {
			return nil, "", fmt.Errorf("list releases: %w", err)
		}
		rels = append(rels, r)
	}
	if err := rows.Err(); err != nil {
		return nil, "", fmt.Errorf("list releases: %w", err)
	}
	if len(rels) > limit {
		rels = rels[:limit]
		return rels, rels[limit-1].ID, nil
	}
	return rels, "", nil
}

// DeleteRelease implements Store.
func (s *sqlStore) DeleteRelease(ctx context.Context, id string) error {
	return s.update(ctx, "delete release "+id, func(tx conn) error {
		err := mustAffect(tx.ExecContext(ctx, `DELETE FROM releases WHERE id = ?`, id))
		if s.d.isForeignKey(err) {
			return ErrInUse
		}
		return err
	})
}
