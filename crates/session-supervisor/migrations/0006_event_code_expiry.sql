-- session-supervisor 0006: a pairing code leaves the event history of the PostgreSQL event bus
-- (PgEventBus) when it expires, issue 13. Until now a stored PairingCode change kept its code
-- until retention pruned the row (7 days by default).
--
-- code_expires_us is when the pairing code a row holds expires, in microseconds since the Unix
-- epoch rounded up (so a row is never taken for expired before its code is), read from the
-- stored change itself (PgEventBus's StoredChange: kind.type 'pairing_code', kind.expires_at as
-- serde writes a SystemTime). It is NULL for every other kind, and NULL again once
-- PgEventBus::scrub_expired has rewritten the change to its redacted form (kind.type
-- 'pairing_code_expired', the expiry kept, the code gone). So the partial index holds only the
-- rows that still hold a code, and the scrub is one indexed UPDATE per tenant.
--
-- Generated, not written by the publisher: rows stored before this migration get it as the
-- table is rewritten (whatever the row-level security policies), and no writer can set it
-- wrong. numeric arithmetic, capped at bigint's end, so no stored value can make an insert fail.
--
-- Rows are rewritten, never deleted: their numbers stay held, so a subscriber resuming from
-- before a withheld code gets the changes around it and no gap.

ALTER TABLE supervisor_events
    ADD COLUMN code_expires_us bigint GENERATED ALWAYS AS (
        CASE WHEN change #>> '{kind,type}' = 'pairing_code' THEN
            LEAST(
                (change #>> '{kind,expires_at,secs_since_epoch}')::numeric * 1000000
                    + ceil((change #>> '{kind,expires_at,nanos_since_epoch}')::numeric / 1000),
                9223372036854775807
            )::bigint
        END
    ) STORED;

-- scrub_expired looks for a tenant's rows whose code expired.
CREATE INDEX supervisor_events_code_expiry ON supervisor_events (tenant_id, code_expires_us)
    WHERE code_expires_us IS NOT NULL;
