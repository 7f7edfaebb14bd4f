-- session-supervisor 0002: the event log of the PostgreSQL event bus (PgEventBus), issue 13.
-- Both tables are tenant tables, made like those of 0001 (tenant_id first in every key and index,
-- a foreign key to tenants with ON DELETE CASCADE, row-level security ENABLEd and FORCEd, the
-- tenant_isolation policy on the transaction-local app.tenant_id) and declared by the
-- component's MigrationSet.
--
-- A change is numbered and stored in one transaction: the upsert of the tenant's row in
-- supervisor_event_seqs takes its row lock, which serializes one tenant's publishers until they
-- commit, so numbers are gap-free and commit in their order (a reader that resumes after N never
-- skips an event committed late). The same transaction sends pg_notify('supervisor_events',
-- '<tenant>:<seq>'), delivered at commit.
--
-- Retention: PgEventBus::prune deletes the events older than a cutoff (documented default 7
-- days); supervisor_event_seqs keeps the tenant's last number, so numbers are never reused while
-- the tenant exists. Rows may hold a pairing code (a short-lived credential): they are reachable
-- only in their tenant's scope and go with retention.

CREATE TABLE supervisor_event_seqs (
    tenant_id text   PRIMARY KEY REFERENCES tenants (tenant_id) ON DELETE CASCADE,
    -- The highest number given to one of the tenant's events.
    last_seq  bigint NOT NULL DEFAULT 0 CHECK (last_seq >= 0)
);

CREATE TABLE supervisor_events (
    tenant_id text        NOT NULL REFERENCES tenants (tenant_id) ON DELETE CASCADE,
    seq       bigint      NOT NULL CHECK (seq >= 1),
    -- The change's time (ChipChange::at, on the supervisor's clock): what retention compares.
    at        timestamptz NOT NULL,
    chip_id   text        COLLATE "C" NOT NULL,
    -- The change in its stored form (PgEventBus's StoredChange), without tenant, chip and seq.
    change    jsonb       NOT NULL,
    PRIMARY KEY (tenant_id, seq)
);
-- prune looks for a tenant's old events.
CREATE INDEX supervisor_events_at ON supervisor_events (tenant_id, at);

ALTER TABLE supervisor_event_seqs ENABLE ROW LEVEL SECURITY;
ALTER TABLE supervisor_event_seqs FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON supervisor_event_seqs
    USING      (tenant_id = nullif(current_setting('app.tenant_id', true), '')::text)
    WITH CHECK (tenant_id = nullif(current_setting('app.tenant_id', true), '')::text);

ALTER TABLE supervisor_events ENABLE ROW LEVEL SECURITY;
ALTER TABLE supervisor_events FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON supervisor_events
    USING      (tenant_id = nullif(current_setting('app.tenant_id', true), '')::text)
    WITH CHECK (tenant_id = nullif(current_setting('app.tenant_id', true), '')::text);
