-- The inventory: one row per record. `doc` is the record as broker wrote it (JSON, its keys in their
-- order); `record` the same as JSONB, for queries and for comparing a record with what a process read.
-- The other columns are the fields broker looks records up by, kept with each write.
CREATE TABLE broker_inventory (
    id text PRIMARY KEY,
    seq bigserial NOT NULL,
    record jsonb NOT NULL,
    doc text NOT NULL,
    provider text,
    instance text,
    hostname text,
    name text,
    state text NOT NULL,
    owner_user text,
    owner_machine text,
    owner_pid bigint,
    lease_expires bigint,
    updated_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX broker_inventory_seq ON broker_inventory (seq);
CREATE INDEX broker_inventory_provider ON broker_inventory (provider, instance);
CREATE INDEX broker_inventory_hostname ON broker_inventory (hostname);
CREATE INDEX broker_inventory_name ON broker_inventory (name);
CREATE INDEX broker_inventory_state ON broker_inventory (state);
CREATE INDEX broker_inventory_owner ON broker_inventory (owner_machine, owner_pid);
CREATE INDEX broker_inventory_lease ON broker_inventory (lease_expires);

-- Processes using the store, each renewing its lease while it runs: a record's owner on another
-- machine is gone when its lease ran out. `started` is -1 when unknown.
CREATE TABLE broker_owners (
    machine text NOT NULL,
    pid bigint NOT NULL,
    started bigint NOT NULL,
    owner_user text NOT NULL,
    heartbeat_at timestamptz NOT NULL DEFAULT now(),
    lease_until timestamptz NOT NULL,
    PRIMARY KEY (machine, pid, started)
);
