-- tenant-isolation 0002: tenant incarnations.
--
-- An incarnation is minted when a tenant is created (a ULID, by the crate) and never changes while
-- the tenant exists; a tenant purged and created again under the same id gets a new one, so what
-- is labelled with the old one (container volumes) is never taken for the new tenant's.
-- Tenants that exist already get a random UUID each (gen_random_uuid() is volatile, so every row
-- gets its own); then the default is dropped, so every later insert must name its incarnation.
-- The format is the one Incarnation::parse accepts.

ALTER TABLE tenants
    ADD COLUMN incarnation text NOT NULL DEFAULT gen_random_uuid()::text
        CONSTRAINT tenants_incarnation_format CHECK (incarnation ~ '^[A-Za-z0-9-]{1,64}$');
ALTER TABLE tenants ALTER COLUMN incarnation DROP DEFAULT;
