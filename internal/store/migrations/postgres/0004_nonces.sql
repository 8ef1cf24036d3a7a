-- Nonces of signed device requests, kept while a request carrying one
-- could still pass its timestamp check, so that a replay is refused by
-- every server replica, not only the one that saw the request. Each is
-- kept as its SHA-256.
CREATE TABLE used_nonces (
    nonce_hash BYTEA PRIMARY KEY,
    expires BIGINT NOT NULL
);
CREATE INDEX used_nonces_expires ON used_nonces (expires);
