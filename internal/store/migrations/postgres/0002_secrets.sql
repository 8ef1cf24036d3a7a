-- Secrets the server replicas share, such as the key that signs device
-- tokens; created once and never changed.
CREATE TABLE server_secrets (
    name    TEXT COLLATE "C" PRIMARY KEY,
    value   BYTEA NOT NULL,
    created BIGINT NOT NULL
);
