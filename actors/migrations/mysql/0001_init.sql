-- Every entity table carries a `version` column: writes check it (optimistic concurrency), so two
-- activations of one entity can never both commit from the same state.
--
-- The MySQL 8 / MariaDB 10.11 twin of migrations/postgres: the same tables and columns, in SQL both
-- servers accept. Every integer is BIGINT because the code reads them all as i64; timestamps stay
-- text (fixed-width UTC, see store/timestamp.rs). Text is VARCHAR, not TEXT: both servers report a
-- TEXT column as a blob, which sqlx's `Any` driver will not read as a string (the one exception,
-- `events.body`, is read through `LongText`); a VARCHAR key also fits in an index (InnoDB keys
-- hold 3,072 bytes, 768 utf8mb4 characters). Text compares byte by byte (utf8mb4_bin), as in
-- SQLite and PostgreSQL's COLLATE "C": ids page by `id > cursor`, timestamps by text order. The
-- lengths bound what the API accepts already (ids are UUIDs, e-mails 254, idempotency keys 200,
-- chat client ids 128, names 200, descriptions 5,000 and chat texts 4,000 characters).

CREATE TABLE users (
    id VARCHAR(255) NOT NULL PRIMARY KEY,
    email VARCHAR(255) NOT NULL UNIQUE,
    password_hash VARCHAR(255) NOT NULL,
    role VARCHAR(32) NOT NULL,
    name VARCHAR(255) NOT NULL,
    created_at VARCHAR(40) NOT NULL,
    version BIGINT NOT NULL
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;

CREATE TABLE token_families (
    id VARCHAR(255) NOT NULL PRIMARY KEY,
    user_id VARCHAR(255) NOT NULL,
    revoked BIGINT NOT NULL DEFAULT 0,
    created_at VARCHAR(40) NOT NULL
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;

-- A table-level FOREIGN KEY: MySQL parses a column's inline REFERENCES and ignores it.
CREATE TABLE refresh_tokens (
    token_hash VARCHAR(255) NOT NULL PRIMARY KEY,
    family_id VARCHAR(255) NOT NULL,
    user_id VARCHAR(255) NOT NULL,
    expires_at VARCHAR(40) NOT NULL,
    spent BIGINT NOT NULL DEFAULT 0,
    FOREIGN KEY (family_id) REFERENCES token_families (id)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;

CREATE TABLE products (
    id VARCHAR(255) NOT NULL PRIMARY KEY,
    seller_id VARCHAR(255) NOT NULL,
    name VARCHAR(255) NOT NULL,
    description VARCHAR(5000) NOT NULL,
    price BIGINT NOT NULL,
    currency VARCHAR(16) NOT NULL,
    stock BIGINT NOT NULL,
    created_at VARCHAR(40) NOT NULL,
    version BIGINT NOT NULL
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;
CREATE INDEX products_by_seller ON products (seller_id, id);

-- One row per order that holds stock; `released` makes giving it back happen once.
CREATE TABLE reservations (
    order_id VARCHAR(255) NOT NULL PRIMARY KEY,
    product_id VARCHAR(255) NOT NULL,
    quantity BIGINT NOT NULL,
    released BIGINT NOT NULL DEFAULT 0
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;

CREATE TABLE orders (
    id VARCHAR(255) NOT NULL PRIMARY KEY,
    buyer_id VARCHAR(255) NOT NULL,
    seller_id VARCHAR(255) NOT NULL,
    product_id VARCHAR(255) NOT NULL,
    quantity BIGINT NOT NULL,
    amount BIGINT NOT NULL,
    currency VARCHAR(16) NOT NULL,
    status VARCHAR(32) NOT NULL,
    payment_id VARCHAR(255),
    paid_at VARCHAR(40),
    created_at VARCHAR(40) NOT NULL,
    updated_at VARCHAR(40) NOT NULL,
    version BIGINT NOT NULL
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;
CREATE INDEX orders_by_buyer ON orders (buyer_id, id);
CREATE INDEX orders_by_seller ON orders (seller_id, id);

CREATE TABLE payments (
    id VARCHAR(255) NOT NULL PRIMARY KEY,
    order_id VARCHAR(255) NOT NULL,
    buyer_id VARCHAR(255) NOT NULL,
    seller_id VARCHAR(255) NOT NULL,
    amount BIGINT NOT NULL,
    currency VARCHAR(16) NOT NULL,
    token VARCHAR(1024) NOT NULL,
    status VARCHAR(32) NOT NULL,
    reason VARCHAR(1024),
    created_at VARCHAR(40) NOT NULL,
    updated_at VARCHAR(40) NOT NULL,
    version BIGINT NOT NULL
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;

-- What the simulated gateway charged, keyed by payment id: a real gateway is idempotent by key, and
-- this table is the evidence that no payment is charged twice.
CREATE TABLE gateway_charges (
    payment_id VARCHAR(255) NOT NULL PRIMARY KEY,
    amount BIGINT NOT NULL,
    outcome VARCHAR(255) NOT NULL,
    refunded BIGINT NOT NULL DEFAULT 0,
    at VARCHAR(40) NOT NULL
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;

CREATE TABLE chat_rooms (
    id VARCHAR(255) NOT NULL PRIMARY KEY,
    buyer_id VARCHAR(255) NOT NULL,
    seller_id VARCHAR(255) NOT NULL,
    created_at VARCHAR(40) NOT NULL,
    last_seq BIGINT NOT NULL,
    version BIGINT NOT NULL
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;
CREATE INDEX chat_rooms_by_buyer ON chat_rooms (buyer_id);
CREATE INDEX chat_rooms_by_seller ON chat_rooms (seller_id);

-- The unique key's three columns hold 3 x 255 x 4 = 3,060 bytes, within InnoDB's 3,072.
CREATE TABLE chat_messages (
    room_id VARCHAR(255) NOT NULL,
    seq BIGINT NOT NULL,
    id VARCHAR(255) NOT NULL,
    sender_id VARCHAR(255) NOT NULL,
    client_msg_id VARCHAR(255) NOT NULL,
    text VARCHAR(4000) NOT NULL,
    sent_at VARCHAR(40) NOT NULL,
    PRIMARY KEY (room_id, seq),
    UNIQUE (room_id, sender_id, client_msg_id)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;

-- `key` is a reserved word in MySQL: quoted here, and as "key" in queries (sessions set ANSI_QUOTES).
CREATE TABLE idempotency (
    user_id VARCHAR(255) NOT NULL,
    `key` VARCHAR(255) NOT NULL,
    request_hash VARCHAR(255) NOT NULL,
    result_id VARCHAR(255) NOT NULL,
    created_at VARCHAR(40) NOT NULL,
    PRIMARY KEY (user_id, `key`)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;
CREATE INDEX idempotency_by_age ON idempotency (created_at);

-- Every event an entity decided, forever (the entity's history). The body is MEDIUMTEXT (16 MiB):
-- a product's description, JSON-escaped, may outgrow what a VARCHAR row may hold.
CREATE TABLE events (
    id VARCHAR(255) NOT NULL PRIMARY KEY,
    topic VARCHAR(255) NOT NULL,
    entity_id VARCHAR(255) NOT NULL,
    seq BIGINT NOT NULL,
    type VARCHAR(255) NOT NULL,
    at VARCHAR(40) NOT NULL,
    body MEDIUMTEXT NOT NULL
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;

-- Events committed but not yet in the event log; the relay drains it in order.
CREATE TABLE outbox (
    position BIGINT NOT NULL AUTO_INCREMENT PRIMARY KEY,
    event_id VARCHAR(255) NOT NULL
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;

-- The embedded event log: a durable, ordered sequence of published events.
CREATE TABLE event_log (
    position BIGINT NOT NULL AUTO_INCREMENT PRIMARY KEY,
    topic VARCHAR(255) NOT NULL,
    event_id VARCHAR(255) NOT NULL UNIQUE
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;

-- The relays of several nodes take turns by locking this one row (store/backend.rs, relay_lock):
-- MySQL's LOCK TABLES would commit the transaction it is run in.
CREATE TABLE relay_turn (
    id BIGINT NOT NULL PRIMARY KEY
) ENGINE = InnoDB;
INSERT INTO relay_turn (id) VALUES (1);

CREATE TABLE consumer_offsets (
    consumer VARCHAR(255) NOT NULL PRIMARY KEY,
    position BIGINT NOT NULL
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;

CREATE TABLE processed_events (
    consumer VARCHAR(255) NOT NULL,
    event_id VARCHAR(255) NOT NULL,
    PRIMARY KEY (consumer, event_id)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;
