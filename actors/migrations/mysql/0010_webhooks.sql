-- Outbound webhooks: the endpoints sellers (and the operator, by configuration) register, one
-- delivery per event and endpoint (the unique key makes a re-read of the log harmless), and
-- every attempt of a delivery. The body is MEDIUMTEXT (read through LongText), the rest VARCHAR.
CREATE TABLE webhook_endpoints (
    id VARCHAR(64) NOT NULL PRIMARY KEY,
    owner_id VARCHAR(255) NOT NULL,
    url VARCHAR(2048) NOT NULL,
    events VARCHAR(1000) NOT NULL,
    secret VARCHAR(255) NOT NULL,
    previous_secret VARCHAR(255),
    previous_until VARCHAR(40),
    created_at VARCHAR(40) NOT NULL,
    deleted_at VARCHAR(40),
    INDEX webhook_endpoints_by_owner (owner_id, created_at)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;

CREATE TABLE webhook_deliveries (
    id VARCHAR(64) NOT NULL PRIMARY KEY,
    endpoint_id VARCHAR(64) NOT NULL,
    event_id VARCHAR(64) NOT NULL,
    event_type VARCHAR(64) NOT NULL,
    body MEDIUMTEXT NOT NULL,
    status VARCHAR(16) NOT NULL,
    attempt_count BIGINT NOT NULL,
    next_attempt_at VARCHAR(40),
    created_at VARCHAR(40) NOT NULL,
    UNIQUE KEY webhook_deliveries_once (endpoint_id, event_id),
    INDEX webhook_deliveries_due (status, next_attempt_at),
    INDEX webhook_deliveries_by_endpoint (endpoint_id, id)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;

CREATE TABLE webhook_attempts (
    delivery_id VARCHAR(64) NOT NULL,
    n BIGINT NOT NULL,
    at VARCHAR(40) NOT NULL,
    status_code BIGINT,
    error VARCHAR(500),
    duration_ms BIGINT NOT NULL,
    PRIMARY KEY (delivery_id, n)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;
