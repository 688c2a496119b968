-- The reservation hold: an order still ORDERED at expires_at is cancelled by the system and its
-- stock released. NULL on orders placed before holds existed (they keep their stock until
-- cancelled by hand). The sweep asks for the earliest ORDERED orders by expires_at; the partial
-- index holds exactly those, so it stays small however many orders were ever placed.
ALTER TABLE orders ADD COLUMN expires_at TEXT COLLATE "C";
CREATE INDEX orders_awaiting_payment ON orders (expires_at) WHERE status = 'ORDERED' AND expires_at IS NOT NULL;
-- The units a product's open orders hold, summed when a seller sets the stock (so on-hand plus
-- reserved stays within the maximum): only unreleased reservations are indexed.
CREATE INDEX reservations_held ON reservations (product_id) WHERE released = 0;
