-- Times are Unix microseconds (UTC); NULL means never or none.

CREATE TABLE devices (
    id                TEXT PRIMARY KEY,
    key_id            TEXT NOT NULL UNIQUE,
    public_key        TEXT NOT NULL,
    identity          TEXT NOT NULL,
    status            TEXT NOT NULL,
    tags              TEXT NOT NULL,
    groups_json       TEXT NOT NULL,
    inventory         TEXT NOT NULL,
    last_check        INTEGER,
    installed_version TEXT NOT NULL,
    installed_digest  TEXT NOT NULL,
    slots             TEXT,
    created           INTEGER NOT NULL,
    updated           INTEGER NOT NULL
);
CREATE INDEX devices_status ON devices (status, id);
CREATE INDEX devices_version ON devices (installed_version, id);

-- Tags, groups and inventory are kept both as JSON on the device row (for
-- reading) and in these tables (for filtering through their indexes).
CREATE TABLE device_tags (
    device_id TEXT NOT NULL REFERENCES devices (id) ON DELETE CASCADE,
    tag       TEXT NOT NULL,
    PRIMARY KEY (device_id, tag)
);
CREATE INDEX device_tags_tag ON device_tags (tag, device_id);

CREATE TABLE device_groups (
    device_id  TEXT NOT NULL REFERENCES devices (id) ON DELETE CASCADE,
    group_name TEXT NOT NULL,
    PRIMARY KEY (device_id, group_name)
);
CREATE INDEX device_groups_name ON device_groups (group_name, device_id);

CREATE TABLE device_inventory (
    device_id TEXT NOT NULL REFERENCES devices (id) ON DELETE CASCADE,
    name      TEXT NOT NULL,
    value     TEXT NOT NULL,
    PRIMARY KEY (device_id, name)
);
CREATE INDEX device_inventory_value ON device_inventory (name, value, device_id);

CREATE TABLE releases (
    id             TEXT PRIMARY KEY,
    version        TEXT NOT NULL,
    compatible     TEXT NOT NULL,
    digest         TEXT NOT NULL UNIQUE,
    size           INTEGER NOT NULL,
    location       TEXT NOT NULL,
    signature_keys TEXT NOT NULL,
    images         TEXT,
    created        INTEGER NOT NULL
);
CREATE INDEX releases_compatible ON releases (compatible, version);

CREATE TABLE deployments (
    id            TEXT PRIMARY KEY,
    name          TEXT NOT NULL,
    release_id    TEXT NOT NULL REFERENCES releases (id),
    target_group  TEXT NOT NULL,
    target_filter TEXT,
    strategy      TEXT NOT NULL,
    status        TEXT NOT NULL,
    created       INTEGER NOT NULL,
    updated       INTEGER NOT NULL
);
CREATE INDEX deployments_status ON deployments (status, id);
CREATE INDEX deployments_release ON deployments (release_id);

CREATE TABLE deployment_devices (
    deployment_id TEXT NOT NULL REFERENCES deployments (id) ON DELETE CASCADE,
    device_id     TEXT NOT NULL REFERENCES devices (id) ON DELETE CASCADE,
    phase         INTEGER NOT NULL,
    state         TEXT NOT NULL,
    started       INTEGER,
    attempts      INTEGER NOT NULL,
    last_report   INTEGER,
    message       TEXT NOT NULL,
    log           TEXT NOT NULL,
    created       INTEGER NOT NULL,
    updated       INTEGER NOT NULL,
    PRIMARY KEY (deployment_id, device_id)
);
CREATE INDEX deployment_devices_phase
    ON deployment_devices (deployment_id, phase, state, device_id);
CREATE INDEX deployment_devices_device ON deployment_devices (device_id, deployment_id);

-- Counts per deployment, phase and state, kept in the same transaction as
-- every change of deployment_devices so that reading them costs nothing.
CREATE TABLE deployment_counts (
    deployment_id TEXT NOT NULL REFERENCES deployments (id) ON DELETE CASCADE,
    phase         INTEGER NOT NULL,
    state         TEXT NOT NULL,
    n             INTEGER NOT NULL,
    PRIMARY KEY (deployment_id, phase, state)
);

CREATE TABLE reports (
    deployment_id TEXT NOT NULL,
    device_id     TEXT NOT NULL,
    state         TEXT NOT NULL,
    report_id     TEXT NOT NULL,
    message       TEXT NOT NULL,
    log           TEXT NOT NULL,
    progress_done  INTEGER,
    progress_total INTEGER,
    reported      INTEGER,
    received      INTEGER NOT NULL,
    PRIMARY KEY (deployment_id, device_id, state, report_id),
    FOREIGN KEY (deployment_id, device_id)
        REFERENCES deployment_devices (deployment_id, device_id) ON DELETE CASCADE
);

CREATE TABLE audit_log (
    id      INTEGER PRIMARY KEY,
    actor   TEXT NOT NULL,
    action  TEXT NOT NULL,
    object  TEXT NOT NULL,
    at      INTEGER NOT NULL,
    details TEXT
);
CREATE INDEX audit_log_object ON audit_log (object, id);

CREATE TABLE users (
    name          TEXT PRIMARY KEY,
    role          TEXT NOT NULL,
    password_hash TEXT NOT NULL,
    created       INTEGER NOT NULL,
    updated       INTEGER NOT NULL
);

CREATE TABLE api_tokens (
    id      TEXT PRIMARY KEY,
    name    TEXT NOT NULL,
    role    TEXT NOT NULL,
    hash    BLOB NOT NULL UNIQUE,
    expires INTEGER,
    created INTEGER NOT NULL
);

CREATE TABLE sessions (
    id_hash   BLOB PRIMARY KEY,
    user_name TEXT NOT NULL REFERENCES users (name) ON DELETE CASCADE,
    csrf      TEXT NOT NULL,
    expires   INTEGER NOT NULL,
    created   INTEGER NOT NULL
);
CREATE INDEX sessions_expires ON sessions (expires);
CREATE INDEX sessions_user ON sessions (user_name);
