-- session-supervisor 0003: the durable webhook inbox of the PostgreSQL backend (PgInbox), issue 13
-- ("De-duplicate durably"). All three tables are tenant tables, made like those of 0001 and 0002
-- (tenant_id first in every key and index, a foreign key to tenants with ON DELETE CASCADE,
-- row-level security ENABLEd and FORCEd, the tenant_isolation policy on the transaction-local
-- app.tenant_id) and declared by the component's MigrationSet.
--
-- Admission is one statement in one tenant transaction: the entry is inserted, then its keys with
-- ON CONFLICT (tenant_id, key) DO NOTHING. When fewer keys went in than the entry has, one was
-- already seen: the delivery is a duplicate and the transaction is rolled back, so nothing of it
-- stays. Two identical deliveries at the same time: the second one's key insert waits for the
-- first transaction (the primary key's unique index) and then conflicts, so exactly one is new.
--
-- Retention: PgInbox::prune deletes the entries received before a cutoff (their keys cascade),
-- then the ack marks of messages no remaining key mentions. Bodies hold message text and personal
-- data: they are reachable only in their tenant's scope and go with retention.

-- One row per admitted delivery. id: an identity column (its sequence needs no grant: an
-- identity's nextval is not permission-checked), unique across tenants.
CREATE TABLE supervisor_inbox (
    tenant_id   text        NOT NULL REFERENCES tenants (tenant_id) ON DELETE CASCADE,
    id          bigint      GENERATED ALWAYS AS IDENTITY,
    chip_id     text        COLLATE "C" NOT NULL,
    -- When the delivery was received (InboxEntry::received_at): what retention compares.
    received_at timestamptz NOT NULL,
    -- The raw body, as signed. Never logged, never quoted in an error.
    body        bytea       NOT NULL,
    -- The de-duplication keys as the entry carried them (for inspection and replay).
    keys        text[]      NOT NULL,
    PRIMARY KEY (tenant_id, id)
);
-- prune looks for a tenant's old entries.
CREATE INDEX supervisor_inbox_received ON supervisor_inbox (tenant_id, received_at);

-- The de-duplication keys: at most one row per (tenant, key), pointing at the entry that brought
-- it, with which it goes.
CREATE TABLE supervisor_inbox_keys (
    tenant_id      text   NOT NULL REFERENCES tenants (tenant_id) ON DELETE CASCADE,
    key            text   COLLATE "C" NOT NULL,
    entry_id       bigint NOT NULL,
    -- For an ack key (ack:<message id>:<level>), its message id: an ack mark lives as long as a
    -- key mentions its message.
    ack_message_id text   COLLATE "C",
    PRIMARY KEY (tenant_id, key),
    FOREIGN KEY (tenant_id, entry_id)
        REFERENCES supervisor_inbox (tenant_id, id) ON DELETE CASCADE
);
-- The cascade from an entry to its keys.
CREATE INDEX supervisor_inbox_keys_entry ON supervisor_inbox_keys (tenant_id, entry_id);
-- prune keeps the ack marks some key mentions.
CREATE INDEX supervisor_inbox_keys_ack ON supervisor_inbox_keys (tenant_id, ack_message_id)
    WHERE ack_message_id IS NOT NULL;

-- Each message's highest ack (MessageAck as its wire number), moved forward only by one
-- conditional upsert along MessageAck::supersedes' order (see PgInbox::record_ack).
CREATE TABLE supervisor_message_acks (
    tenant_id  text        NOT NULL REFERENCES tenants (tenant_id) ON DELETE CASCADE,
    message_id text        COLLATE "C" NOT NULL,
    ack        bigint      NOT NULL,
    -- When the mark last moved (the database's clock; informational, retention does not read it).
    updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, message_id)
);

ALTER TABLE supervisor_inbox ENABLE ROW LEVEL SECURITY;
ALTER TABLE supervisor_inbox FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON supervisor_inbox
    USING      (tenant_id = nullif(current_setting('app.tenant_id', true), '')::text)
    WITH CHECK (tenant_id = nullif(current_setting('app.tenant_id', true), '')::text);

ALTER TABLE supervisor_inbox_keys ENABLE ROW LEVEL SECURITY;
ALTER TABLE supervisor_inbox_keys FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON supervisor_inbox_keys
    USING      (tenant_id = nullif(current_setting('app.tenant_id', true), '')::text)
    WITH CHECK (tenant_id = nullif(current_setting('app.tenant_id', true), '')::text);

ALTER TABLE supervisor_message_acks ENABLE ROW LEVEL SECURITY;
ALTER TABLE supervisor_message_acks FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON supervisor_message_acks
    USING      (tenant_id = nullif(current_setting('app.tenant_id', true), '')::text)
    WITH CHECK (tenant_id = nullif(current_setting('app.tenant_id', true), '')::text);
