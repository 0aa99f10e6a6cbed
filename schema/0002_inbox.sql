-- 0002_inbox.sql — the consumer side: inbox dedup, retry bookkeeping, the sub-transaction
-- barrier and their retention. Used by the outbox::consumer library (docs/consumer.md).
-- Released migrations are never edited: `outbox-relay migrate` refuses a changed file.

CREATE SCHEMA IF NOT EXISTS inbox;

-- One row per (consumer group, message) whose effects are committed. The row is inserted
-- in the same transaction as the handler's writes, so "row exists" == "effects exist";
-- a redelivered message finds its row and skips the handler. message_id is the record's
-- message_id header, or '<topic>/<partition>/<offset>' for records without one.
CREATE TABLE inbox.messages (
  group_id      text NOT NULL,
  message_id    text NOT NULL,
  topic         text NOT NULL,
  "partition"   integer NOT NULL,
  "offset"      bigint NOT NULL,
  -- handled: the handler committed; dead_lettered: sent to <topic>.dlq after its attempts.
  outcome       text NOT NULL DEFAULT 'handled' CHECK (outcome IN ('handled', 'dead_lettered')),
  -- Start of the transaction that committed the row (for a handled message: the start of
  -- its successful attempt).
  processed_at  timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (group_id, message_id)
) WITH (
  -- Insert-only, then deleted by retention in batches: vacuum after a fixed number of
  -- changes, not after a fraction of a table that may hold weeks of rows, so the dead
  -- tuples of each retention pass are reclaimed promptly and the indexes stay bounded.
  fillfactor = 100,
  autovacuum_vacuum_scale_factor = 0,
  autovacuum_vacuum_threshold = 10000,
  autovacuum_vacuum_insert_scale_factor = 0,
  autovacuum_vacuum_insert_threshold = 50000,
  autovacuum_analyze_scale_factor = 0,
  autovacuum_analyze_threshold = 50000
);
-- Retention deletes the oldest rows first.
CREATE INDEX messages_processed_at ON inbox.messages (processed_at);

-- Every failed handler attempt (history, and the attempt counter that survives restarts
-- and rebalances). A successful attempt is the inbox.messages row itself.
CREATE TABLE inbox.attempts (
  id               bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  group_id         text NOT NULL,
  message_id       text NOT NULL,
  attempt          integer NOT NULL CHECK (attempt >= 1),
  topic            text NOT NULL,
  "partition"      integer NOT NULL,
  "offset"         bigint NOT NULL,
  started_at       timestamptz NOT NULL,  -- start of the failed attempt's transaction
  failed_at        timestamptz NOT NULL DEFAULT clock_timestamp(),
  error            text NOT NULL,
  -- retryable | permanent (a handler-thrown outbox::PermanentError)
  error_kind       text NOT NULL CHECK (error_kind IN ('retryable', 'permanent')),
  -- When the next attempt may start (failed_at + the backoff delay); NULL when this was
  -- the last attempt and the message went to the dead-letter topic.
  next_attempt_at  timestamptz
) WITH (
  -- Same reasoning as inbox.messages: insert-only, trimmed in batches.
  fillfactor = 100,
  autovacuum_vacuum_scale_factor = 0,
  autovacuum_vacuum_threshold = 10000,
  autovacuum_vacuum_insert_scale_factor = 0,
  autovacuum_vacuum_insert_threshold = 50000,
  autovacuum_analyze_scale_factor = 0,
  autovacuum_analyze_threshold = 50000
);
CREATE INDEX attempts_message ON inbox.attempts (group_id, message_id, attempt);
CREATE INDEX attempts_failed_at ON inbox.attempts (failed_at);

-- Unordered mode: messages waiting for their next attempt while their partition moved
-- on. Any consumer of the group picks a due row (FOR UPDATE SKIP LOCKED), so the row is
-- not tied to a partition assignment. Rows live minutes to hours and are deleted when
-- handled or dead-lettered.
CREATE TABLE inbox.retries (
  group_id         text NOT NULL,
  message_id       text NOT NULL,
  topic            text NOT NULL,
  "partition"      integer NOT NULL,
  "offset"         bigint NOT NULL,
  key              bytea,                      -- NULL: the record had no key
  payload          bytea,                      -- NULL: tombstone
  headers          jsonb NOT NULL DEFAULT '{}', -- the record's headers (string values)
  attempts         integer NOT NULL CHECK (attempts >= 1),  -- failed attempts so far
  last_error       text NOT NULL,
  last_error_kind  text NOT NULL CHECK (last_error_kind IN ('retryable', 'permanent')),
  -- true: no attempts are left, only sending to <topic>.dlq is (it failed before).
  dead_letter      boolean NOT NULL DEFAULT false,
  next_attempt_at  timestamptz NOT NULL,
  parked_at        timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (group_id, message_id)
) WITH (
  -- A small queue of rows that are updated (attempt counters) and deleted: leave room
  -- for HOT updates and vacuum after a fixed number of dead rows.
  fillfactor = 80,
  autovacuum_vacuum_scale_factor = 0,
  autovacuum_vacuum_threshold = 1000,
  autovacuum_analyze_scale_factor = 0,
  autovacuum_analyze_threshold = 1000,
  autovacuum_vacuum_cost_delay = 0
);
CREATE INDEX retries_due ON inbox.retries (group_id, next_attempt_at);

