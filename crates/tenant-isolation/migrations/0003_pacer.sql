-- tenant-isolation 0003: the send pacer's state (pg::PgSendPacer).
--
-- What MemorySendPacer holds in process memory, kept here so a chip's warm-up age, its count for
-- the current warm-up day, its burst bucket and its minimum gap survive a restart and a change of
-- the replica that owns the chip. A row is read with SELECT ... FOR UPDATE, decided on and written
-- back in one tenant transaction, so replicas pacing one chip (or one tenant) take turns.
--
-- Times are nanoseconds since 1970-01-01 UTC (bigint; read one with to_timestamp(x / 1e9)):
-- timestamptz keeps microseconds, and the stored state must be exactly what the in-memory pacer
-- holds, so that both backends take the same decisions. Token counts are double precision, the
-- f64 the pacer computes with.
--
-- Both are tenant tables like 0001's: tenant_id first in the key, ON DELETE CASCADE to tenants,
-- row-level security enabled and forced, the tenant_isolation policy. The runner grants them to
-- the application role and puts them under the admin policy (MigrationSet::tenant_tables).

-- A tenant's burst bucket over all its chips. No row: a full bucket.
CREATE TABLE pacer_tenants (
    tenant_id    text NOT NULL REFERENCES tenants (tenant_id) ON DELETE CASCADE,
    burst_tokens double precision NOT NULL CHECK (burst_tokens >= 0),
    burst_at_ns  bigint NOT NULL, -- the bucket's last refill
    updated_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id)
);

-- A chip's pacing state, from its activation (or first send) until the chip is deleted
-- (SendPacer::forget_chip). No row: a chip never seen, whose warm-up starts at its first send.
CREATE TABLE pacer_chips (
    tenant_id       text NOT NULL REFERENCES tenants (tenant_id) ON DELETE CASCADE,
    chip_id         text NOT NULL,
    activated_at_ns bigint NOT NULL,  -- the earliest activation told, or the first send
    warmup_day      bigint NOT NULL CHECK (warmup_day >= 1), -- the day sent_on_day counts for
    sent_on_day     bigint NOT NULL CHECK (sent_on_day >= 0),
    burst_tokens    double precision NOT NULL CHECK (burst_tokens >= 0),
    burst_at_ns     bigint NOT NULL,  -- the burst bucket's last refill
    next_send_at_ns bigint,           -- last send (grant + jitter) + min gap; NULL: none yet
    updated_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, chip_id)
);

DO $$
DECLARE
    t text;
BEGIN
    FOREACH t IN ARRAY ARRAY['pacer_tenants', 'pacer_chips']
    LOOP
        EXECUTE format('ALTER TABLE %I ENABLE ROW LEVEL SECURITY', t);
        EXECUTE format('ALTER TABLE %I FORCE ROW LEVEL SECURITY', t);
        EXECUTE format(
            'CREATE POLICY tenant_isolation ON %I '
            'USING (tenant_id = nullif(current_setting(''app.tenant_id'', true), '''')::text) '
            'WITH CHECK (tenant_id = nullif(current_setting(''app.tenant_id'', true), '''')::text)',
            t);
    END LOOP;
END
$$;
