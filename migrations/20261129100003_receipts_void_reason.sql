-- read model "receipts": a receipt still waiting when its order is cancelled or expires is voided
-- (status VOIDED) and leaves the verification queue; the reason says which.
alter table receipts add column void_reason text;