-- DTM's sub-transaction barrier (outbox/barrier.h). A branch operation runs at most once
-- per (gid, branch_id, op): the row is inserted in the branch's own transaction. A cancel
-- or compensate first inserts the row of its origin op (try / action) with reason =
-- 'cancel' / 'compensate': if that insert succeeds the origin never ran (null
-- compensation) and the origin arriving later finds its row taken (anti-hanging).
CREATE TABLE inbox.barrier (
  id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  trans_type  text NOT NULL DEFAULT '',   -- tcc, saga, msg, ... (informational)
  gid         text NOT NULL,
  branch_id   text NOT NULL,
  op          text NOT NULL CHECK (op <> ''),
  reason      text NOT NULL,              -- the op whose call inserted the row
  created_at  timestamptz NOT NULL DEFAULT now(),
  CONSTRAINT barrier_gid_branch_op UNIQUE (gid, branch_id, op)
) WITH (
  fillfactor = 100,
  autovacuum_vacuum_scale_factor = 0,
  autovacuum_vacuum_threshold = 10000,
  autovacuum_vacuum_insert_scale_factor = 0,
  autovacuum_vacuum_insert_threshold = 50000,
  autovacuum_analyze_scale_factor = 0,
  autovacuum_analyze_threshold = 50000
);
CREATE INDEX barrier_created_at ON inbox.barrier (created_at);

-- Retention, one small batch: deletes up to batch_size rows older than older_than from
-- each of inbox.messages, inbox.attempts and inbox.barrier and returns how many per
-- table. Call it repeatedly (each call in its own transaction) until all three are 0, or
-- CALL inbox.trim(...) below. The window must exceed the longest retry schedule (attempt
-- rows count attempts) and the longest global transaction (barrier rows stop hanging).
-- Runs as the table owner: the consumer role needs no DELETE on these tables.
CREATE FUNCTION inbox.trim_batch(older_than interval, batch_size integer DEFAULT 1000,
                                 OUT messages bigint, OUT attempts bigint, OUT barrier bigint)
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp AS $$
DECLARE
  cutoff timestamptz := now() - older_than;
BEGIN
  IF older_than IS NULL OR older_than < interval '0' THEN
    RAISE EXCEPTION 'inbox.trim_batch: older_than must be a non-negative interval, got %',
      coalesce(older_than::text, 'NULL') USING ERRCODE = '22023';
  END IF;
  IF batch_size IS NULL OR batch_size < 1 THEN
    RAISE EXCEPTION 'inbox.trim_batch: batch_size must be at least 1, got %',
      coalesce(batch_size::text, 'NULL') USING ERRCODE = '22023';
  END IF;
  -- ctid lists keep each statement to one index range scan plus batch_size deletes.
  DELETE FROM inbox.messages WHERE ctid = ANY (ARRAY(
    SELECT ctid FROM inbox.messages WHERE processed_at < cutoff
    ORDER BY processed_at LIMIT batch_size));
  GET DIAGNOSTICS messages = ROW_COUNT;
  DELETE FROM inbox.attempts WHERE ctid = ANY (ARRAY(
    SELECT ctid FROM inbox.attempts WHERE failed_at < cutoff
    ORDER BY failed_at LIMIT batch_size));
  GET DIAGNOSTICS attempts = ROW_COUNT;
  DELETE FROM inbox.barrier WHERE ctid = ANY (ARRAY(
    SELECT ctid FROM inbox.barrier WHERE created_at < cutoff
    ORDER BY created_at LIMIT batch_size));
  GET DIAGNOSTICS barrier = ROW_COUNT;
END
$$;

-- Retention, all of it: runs inbox.trim_batch until nothing is left to delete, committing
-- after every batch so locks and WAL stay small. Must be CALLed outside a transaction
-- block (e.g. from cron: psql -c "CALL inbox.trim('30 days')"). No SET search_path here:
-- PostgreSQL forbids COMMIT in a procedure that has one; every name is schema-qualified.
CREATE PROCEDURE inbox.trim(older_than interval, batch_size integer DEFAULT 1000)
LANGUAGE plpgsql AS $$
DECLARE
  r record;
BEGIN
  LOOP
    SELECT * INTO r FROM inbox.trim_batch(older_than, batch_size);
    EXIT WHEN r.messages = 0 AND r.attempts = 0 AND r.barrier = 0;
    COMMIT;
  END LOOP;
END
$$;

-- Least privilege. outbox_consumer (created in 0001) gets what outbox::Consumer and
-- outbox::CallBarrier need, and nothing to rewrite history: no UPDATE or DELETE on the
-- inbox, attempts or barrier rows (retention deletes through SECURITY DEFINER).
REVOKE ALL ON ALL TABLES IN SCHEMA inbox FROM PUBLIC;
REVOKE ALL ON FUNCTION inbox.trim_batch(interval, integer) FROM PUBLIC;
REVOKE ALL ON PROCEDURE inbox.trim(interval, integer) FROM PUBLIC;
GRANT USAGE ON SCHEMA inbox TO outbox_consumer;
GRANT SELECT, INSERT ON inbox.messages TO outbox_consumer;
GRANT SELECT, INSERT ON inbox.attempts TO outbox_consumer;
GRANT SELECT, INSERT, UPDATE, DELETE ON inbox.retries TO outbox_consumer;
GRANT SELECT, INSERT ON inbox.barrier TO outbox_consumer;
GRANT EXECUTE ON FUNCTION inbox.trim_batch(interval, integer) TO outbox_consumer;
GRANT EXECUTE ON PROCEDURE inbox.trim(interval, integer) TO outbox_consumer;
