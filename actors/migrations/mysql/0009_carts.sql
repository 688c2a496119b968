-- Buyers' carts: one row per buyer, the lines as JSON, written whole by the buyer's user entity
-- with a version check like every entity row.
CREATE TABLE carts (
    user_id VARCHAR(255) NOT NULL PRIMARY KEY,
    items MEDIUMTEXT NOT NULL,
    updated_at VARCHAR(40) NOT NULL,
    version BIGINT NOT NULL
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;
