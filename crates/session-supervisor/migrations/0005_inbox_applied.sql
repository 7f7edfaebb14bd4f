-- session-supervisor 0005: the applied mark of the durable webhook inbox (PgInbox), issue 13
-- ("apply after store"). The ingest stores a delivery, then acts on it (observe, publish, the
-- inbound buffer, the ack mark), then marks its entry applied; an entry left unapplied (a crash
-- or a failure between the two) is applied again by WAHA's retry (admit answers Unapplied) or by
-- the sweep (Inbox::claim_unapplied, Ingest::reapply_pending). supervisor_inbox stays a tenant
-- table under the row-level security of 0003; no new table, no new grant.

-- When the entry was marked applied (the database's clock; informational: only NULL or not is
-- read). NULL: not applied yet.
--
-- Rows stored before this version were applied when they came in, best effort, and must not be
-- replayed by the first sweep: the column is added with a default, which fills every existing
-- row with this migration's time (a default is DDL, so it reaches every tenant's rows whatever
-- the row-level security of the role that runs the migration), then the default is dropped so
-- that new rows start unapplied.
ALTER TABLE supervisor_inbox ADD COLUMN applied_at timestamptz DEFAULT now();
ALTER TABLE supervisor_inbox ALTER COLUMN applied_at DROP DEFAULT;

-- When the sweep last claimed the entry (the sweeping replica's time, Inbox::claim_unapplied's
-- `now`): another sweep leaves it alone until its cut-off (now - grace) passes this time. NULL:
-- never claimed.
ALTER TABLE supervisor_inbox ADD COLUMN claimed_at timestamptz;

-- The sweep reads a tenant's unapplied entries, oldest first; applied entries (nearly all) are
-- not in the index.
CREATE INDEX supervisor_inbox_unapplied ON supervisor_inbox (tenant_id, received_at, id)
    WHERE applied_at IS NULL;
