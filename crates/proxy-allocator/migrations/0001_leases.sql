-- proxy-allocator 0001: endpoints, leases and lease history.
--
-- Platform data, not tenant rows: no row-level security. The lease store connects as the role
-- that owns these tables (DATABASE_URL); the application role gets no access. Tenant-scoped
-- reads go through LeaseStore::leases(Some(tenant)).

CREATE TABLE proxy_endpoints (
    id            text PRIMARY KEY,
    healthy       boolean NOT NULL DEFAULT true,
    health_reason text,
    checked_at    timestamptz
);

CREATE TABLE proxy_leases (
    tenant_id            text NOT NULL,
    chip_id              text NOT NULL,
    endpoint_id          text NOT NULL REFERENCES proxy_endpoints (id),
    session_id           text,
    country              text,
    generation           bigint NOT NULL CHECK (generation > 0),
    assigned_at          timestamptz NOT NULL,
    healthy              boolean NOT NULL DEFAULT true,
    health_reason        text,
    consecutive_failures integer NOT NULL DEFAULT 0,
    last_failure_at      timestamptz,
    egress_ip            inet,
    PRIMARY KEY (tenant_id, chip_id)
);
CREATE INDEX proxy_leases_endpoint ON proxy_leases (endpoint_id);
CREATE UNIQUE INDEX proxy_leases_gateway_session
    ON proxy_leases (endpoint_id, session_id) WHERE session_id IS NOT NULL;

CREATE TABLE proxy_lease_history (
    id          bigserial PRIMARY KEY,
    tenant_id   text NOT NULL,
    chip_id     text NOT NULL,
    at          timestamptz NOT NULL,
    endpoint_id text NOT NULL,
    session_id  text,
    generation  bigint NOT NULL,
    event       text NOT NULL
);
CREATE INDEX proxy_lease_history_chip ON proxy_lease_history (tenant_id, chip_id, id);
