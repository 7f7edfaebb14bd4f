-- proxy-allocator 0002: each chip's highest lease generation, kept apart from the lease history;
-- an index to prune the history by age.
--
-- A chip's next lease takes its generation from proxy_chip_generations (one more than the highest
-- the chip ever had), in the transaction that writes the lease. The history is now kept within a
-- retention (a count per chip, an age), so it can no longer be the record of every generation a
-- chip had; this table is never pruned: one small row per chip ever leased. Platform data, like
-- the other proxy tables: no row-level security, no grant to the application role.

CREATE TABLE proxy_chip_generations (
    tenant_id       text   NOT NULL,
    chip_id         text   NOT NULL,
    last_generation bigint NOT NULL CHECK (last_generation > 0),
    PRIMARY KEY (tenant_id, chip_id)
);

-- Until now every generation a chip had was in its history (each lease is recorded as assigned
-- in the transaction that creates it, and history was never deleted) or is its current lease's.
INSERT INTO proxy_chip_generations (tenant_id, chip_id, last_generation)
SELECT tenant_id, chip_id, max(generation)
FROM (
    SELECT tenant_id, chip_id, generation FROM proxy_lease_history
    UNION ALL
    SELECT tenant_id, chip_id, generation FROM proxy_leases
) AS seen
GROUP BY tenant_id, chip_id
HAVING max(generation) > 0;

CREATE INDEX proxy_lease_history_at ON proxy_lease_history (at);
