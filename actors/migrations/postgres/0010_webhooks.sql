-- Outbound webhooks: the endpoints sellers (and the operator, by configuration) register, one
-- delivery per event and endpoint (the unique key makes a re-read of the log harmless), and
-- every attempt of a delivery.
CREATE TABLE webhook_endpoints (
    id TEXT COLLATE "C" PRIMARY KEY,
    owner_id TEXT COLLATE "C" NOT NULL,
    url TEXT NOT NULL,
    events TEXT NOT NULL,
    secret TEXT NOT NULL,
    previous_secret TEXT,
    previous_until TEXT,
    created_at TEXT COLLATE "C" NOT NULL,
    deleted_at TEXT
);
CREATE INDEX webhook_endpoints_by_owner ON webhook_endpoints (owner_id, created_at);

CREATE TABLE webhook_deliveries (
    id TEXT COLLATE "C" PRIMARY KEY,
    endpoint_id TEXT COLLATE "C" NOT NULL,
    event_id TEXT COLLATE "C" NOT NULL,
    event_type TEXT NOT NULL,
    body TEXT NOT NULL,
    status TEXT NOT NULL,
    attempt_count BIGINT NOT NULL,
    next_attempt_at TEXT COLLATE "C",
    created_at TEXT COLLATE "C" NOT NULL,
    UNIQUE (endpoint_id, event_id)
);
CREATE INDEX webhook_deliveries_due ON webhook_deliveries (status, next_attempt_at);
CREATE INDEX webhook_deliveries_by_endpoint ON webhook_deliveries (endpoint_id, id);

CREATE TABLE webhook_attempts (
    delivery_id TEXT COLLATE "C" NOT NULL,
    n BIGINT NOT NULL,
    at TEXT COLLATE "C" NOT NULL,
    status_code BIGINT,
    error TEXT,
    duration_ms BIGINT NOT NULL,
    PRIMARY KEY (delivery_id, n)
);
