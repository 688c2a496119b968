-- The reservation hold: an order still ORDERED at expires_at is cancelled by the system and its
-- stock released. NULL on orders placed before holds existed (they keep their stock until
-- cancelled by hand). MySQL has no partial index: the sweep's index leads with the status, so the
-- earliest ORDERED orders by expires_at are still one range of it.
ALTER TABLE orders ADD COLUMN expires_at VARCHAR(40) COLLATE utf8mb4_bin;
CREATE INDEX orders_awaiting_payment ON orders (status, expires_at);
-- The units a product's open orders hold, summed when a seller sets the stock (so on-hand plus
-- reserved stays within the maximum).
CREATE INDEX reservations_held ON reservations (product_id, released);
