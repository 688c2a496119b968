-- Checkout: orders gain their lines as JSON (`order_lines`: `lines` is a reserved word in MySQL;
-- one per product; NULL on orders from before, whose one line is their product, quantity and
-- amount) and the checkout that made them.
ALTER TABLE orders ADD COLUMN order_lines TEXT;
ALTER TABLE orders ADD COLUMN checkout_id TEXT;

-- A reservation is now one line of an order: keyed by order and product. `unit_price` is the
-- price the line was reserved at (NULL before checkout existed), so a retried reservation answers
-- the same price. A line released before it was ever reserved leaves a row with quantity 0 and
-- released = 1, so a reservation arriving late cannot take stock nobody gives back.
CREATE TABLE reservations_by_line (
    order_id TEXT NOT NULL,
    product_id TEXT NOT NULL,
    quantity INTEGER NOT NULL,
    released INTEGER NOT NULL DEFAULT 0,
    unit_price INTEGER,
    PRIMARY KEY (order_id, product_id)
);
INSERT INTO reservations_by_line (order_id, product_id, quantity, released)
    SELECT order_id, product_id, quantity, released FROM reservations;
DROP TABLE reservations;
ALTER TABLE reservations_by_line RENAME TO reservations;
CREATE INDEX reservations_held ON reservations (product_id) WHERE released = 0;

-- One row per checkout, written by its checkout entity only (with a version check); `body` is the
-- plan and, once open, the orders it made, as JSON. The sweep looks for checkouts left half-way (RESERVING, or RELEASING: failed with lines perhaps still held).
CREATE TABLE checkouts (
    id TEXT PRIMARY KEY,
    buyer_id TEXT NOT NULL,
    status TEXT NOT NULL,
    body TEXT NOT NULL,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    version INTEGER NOT NULL
);
CREATE INDEX checkouts_unfinished ON checkouts (updated_at) WHERE status IN ('RESERVING', 'RELEASING');
