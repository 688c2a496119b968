-- When a token family was revoked (logout, or a spent refresh token presented again). Access
-- tokens carry their family as `sid`; every node keeps the families revoked within the access
-- token lifetime in memory and reads this column to learn of revocations made on other nodes.
ALTER TABLE token_families ADD COLUMN revoked_at VARCHAR(40) COLLATE utf8mb4_bin;
CREATE INDEX token_families_revoked_at ON token_families (revoked_at);
