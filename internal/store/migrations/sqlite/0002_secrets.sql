-- Secrets the server replicas share, such as the key that signs device
-- tokens; created once and never changed.
CREATE TABLE server_secrets (
    name    TEXT PRIMARY KEY,
    value   BLOB NOT NULL,
    created INTEGER NOT NULL
);
