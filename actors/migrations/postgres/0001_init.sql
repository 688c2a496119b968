-- Every entity table carries a `version` column: writes check it (optimistic concurrency), so two
-- activations of one entity can never both commit from the same state.
--
-- The PostgreSQL twin of migrations/sqlite: the same tables and columns. Every integer is BIGINT
-- because the code reads them all as i64; timestamps stay text (fixed-width UTC, see
-- store/timestamp.rs). Text compares byte by byte (COLLATE "C"), as in SQLite: ids page by
-- `id > cursor`, timestamps by text order, and neither may depend on the server's locale.

CREATE TABLE users (
    id TEXT COLLATE "C" PRIMARY KEY,
    email TEXT COLLATE "C" NOT NULL UNIQUE,
    password_hash TEXT COLLATE "C" NOT NULL,
    role TEXT COLLATE "C" NOT NULL,
    name TEXT COLLATE "C" NOT NULL,
    created_at TEXT COLLATE "C" NOT NULL,
    version BIGINT NOT NULL
);

CREATE TABLE token_families (
    id TEXT COLLATE "C" PRIMARY KEY,
    user_id TEXT COLLATE "C" NOT NULL,
    revoked BIGINT NOT NULL DEFAULT 0,
    created_at TEXT COLLATE "C" NOT NULL
);

CREATE TABLE refresh_tokens (
    token_hash TEXT COLLATE "C" PRIMARY KEY,
    family_id TEXT COLLATE "C" NOT NULL REFERENCES token_families(id),
    user_id TEXT COLLATE "C" NOT NULL,
    expires_at TEXT COLLATE "C" NOT NULL,
    spent BIGINT NOT NULL DEFAULT 0
);

CREATE TABLE products (
    id TEXT COLLATE "C" PRIMARY KEY,
    seller_id TEXT COLLATE "C" NOT NULL,
    name TEXT COLLATE "C" NOT NULL,
    description TEXT COLLATE "C" NOT NULL,
    price BIGINT NOT NULL,
    currency TEXT COLLATE "C" NOT NULL,
    stock BIGINT NOT NULL,
    created_at TEXT COLLATE "C" NOT NULL,
    version BIGINT NOT NULL
);
CREATE INDEX products_by_seller ON products (seller_id, id);

-- One row per order that holds stock; `released` makes giving it back happen once.
CREATE TABLE reservations (
    order_id TEXT COLLATE "C" PRIMARY KEY,
    product_id TEXT COLLATE "C" NOT NULL,
    quantity BIGINT NOT NULL,
    released BIGINT NOT NULL DEFAULT 0
);

CREATE TABLE orders (
    id TEXT COLLATE "C" PRIMARY KEY,
    buyer_id TEXT COLLATE "C" NOT NULL,
    seller_id TEXT COLLATE "C" NOT NULL,
    product_id TEXT COLLATE "C" NOT NULL,
    quantity BIGINT NOT NULL,
    amount BIGINT NOT NULL,
    currency TEXT COLLATE "C" NOT NULL,
    status TEXT COLLATE "C" NOT NULL,
    payment_id TEXT COLLATE "C",
    paid_at TEXT COLLATE "C",
    created_at TEXT COLLATE "C" NOT NULL,
    updated_at TEXT COLLATE "C" NOT NULL,
    version BIGINT NOT NULL
);
CREATE INDEX orders_by_buyer ON orders (buyer_id, id);
CREATE INDEX orders_by_seller ON orders (seller_id, id);

CREATE TABLE payments (
    id TEXT COLLATE "C" PRIMARY KEY,
    order_id TEXT COLLATE "C" NOT NULL,
    buyer_id TEXT COLLATE "C" NOT NULL,
    seller_id TEXT COLLATE "C" NOT NULL,
    amount BIGINT NOT NULL,
    currency TEXT COLLATE "C" NOT NULL,
    token TEXT COLLATE "C" NOT NULL,
    status TEXT COLLATE "C" NOT NULL,
    reason TEXT COLLATE "C",
    created_at TEXT COLLATE "C" NOT NULL,
    updated_at TEXT COLLATE "C" NOT NULL,
    version BIGINT NOT NULL
);

-- What the simulated gateway charged, keyed by payment id: a real gateway is idempotent by key, and
-- this table is the evidence that no payment is charged twice.
CREATE TABLE gateway_charges (
    payment_id TEXT COLLATE "C" PRIMARY KEY,
    amount BIGINT NOT NULL,
    outcome TEXT COLLATE "C" NOT NULL,
    refunded BIGINT NOT NULL DEFAULT 0,
    at TEXT COLLATE "C" NOT NULL
);

CREATE TABLE chat_rooms (
    id TEXT COLLATE "C" PRIMARY KEY,
    buyer_id TEXT COLLATE "C" NOT NULL,
    seller_id TEXT COLLATE "C" NOT NULL,
    created_at TEXT COLLATE "C" NOT NULL,
    last_seq BIGINT NOT NULL,
    version BIGINT NOT NULL
);
CREATE INDEX chat_rooms_by_buyer ON chat_rooms (buyer_id);
CREATE INDEX chat_rooms_by_seller ON chat_rooms (seller_id);

CREATE TABLE chat_messages (
    room_id TEXT COLLATE "C" NOT NULL,
    seq BIGINT NOT NULL,
    id TEXT COLLATE "C" NOT NULL,
    sender_id TEXT COLLATE "C" NOT NULL,
    client_msg_id TEXT COLLATE "C" NOT NULL,
    text TEXT COLLATE "C" NOT NULL,
    sent_at TEXT COLLATE "C" NOT NULL,
    PRIMARY KEY (room_id, seq),
    UNIQUE (room_id, sender_id, client_msg_id)
);

CREATE TABLE idempotency (
    user_id TEXT COLLATE "C" NOT NULL,
    key TEXT COLLATE "C" NOT NULL,
    request_hash TEXT COLLATE "C" NOT NULL,
    result_id TEXT COLLATE "C" NOT NULL,
    created_at TEXT COLLATE "C" NOT NULL,
    PRIMARY KEY (user_id, key)
);
CREATE INDEX idempotency_by_age ON idempotency (created_at);

-- Every event an entity decided, forever (the entity's history).
CREATE TABLE events (
    id TEXT COLLATE "C" PRIMARY KEY,
    topic TEXT COLLATE "C" NOT NULL,
    entity_id TEXT COLLATE "C" NOT NULL,
    seq BIGINT NOT NULL,
    type TEXT COLLATE "C" NOT NULL,
    at TEXT COLLATE "C" NOT NULL,
    body TEXT COLLATE "C" NOT NULL
);

-- Events committed but not yet in the event log; the relay drains it in order.
CREATE TABLE outbox (
    position BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    event_id TEXT COLLATE "C" NOT NULL
);

-- The embedded event log: a durable, ordered sequence of published events.
CREATE TABLE event_log (
    position BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    topic TEXT COLLATE "C" NOT NULL,
    event_id TEXT COLLATE "C" NOT NULL UNIQUE
);

CREATE TABLE consumer_offsets (
    consumer TEXT COLLATE "C" PRIMARY KEY,
    position BIGINT NOT NULL
);

CREATE TABLE processed_events (
    consumer TEXT COLLATE "C" NOT NULL,
    event_id TEXT COLLATE "C" NOT NULL,
    PRIMARY KEY (consumer, event_id)
);
