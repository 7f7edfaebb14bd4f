-- chip-service 0001: the tenants' API token hashes (service::PgTokenStore).
--
-- One row per tenant: the SHA-256 of its current API token (32 bytes; the token itself is shown
-- once and never stored), and when that token was issued. Rotation replaces the row's hash, so the
-- old token stops working at once; offboarding deletes the row; erasing the tenant from the
-- directory cascades.
--
-- A tenant table like tenant-isolation's: tenant_id first in the key, ON DELETE CASCADE to
-- tenants, row-level security enabled and forced, the tenant_isolation policy. The runner grants it
-- to the application role and puts it under the admin policy (MigrationSet::tenant_tables): the
-- store reads and writes a row only in a transaction scoped to the token's tenant.
CREATE TABLE chip_service_tokens (
    tenant_id  text NOT NULL REFERENCES tenants (tenant_id) ON DELETE CASCADE,
    token_hash bytea NOT NULL CHECK (octet_length(token_hash) = 32),
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id)
);

ALTER TABLE chip_service_tokens ENABLE ROW LEVEL SECURITY;
ALTER TABLE chip_service_tokens FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON chip_service_tokens
    USING (tenant_id = nullif(current_setting('app.tenant_id', true), '')::text)
    WITH CHECK (tenant_id = nullif(current_setting('app.tenant_id', true), '')::text);
