-- session-supervisor 0004: the send outbox of the PostgreSQL backend (PgOutbox), issue 13
-- ("Sending, paced": one idempotency key never sends twice, also across a crash). Both tables
-- are tenant tables, made like those of 0001 to 0003 (tenant_id first in every key and index, a
-- foreign key to tenants with ON DELETE CASCADE, row-level security ENABLEd and FORCEd, the
-- tenant_isolation policy on the transaction-local app.tenant_id) and declared by the
-- component's MigrationSet.
--
-- One row per (tenant, idempotency key), written before any WAHA call: Outbox::begin is
-- INSERT ... ON CONFLICT (tenant_id, idempotency_key) DO NOTHING, so of racing sends with one key
-- exactly one inserts (the others wait for its transaction on the primary key, then conflict).
--
-- The message text is never stored: only its length and its fingerprint (text_fingerprint,
-- 64-bit FNV-1a), enough to tell a retry of the same request from a key reused for another one.
--
-- Retention: PgOutbox::prune deletes the records created before a cutoff (whatever their status)
-- and the early ack marks seen before it, tenant by tenant.

CREATE TABLE supervisor_outbox (
    tenant_id        text        NOT NULL REFERENCES tenants (tenant_id) ON DELETE CASCADE,
    -- The host's idempotency key (unique per tenant).
    idempotency_key  text        COLLATE "C" NOT NULL,
    chip_id          text        COLLATE "C" NOT NULL,
    -- The chat sent to (needed to tell a retry from another request; never logged).
    chat             text        NOT NULL,
    -- The text's length in bytes and its fingerprint, each a u64 stored as the bigint of the
    -- same 64 bits (a fingerprint at or above 2^63 reads negative here).
    text_len         bigint      NOT NULL,
    text_fingerprint bigint      NOT NULL,
    -- OutboxStatus::as_str.
    status           text        NOT NULL
        CHECK (status IN ('pending', 'sent', 'unknown', 'failed')),
    -- For 'failed' only: the error's kind (WahaError::kind).
    failure_reason   text,
    -- WAHA's message id, once sendText answered with one (never while 'pending').
    message_id       text        COLLATE "C",
    -- For 'sent' only: the highest delivery state seen (MessageAck as its wire number), moved
    -- forward only along MessageAck::supersedes' order.
    ack              bigint,
    created_at       timestamptz NOT NULL,
    updated_at       timestamptz NOT NULL,
    PRIMARY KEY (tenant_id, idempotency_key),
    CONSTRAINT supervisor_outbox_sent_has_ack CHECK ((status = 'sent') = (ack IS NOT NULL)),
    CONSTRAINT supervisor_outbox_failed_has_reason
        CHECK ((status = 'failed') = (failure_reason IS NOT NULL)),
    CONSTRAINT supervisor_outbox_pending_has_no_message
        CHECK (status <> 'pending' OR message_id IS NULL)
);
-- Acks find their record by message id; one message id belongs to one record of a tenant.
CREATE UNIQUE INDEX supervisor_outbox_message ON supervisor_outbox (tenant_id, message_id)
    WHERE message_id IS NOT NULL;
-- prune looks for a tenant's old records.
CREATE INDEX supervisor_outbox_created ON supervisor_outbox (tenant_id, created_at);

-- Early ack marks: the highest ack of a message id no record held yet (WAHA may deliver the first
-- ack before the sender stored the id sendText answered). Outbox::finish folds a mark into its
-- record (forward only) and deletes it.
CREATE TABLE supervisor_outbox_early_acks (
    tenant_id  text        NOT NULL REFERENCES tenants (tenant_id) ON DELETE CASCADE,
    message_id text        COLLATE "C" NOT NULL,
    -- MessageAck as its wire number.
    ack        bigint      NOT NULL,
    -- When the mark last moved (the caller's time): what retention compares.
    seen_at    timestamptz NOT NULL,
    PRIMARY KEY (tenant_id, message_id)
);
-- prune looks for a tenant's old marks.
CREATE INDEX supervisor_outbox_early_acks_seen
    ON supervisor_outbox_early_acks (tenant_id, seen_at);

ALTER TABLE supervisor_outbox ENABLE ROW LEVEL SECURITY;
ALTER TABLE supervisor_outbox FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON supervisor_outbox
    USING      (tenant_id = nullif(current_setting('app.tenant_id', true), '')::text)
    WITH CHECK (tenant_id = nullif(current_setting('app.tenant_id', true), '')::text);

ALTER TABLE supervisor_outbox_early_acks ENABLE ROW LEVEL SECURITY;
ALTER TABLE supervisor_outbox_early_acks FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON supervisor_outbox_early_acks
    USING      (tenant_id = nullif(current_setting('app.tenant_id', true), '')::text)
    WITH CHECK (tenant_id = nullif(current_setting('app.tenant_id', true), '')::text);
