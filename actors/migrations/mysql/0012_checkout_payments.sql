-- One payment for a whole checkout: a payment gains the checkout it pays (NULL for an order's own
-- payment, whose order_id is its order; a checkout's payment keeps the checkout id there too, as
-- the id the gateway knows the charge by) and its shares as JSON, one per order it pays with the
-- order's seller, amount and what was given back of it (NULL on payments from before, whose one
-- share is their order).
ALTER TABLE payments ADD COLUMN checkout_id VARCHAR(255) COLLATE utf8mb4_bin;
ALTER TABLE payments ADD COLUMN shares MEDIUMTEXT;
