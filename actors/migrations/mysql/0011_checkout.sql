-- Checkout: orders gain their lines as JSON (`order_lines`: `lines` is a reserved word in MySQL;
-- one per product; NULL on orders from before, whose one line is their product, quantity and
-- amount) and the checkout that made them.
ALTER TABLE orders ADD COLUMN order_lines MEDIUMTEXT;
ALTER TABLE orders ADD COLUMN checkout_id VARCHAR(255) COLLATE utf8mb4_bin;

-- A reservation is now one line of an order: keyed by order and product. `unit_price` is the
-- price the line was reserved at (NULL before checkout existed), so a retried reservation answers
-- the same price. A line released before it was ever reserved leaves a row with quantity 0 and
-- released = 1, so a reservation arriving late cannot take stock nobody gives back.
ALTER TABLE reservations DROP PRIMARY KEY, ADD PRIMARY KEY (order_id, product_id);
ALTER TABLE reservations ADD COLUMN unit_price BIGINT;

-- One row per checkout, written by its checkout entity only (with a version check); `body` is the
-- plan and, once open, the orders it made, as JSON. The sweep looks for checkouts left half-way (RESERVING, or RELEASING: failed with lines perhaps still held)
-- (no partial index here: the index leads with the status).
CREATE TABLE checkouts (
    id VARCHAR(255) NOT NULL PRIMARY KEY,
    buyer_id VARCHAR(255) NOT NULL,
    status VARCHAR(16) NOT NULL,
    body MEDIUMTEXT NOT NULL,
    created_at VARCHAR(40) NOT NULL,
    updated_at VARCHAR(40) NOT NULL,
    version BIGINT NOT NULL,
    INDEX checkouts_unfinished (status, updated_at)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;
