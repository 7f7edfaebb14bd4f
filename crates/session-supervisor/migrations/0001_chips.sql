-- session-supervisor 0001: chip records, their signals and the tenants' fences (tenant tables);
-- owner leases and the work queue (platform tables). docs/session-supervisor.md, 7.1.
--
-- Tenant tables are made like tenant-isolation's: tenant_id first in every key and index, a
-- foreign key to tenants with ON DELETE CASCADE, row-level security ENABLEd and FORCEd, and the
-- tenant_isolation policy on the transaction-local app.tenant_id (nullif: a pooled connection
-- reports '' once the setting was used, and '' must match nothing). The component's
-- MigrationSet declares them (MigrationSet::tenant_tables), so the host's AdminDb::migrate_with
-- grants them to the application role and puts them under the admin policy.
--
-- Platform tables (supervisor_owner_leases, supervisor_work): no row-level security, no foreign
-- key (PgChipStore::purge_tenant clears them) and no grant: only the owner role reaches them.
--
-- chip_id is COLLATE "C" everywhere: chips are listed and taken in byte order, the order of
-- Rust's str, whatever the database's collation.

CREATE TABLE supervisor_chips (
    tenant_id        text        NOT NULL REFERENCES tenants (tenant_id) ON DELETE CASCADE,
    chip_id          text        COLLATE "C" NOT NULL,
    desired          jsonb       NOT NULL,
    desired_version  bigint      NOT NULL CHECK (desired_version >= 1),
    observed         jsonb       NOT NULL,
    observed_version bigint      NOT NULL CHECK (observed_version >= 1),
    -- The step log (StepLog: the newest 32 entries and the last entry number).
    steps            jsonb       NOT NULL,
    -- Copies of observed's phase name and next try, for queries by hand and reports.
    phase            text        NOT NULL,
    next_try         timestamptz,
    -- The highest signal number given to the chip: numbers are never reused while the chip
    -- exists, also after its signals were trimmed or coalesced.
    last_signal_seq  bigint      NOT NULL DEFAULT 0 CHECK (last_signal_seq >= 0),
    created_at       timestamptz NOT NULL,
    updated_at       timestamptz NOT NULL,
    PRIMARY KEY (tenant_id, chip_id)
);
CREATE INDEX supervisor_chips_phase ON supervisor_chips (tenant_id, phase);

-- At most 64 per chip (the store makes room before it inserts); at most one activity.
CREATE TABLE supervisor_signals (
    tenant_id text        NOT NULL REFERENCES tenants (tenant_id) ON DELETE CASCADE,
    chip_id   text        COLLATE "C" NOT NULL,
    seq       bigint      NOT NULL CHECK (seq >= 1),
    at        timestamptz NOT NULL,
    kind      text        NOT NULL CHECK (kind IN ('disconnect', 'status', 'activity')),
    signal    jsonb       NOT NULL,
    PRIMARY KEY (tenant_id, chip_id, seq),
    -- A chip's signals go with it (removal, purge).
    FOREIGN KEY (tenant_id, chip_id)
        REFERENCES supervisor_chips (tenant_id, chip_id) ON DELETE CASCADE
);
CREATE UNIQUE INDEX supervisor_signals_one_activity
    ON supervisor_signals (tenant_id, chip_id) WHERE kind = 'activity';

-- The tenant's current fencing token, checked in the transaction of every owner write. A purge
-- deletes the row (no fence is current); the token itself lives on in supervisor_owner_leases.
CREATE TABLE supervisor_fences (
    tenant_id text   PRIMARY KEY REFERENCES tenants (tenant_id) ON DELETE CASCADE,
    token     bigint NOT NULL CHECK (token >= 1)
);

ALTER TABLE supervisor_chips ENABLE ROW LEVEL SECURITY;
ALTER TABLE supervisor_chips FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON supervisor_chips
    USING      (tenant_id = nullif(current_setting('app.tenant_id', true), '')::text)
    WITH CHECK (tenant_id = nullif(current_setting('app.tenant_id', true), '')::text);

ALTER TABLE supervisor_signals ENABLE ROW LEVEL SECURITY;
ALTER TABLE supervisor_signals FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON supervisor_signals
    USING      (tenant_id = nullif(current_setting('app.tenant_id', true), '')::text)
    WITH CHECK (tenant_id = nullif(current_setting('app.tenant_id', true), '')::text);

ALTER TABLE supervisor_fences ENABLE ROW LEVEL SECURITY;
ALTER TABLE supervisor_fences FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON supervisor_fences
    USING      (tenant_id = nullif(current_setting('app.tenant_id', true), '')::text)
    WITH CHECK (tenant_id = nullif(current_setting('app.tenant_id', true), '')::text);

-- One row per tenant that ever had a chip, never deleted: token only grows (+1 per new owner),
-- also across a purge. fenced says whether supervisor_fences holds this token (the platform
-- copy take_due reads); a purge clears it with the owner.
CREATE TABLE supervisor_owner_leases (
    tenant_id  text        PRIMARY KEY,
    owner_id   text,
    token      bigint      NOT NULL DEFAULT 0 CHECK (token >= 0),
    fenced     boolean     NOT NULL DEFAULT false,
    expires_at timestamptz NOT NULL DEFAULT 'epoch',
    renewed_at timestamptz,
    CHECK (token >= 1 OR NOT fenced)
);

-- One row per chip, for as long as the chip exists. due_at NULL: taken (in flight) until the
-- chip is enqueued again; trigger: what set the current due time.
CREATE TABLE supervisor_work (
    tenant_id text        NOT NULL,
    chip_id   text        COLLATE "C" NOT NULL,
    due_at    timestamptz,
    trigger   text        NOT NULL,
    PRIMARY KEY (tenant_id, chip_id)
);
-- take_due looks for the due rows of the tenants it owns.
CREATE INDEX supervisor_work_due ON supervisor_work (tenant_id, due_at) WHERE due_at IS NOT NULL;
