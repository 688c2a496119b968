-- Checkout: orders gain their lines as JSON (`order_lines`: `lines` is a reserved word in MySQL;
-- one per product; NULL on orders from before, whose one line is their product, quantity and
-- amount) and the checkout that made them.
ALTER TABLE orders ADD COLUMN order_lines TEXT;
ALTER TABLE orders ADD COLUMN checkout_id TEXT COLLATE "C";

-- A reservation is now one line of an order: keyed by order and product. `unit_price` is the
-- price the line was reserved at (NULL before checkout existed), so a retried reservation answers
-- the same price. A line released before it was ever reserved leaves a row with quantity 0 and
-- released = 1, so a reservation arriving late cannot take stock nobody gives back.
ALTER TABLE reservations DROP CONSTRAINT reservations_pkey;
ALTER TABLE reservations ADD PRIMARY KEY (order_id, product_id);
ALTER TABLE reservations ADD COLUMN unit_price BIGINT;

-- One row per checkout, written by its checkout entity only (with a version check); `body` is the
-- plan and, once open, the orders it made, as JSON. The sweep looks for checkouts left half-way (RESERVING, or RELEASING: failed with lines perhaps still held).
CREATE TABLE checkouts (
    id TEXT COLLATE "C" PRIMARY KEY,
    buyer_id TEXT COLLATE "C" NOT NULL,
    status TEXT NOT NULL,
    body TEXT NOT NULL,
    created_at TEXT COLLATE "C" NOT NULL,
    updated_at TEXT COLLATE "C" NOT NULL,
    version BIGINT NOT NULL
);
CREATE INDEX checkouts_unfinished ON checkouts (updated_at) WHERE status IN ('RESERVING', 'RELEASING');
