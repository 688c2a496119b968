-- Buyers' carts: one row per buyer, the lines as JSON, written whole by the buyer's user entity
-- with a version check like every entity row.
CREATE TABLE carts (
    user_id TEXT PRIMARY KEY,
    items TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    version INTEGER NOT NULL
);
