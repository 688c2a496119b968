-- Partial refunds: a payment records how much of its amount has been given back. It stays
-- APPROVED while refunded_amount is under amount and becomes REFUNDED when it reaches it; a
-- payment refunded before this migration gave back everything.
ALTER TABLE payments ADD COLUMN refunded_amount BIGINT NOT NULL DEFAULT 0;
UPDATE payments SET refunded_amount = amount WHERE status = 'REFUNDED';
-- The simulated gateway's ledger keeps amounts: refunded_amount is what it gave back for a charge
-- (gateway_charges.refunded still counts the refund requests it received, the evidence of a
-- duplicate), and gateway_refunds holds one row per refund idempotency key, so a repeated
-- request gives nothing back twice. Charges refunded before this migration were refunded in full.
ALTER TABLE gateway_charges ADD COLUMN refunded_amount BIGINT NOT NULL DEFAULT 0;
UPDATE gateway_charges SET refunded_amount = amount WHERE refunded > 0;
CREATE TABLE gateway_refunds (
    idempotency_key TEXT COLLATE "C" PRIMARY KEY,
    payment_id TEXT COLLATE "C" NOT NULL,
    amount BIGINT NOT NULL,
    at TEXT COLLATE "C" NOT NULL
);
