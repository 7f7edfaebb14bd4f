-- tenant-isolation 0001: the tenancy schema.
--
-- Every tenant-owned table has tenant_id first in its primary key and indexes, row-level
-- security ENABLEd and FORCEd (so the owner is subject to it too), and one policy that reads the
-- transaction-local setting app.tenant_id. nullif(..., '') matters: once a session has used the
-- setting, a pooled connection reports '' (not NULL) after the transaction ends, and '' must
-- match nothing. Grants to the application role and the admin policy are applied by the
-- migration runner (they depend on configured role names), not here.

CREATE TABLE tenants (
    tenant_id            text PRIMARY KEY
                         CHECK (tenant_id ~ '^[a-z0-9]([a-z0-9-]{0,22}[a-z0-9])?$'),
    status               text NOT NULL DEFAULT 'active'
                         CHECK (status IN ('active', 'suspended', 'deleted')),
    max_chips            integer NOT NULL CHECK (max_chips >= 0),
    max_running_sessions integer NOT NULL CHECK (max_running_sessions >= 0),
    max_sends_per_day    integer NOT NULL CHECK (max_sends_per_day >= 0),
    container_api_key    text NOT NULL,
    webhook_hmac_key     text NOT NULL,
    created_at           timestamptz NOT NULL DEFAULT now(),
    updated_at           timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE quota_usage (
    tenant_id text NOT NULL REFERENCES tenants (tenant_id) ON DELETE CASCADE,
    kind      text NOT NULL CHECK (kind IN ('chip', 'running_session')),
    in_use    integer NOT NULL DEFAULT 0 CHECK (in_use >= 0),
    PRIMARY KEY (tenant_id, kind)
);

CREATE TABLE quota_reservations (
    tenant_id   text NOT NULL REFERENCES tenants (tenant_id) ON DELETE CASCADE,
    kind        text NOT NULL CHECK (kind IN ('chip', 'running_session')),
    chip_id     text NOT NULL,
    reserved_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, kind, chip_id)
);
CREATE INDEX quota_reservations_by_chip ON quota_reservations (tenant_id, chip_id);

CREATE TABLE daily_sends (
    tenant_id text NOT NULL REFERENCES tenants (tenant_id) ON DELETE CASCADE,
    day       integer NOT NULL, -- UTC days since 1970-01-01
    sent      integer NOT NULL CHECK (sent >= 0),
    PRIMARY KEY (tenant_id, day)
);

-- A generic tenant-owned key/value table with optimistic versions, for records of other crates
-- (chip records, leases, ...).
CREATE TABLE tenant_records (
    tenant_id  text NOT NULL REFERENCES tenants (tenant_id) ON DELETE CASCADE,
    kind       text NOT NULL,
    key        text NOT NULL,
    value      jsonb NOT NULL,
    version    bigint NOT NULL DEFAULT 1 CHECK (version >= 1),
    updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, kind, key)
);
CREATE INDEX tenant_records_by_update ON tenant_records (tenant_id, kind, updated_at);

DO $$
DECLARE
    t text;
BEGIN
    FOREACH t IN ARRAY ARRAY['tenants', 'quota_usage', 'quota_reservations', 'daily_sends',
                             'tenant_records']
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
