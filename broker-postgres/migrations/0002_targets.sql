-- Handoff targets, in the order they were added (`seq`): what `targets.yaml` holds for the file
-- store. `name_key` is the name in lower case (a name is taken in any case). Plain values are kept
-- in `config`, secret ones apart in `secrets`, each a JSON object of text; `revision` moves on with
-- each change, and a change is conditional on the revision it read.
CREATE TABLE broker_targets (
    id text PRIMARY KEY,
    seq bigserial NOT NULL,
    name text NOT NULL,
    name_key text NOT NULL UNIQUE,
    description text NOT NULL,
    kind text NOT NULL,
    config jsonb NOT NULL,
    secrets jsonb NOT NULL,
    created bigint NOT NULL,
    updated bigint NOT NULL,
    revision bigint NOT NULL
);
CREATE INDEX broker_targets_seq ON broker_targets (seq);
