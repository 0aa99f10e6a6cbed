-- 0004_half_messages.sql — half messages with check-back (RocketMQ transactional
-- messages / DTM two-phase messages), for producers whose business data is NOT in the
-- outbox database. See docs/half-messages.md.
--
--   1. outbox.prepare(gid, ...)       autocommit, in the outbox database
--   2. the local business transaction, which also writes a barrier row for gid
--   3. outbox.commit_prepared(gid)    or outbox.rollback_prepared(gid)
--
-- If step 3 never arrives, `outbox-relay run` asks the producer (GET check_url?gid=...)
-- and commits or rolls back on its answer. A commit moves the message into
-- outbox.messages through outbox.publish, so it gets the same lane, validation and
-- NOTIFY as any outbox message, at the moment of the commit (commit order).
-- Released migrations are never edited: `outbox-relay migrate` refuses a changed file.

-- One row per gid. States:
--   prepared     waiting for commit/rollback; checked back once older than --check-after
--   parked       --check-max checks were inconclusive; waits for the producer or an
--                operator (`outbox-relay prepared resume|drop`)
--   committed    published (moved into outbox.messages); kept as a tombstone
--   rolled_back  discarded; kept as a tombstone
-- Tombstones make every call idempotent and turn "commit after rollback" (or the
-- reverse) into a clear error; the relay deletes them after a retention period
-- (outbox.purge_prepared). Their payload and check_url are cleared when they finish.
CREATE TABLE outbox.prepared (
  gid            text PRIMARY KEY,
  state          text NOT NULL DEFAULT 'prepared'
                 CHECK (state IN ('prepared', 'parked', 'committed', 'rolled_back')),
  topic          text,            -- NULL only for a rollback of a gid never prepared
  key            text,
  payload        bytea,           -- NULL once finished
  headers        jsonb,
  check_url      text,            -- NULL once finished (it may carry a token)
  check_host     text,            -- lower-case host:port of check_url (logs, list)
  -- sha256 of what prepare was given: a repeated prepare must carry the same message.
  -- NULL for a tombstone written by rollback_prepared of an unknown gid.
  fingerprint    bytea,
  -- Inconclusive check-backs so far (reset by `prepared resume`).
  checks         integer NOT NULL DEFAULT 0,
  -- prepared: NULL = first check due at created_at + --check-after; otherwise when the
  -- next check is due, or, while a relay holds the check (lease_token set), when its
  -- lease expires and another relay may check again.
  next_check_at  timestamptz,
  lease_token    uuid,
  last_check_at  timestamptz,
  last_error     text,            -- why the last check was inconclusive (no secrets)
  message_id     uuid,            -- committed: the message id (Kafka header message_id)
  resolved_by    text CHECK (resolved_by IN ('producer', 'check-back', 'operator')),
  created_at     timestamptz NOT NULL DEFAULT now(),
  finished_at    timestamptz,     -- when it became committed or rolled_back
  CHECK ((state IN ('committed', 'rolled_back')) = (finished_at IS NOT NULL)),
  CHECK ((state = 'committed') = (message_id IS NOT NULL)),
  CHECK (state = 'rolled_back' OR topic IS NOT NULL),
  CHECK (state = 'prepared' OR lease_token IS NULL)
) WITH (
  -- Every half message is inserted, updated once or twice and deleted by retention:
  -- vacuum after a fixed number of changes, at full speed (see outbox.messages).
  autovacuum_vacuum_scale_factor = 0,
  autovacuum_vacuum_threshold = 2000,
  autovacuum_vacuum_insert_scale_factor = 0,
  autovacuum_vacuum_insert_threshold = 20000,
  autovacuum_analyze_scale_factor = 0,
  autovacuum_analyze_threshold = 20000,
  autovacuum_vacuum_cost_delay = 0
);
-- Relays claim "never checked, older than --check-after" and "next check due".
CREATE INDEX prepared_first_check ON outbox.prepared (created_at)
  WHERE state = 'prepared' AND next_check_at IS NULL;
CREATE INDEX prepared_next_check ON outbox.prepared (next_check_at)
  WHERE state = 'prepared' AND next_check_at IS NOT NULL;
-- Retention deletes "finished tombstones older than X".
CREATE INDEX prepared_finished ON outbox.prepared (finished_at)
  WHERE state IN ('committed', 'rolled_back');

-- Raises a clear error unless gid is 1 to 128 characters without spaces or control
-- characters (it travels in the check-back URL, percent-encoded).
CREATE FUNCTION outbox.check_gid(fn text, gid text)
RETURNS void LANGUAGE plpgsql IMMUTABLE
SET search_path = pg_catalog, pg_temp AS $$
BEGIN
  IF gid IS NULL OR gid = '' OR length(gid) > 128 OR gid ~ '[[:space:][:cntrl:]]' THEN
    RAISE EXCEPTION '%: invalid gid %: use 1 to 128 characters without spaces or control characters',
      fn, coalesce(quote_literal(left(gid, 64)), 'NULL') USING ERRCODE = '22023';
  END IF;
END
$$;

-- Returns lower-case host:port of a check-back URL, or raises a clear error. Only
-- http and https; no fragment (the relay appends ?gid= or &gid= to the URL).
CREATE FUNCTION outbox.check_url_host(fn text, url text)
RETURNS text LANGUAGE plpgsql IMMUTABLE
SET search_path = pg_catalog, pg_temp AS $$
DECLARE
  m text[];
  port integer;
BEGIN
  IF url IS NULL OR url = '' THEN
    RAISE EXCEPTION '%: check_url must not be empty', fn USING ERRCODE = '22023';
  END IF;
  IF length(url) > 2048 THEN
    RAISE EXCEPTION '%: check_url is longer than 2048 characters', fn USING ERRCODE = '22023';
  END IF;
  IF url ~ '[[:space:][:cntrl:]]' THEN
    RAISE EXCEPTION '%: check_url must not contain spaces or control characters', fn
      USING ERRCODE = '22023';
  END IF;
  IF position('#' IN url) > 0 THEN
    RAISE EXCEPTION '%: check_url must not contain a fragment (#...)', fn USING ERRCODE = '22023';
  END IF;
  m := regexp_match(url,
    '^([A-Za-z][A-Za-z0-9+.-]*)://(?:[^/?#@]*@)?(\[[0-9A-Fa-f:.]+\]|[^/?#:@\[\]]+)(?::([0-9]{1,5}))?(?:[/?]|$)');
  IF m IS NULL OR lower(m[1]) NOT IN ('http', 'https') THEN
    -- Never echo the URL: it may carry credentials or tokens.
    RAISE EXCEPTION '%: invalid check_url: expected http://host[:port]/path or https://host[:port]/path', fn
      USING ERRCODE = '22023';
  END IF;
  port := coalesce(m[3]::integer, CASE lower(m[1]) WHEN 'https' THEN 443 ELSE 80 END);
  IF port < 1 OR port > 65535 THEN
    RAISE EXCEPTION '%: invalid check_url: port % is out of range 1..65535', fn, port
      USING ERRCODE = '22023';
  END IF;
  RETURN lower(m[2]) || ':' || port;
END
$$;

-- Largest payload outbox.prepare accepts: the database setting
-- outbox.max_prepared_payload (bytes; ALTER DATABASE ... SET outbox.max_prepared_payload
-- = ...), default 1 MiB — Kafka's default largest record. A bigger half message would
-- only be refused by the broker after it was committed.
CREATE FUNCTION outbox.max_prepared_payload()
RETURNS bigint LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp AS $$
  SELECT coalesce(nullif(current_setting('outbox.max_prepared_payload', true), '')::bigint, 1048576)
$$;

-- Registers a half message: nothing is published until outbox.commit_prepared(gid) or
-- a check-back answered "committed". Call it in its own (autocommitted) transaction
-- before the business transaction. Repeating it with the same message is harmless (also
-- after the gid finished: nothing is re-opened); the same gid with another message, or
-- a gid rolled back before it was ever prepared, is an error.
CREATE FUNCTION outbox.prepare(gid text, topic text, key text, payload bytea, headers jsonb,
                               check_url text)
RETURNS void LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp AS $$
DECLARE
  host text;
  fp bytea;
  p outbox.prepared;
  max_bytes bigint := outbox.max_prepared_payload();
BEGIN
  PERFORM outbox.check_gid('outbox.prepare', gid);
  PERFORM outbox.check_topic('outbox.prepare', topic);
  headers := coalesce(headers, '{}'::jsonb);
  PERFORM outbox.check_headers('outbox.prepare', headers);
  host := outbox.check_url_host('outbox.prepare', check_url);
  IF octet_length(payload) > max_bytes THEN
    RAISE EXCEPTION 'outbox.prepare: payload is % bytes; at most % bytes are allowed (setting outbox.max_prepared_payload)',
      octet_length(payload), max_bytes USING ERRCODE = '54000';
  END IF;
  fp := sha256(convert_to(jsonb_build_array(topic, key, headers, check_url, payload IS NULL)::text, 'UTF8')
               || coalesce(payload, ''::bytea));
  INSERT INTO outbox.prepared AS t (gid, topic, key, payload, headers, check_url, check_host, fingerprint)
  VALUES (gid, topic, key, payload, headers, check_url, host, fp)
  ON CONFLICT ON CONSTRAINT prepared_pkey DO NOTHING;
  IF FOUND THEN
    RETURN;
  END IF;
  SELECT * INTO p FROM outbox.prepared t WHERE t.gid = prepare.gid;
  IF p.fingerprint IS NULL THEN
    RAISE EXCEPTION 'outbox.prepare: gid % was rolled back before it was prepared', quote_literal(gid)
      USING ERRCODE = '55000';
  END IF;
  IF p.fingerprint <> fp THEN
    RAISE EXCEPTION 'outbox.prepare: gid % is already used by another message', quote_literal(gid)
      USING ERRCODE = '23505';
  END IF;
END
$$;

-- Convenience overload for text payloads (stored as their UTF-8 bytes).
CREATE FUNCTION outbox.prepare(gid text, topic text, key text, payload text, headers jsonb,
                               check_url text)
RETURNS void LANGUAGE sql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp AS $$
  SELECT outbox.prepare(gid, topic, key, convert_to(payload, 'UTF8'), headers, check_url)
$$;

-- Internal (not granted): publishes the locked, prepared or parked row p through
-- outbox.publish and leaves a committed tombstone. Returns the message id.
CREATE FUNCTION outbox.commit_prepared_row(p outbox.prepared, resolver text)
RETURNS uuid LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp AS $$
DECLARE
  mid uuid;
BEGIN
  mid := outbox.publish(p.topic, p.key, p.payload, p.headers);
  UPDATE outbox.prepared t
     SET state = 'committed', message_id = mid, resolved_by = resolver, finished_at = now(),
         payload = NULL, check_url = NULL, lease_token = NULL, next_check_at = NULL
   WHERE t.gid = p.gid;
  RETURN mid;
END
$$;

-- Internal (not granted): discards the locked, prepared or parked row of gid.
CREATE FUNCTION outbox.rollback_prepared_row(gid text, resolver text)
RETURNS void LANGUAGE sql VOLATILE
SET search_path = pg_catalog, pg_temp AS $$
  UPDATE outbox.prepared t
     SET state = 'rolled_back', resolved_by = resolver, finished_at = now(),
         payload = NULL, check_url = NULL, lease_token = NULL, next_check_at = NULL
   WHERE t.gid = rollback_prepared_row.gid
$$;

-- Publishes the half message: it enters its lane now, like outbox.publish. Returns the
-- message id; repeating it returns the same id. Errors: unknown gid, gid rolled back.
CREATE FUNCTION outbox.commit_prepared(gid text)
RETURNS uuid LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp AS $$
DECLARE
  p outbox.prepared;
BEGIN
  PERFORM outbox.check_gid('outbox.commit_prepared', gid);
  SELECT * INTO p FROM outbox.prepared t WHERE t.gid = commit_prepared.gid FOR UPDATE;
  IF NOT FOUND THEN
    RAISE EXCEPTION 'outbox.commit_prepared: unknown gid %: call outbox.prepare first (or it was purged)',
      quote_literal(gid) USING ERRCODE = 'P0002';
  END IF;
  CASE p.state
    WHEN 'committed' THEN
      RETURN p.message_id;
    WHEN 'rolled_back' THEN
      RAISE EXCEPTION 'outbox.commit_prepared: gid % was rolled back (by %) and cannot be committed',
        quote_literal(gid), p.resolved_by USING ERRCODE = '55000';
    ELSE
      RETURN outbox.commit_prepared_row(p, 'producer');
  END CASE;
END
$$;

-- Discards the half message. Repeating it is harmless. A gid never prepared gets a
-- rolled-back tombstone, so a prepare arriving late is refused instead of published
-- (anti-hanging). Error: the gid was committed.
CREATE FUNCTION outbox.rollback_prepared(gid text)
RETURNS void LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp AS $$
DECLARE
  p outbox.prepared;
BEGIN
  PERFORM outbox.check_gid('outbox.rollback_prepared', gid);
  LOOP
    SELECT * INTO p FROM outbox.prepared t WHERE t.gid = rollback_prepared.gid FOR UPDATE;
    EXIT WHEN FOUND;
    INSERT INTO outbox.prepared (gid, state, resolved_by, finished_at)
    VALUES (gid, 'rolled_back', 'producer', now())
    ON CONFLICT ON CONSTRAINT prepared_pkey DO NOTHING;
    IF FOUND THEN
      RETURN;
    END IF;
    -- A concurrent prepare inserted it: lock that row and decide again.
  END LOOP;
  CASE p.state
    WHEN 'rolled_back' THEN
      RETURN;
    WHEN 'committed' THEN
      RAISE EXCEPTION 'outbox.rollback_prepared: gid % was committed (by %) and cannot be rolled back',
        quote_literal(gid), p.resolved_by USING ERRCODE = '55000';
    ELSE
      PERFORM outbox.rollback_prepared_row(p.gid, 'producer');
  END CASE;
END
$$;

-- Relays: claims up to max_rows half messages due for a check-back — never checked and
-- older than check_after, or whose next check is due, or whose previous check's lease
-- expired (its relay died) — skipping rows other relays hold, and leases each for
-- `lease` (which must exceed the relay's request timeout). attempt = checks + 1.
CREATE FUNCTION outbox.claim_prepared_checks(max_rows integer, check_after interval, lease interval)
RETURNS TABLE (gid text, check_url text, check_host text, attempt integer, lease_token uuid)
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp AS $$
#variable_conflict use_column
DECLARE
  first_due text[];
  next_due text[];
BEGIN
  IF max_rows IS NULL OR max_rows < 1 OR max_rows > 1000 THEN
    RAISE EXCEPTION 'outbox.claim_prepared_checks: max_rows must be 1..1000, got %', max_rows
      USING ERRCODE = '22023';
  END IF;
  IF lease IS NULL OR lease <= interval '0' OR check_after IS NULL OR check_after < interval '0' THEN
    RAISE EXCEPTION 'outbox.claim_prepared_checks: lease must be positive and check_after not negative'
      USING ERRCODE = '22023';
  END IF;
  first_due := ARRAY(
    SELECT p.gid FROM outbox.prepared p
     WHERE p.state = 'prepared' AND p.next_check_at IS NULL AND p.created_at <= now() - check_after
     ORDER BY p.created_at LIMIT max_rows
       FOR UPDATE SKIP LOCKED);
  next_due := ARRAY(
    SELECT p.gid FROM outbox.prepared p
     WHERE p.state = 'prepared' AND p.next_check_at IS NOT NULL AND p.next_check_at <= now()
     ORDER BY p.next_check_at LIMIT max_rows - cardinality(first_due)
       FOR UPDATE SKIP LOCKED);
  RETURN QUERY
    UPDATE outbox.prepared p
       SET lease_token = gen_random_uuid(), next_check_at = now() + lease
     WHERE p.gid = ANY (first_due || next_due)
    RETURNING p.gid, p.check_url, p.check_host, p.checks + 1, p.lease_token;
END
$$;

-- Relays: records the answer of the check-back held with `token`. verdict is
-- 'committed' (publish, same path as commit_prepared), 'rolled_back' (discard) or
-- 'inconclusive' (pending, non-2xx, malformed or unreachable: `error` says which; check
-- again after retry_in, or park once check_max checks were inconclusive) or 'released'
-- (no answer because the relay is stopping: due again at once, not counted). Returns the
-- new state, or NULL if the lease was lost (expired and taken by another relay, or the
-- producer/an operator decided meanwhile): then nothing changed.
CREATE FUNCTION outbox.record_prepared_check(gid text, token uuid, verdict text, error text,
                                             retry_in interval, check_max integer)
RETURNS text LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp AS $$
DECLARE
  p outbox.prepared;
BEGIN
  IF verdict IS NULL OR verdict NOT IN ('committed', 'rolled_back', 'inconclusive', 'released') THEN
    RAISE EXCEPTION 'outbox.record_prepared_check: verdict must be committed, rolled_back, inconclusive or released'
      USING ERRCODE = '22023';
  END IF;
  SELECT * INTO p FROM outbox.prepared t
   WHERE t.gid = record_prepared_check.gid AND t.state = 'prepared' AND t.lease_token = token
     FOR UPDATE;
  IF NOT FOUND THEN
    RETURN NULL;
  END IF;
  IF verdict = 'committed' THEN
    PERFORM outbox.commit_prepared_row(p, 'check-back');
    UPDATE outbox.prepared t SET last_check_at = now() WHERE t.gid = p.gid;
    RETURN 'committed';
  ELSIF verdict = 'rolled_back' THEN
    PERFORM outbox.rollback_prepared_row(p.gid, 'check-back');
    UPDATE outbox.prepared t SET last_check_at = now() WHERE t.gid = p.gid;
    RETURN 'rolled_back';
  ELSIF verdict = 'released' THEN
    UPDATE outbox.prepared t SET lease_token = NULL, next_check_at = now() WHERE t.gid = p.gid;
    RETURN 'prepared';
  END IF;
  UPDATE outbox.prepared t
     SET checks = t.checks + 1, last_check_at = now(), last_error = left(error, 1000),
         lease_token = NULL,
         state = CASE WHEN t.checks + 1 >= check_max THEN 'parked' ELSE 'prepared' END,
         next_check_at = CASE WHEN t.checks + 1 >= check_max THEN NULL ELSE now() + retry_in END
   WHERE t.gid = p.gid
  RETURNING * INTO p;
  RETURN p.state;
END
$$;

-- Operators (`outbox-relay prepared resume`): a parked or prepared half message is
-- checked back at once, with a fresh count of --check-max checks; when the producer
-- answers "committed" it is published. Returns false if gid is unknown or finished.
CREATE FUNCTION outbox.resume_prepared(gid text)
RETURNS boolean LANGUAGE sql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp AS $$
  WITH r AS (
    UPDATE outbox.prepared t
       SET state = 'prepared', checks = 0, next_check_at = now(), lease_token = NULL
     WHERE t.gid = resume_prepared.gid AND t.state IN ('prepared', 'parked')
    RETURNING 1)
  SELECT count(*) > 0 FROM r
$$;

-- Operators (`outbox-relay prepared drop`): discards a parked or prepared half message
-- without publishing it (a rolled_back tombstone; a later commit_prepared is refused).
-- Returns false if gid is unknown or finished.
CREATE FUNCTION outbox.drop_prepared(gid text)
RETURNS boolean LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp AS $$
BEGIN
  PERFORM 1 FROM outbox.prepared t
   WHERE t.gid = drop_prepared.gid AND t.state IN ('prepared', 'parked') FOR UPDATE;
  IF NOT FOUND THEN
    RETURN false;
  END IF;
  PERFORM outbox.rollback_prepared_row(gid, 'operator');
  RETURN true;
END
$$;

-- Retention: deletes up to max_rows committed/rolled_back tombstones that finished
-- more than older_than ago; returns how many. A commit_prepared/rollback_prepared
-- repeated after that sees an unknown gid. Unfinished half messages are never deleted.
CREATE FUNCTION outbox.purge_prepared(older_than interval, max_rows integer DEFAULT 10000)
RETURNS integer LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp AS $$
DECLARE
  deleted integer;
BEGIN
  IF older_than IS NULL OR older_than < interval '0' OR max_rows IS NULL OR max_rows < 1 THEN
    RAISE EXCEPTION 'outbox.purge_prepared: older_than must not be negative and max_rows positive'
      USING ERRCODE = '22023';
  END IF;
  DELETE FROM outbox.prepared p
   WHERE p.gid IN (SELECT x.gid FROM outbox.prepared x
                    WHERE x.state IN ('committed', 'rolled_back') AND x.finished_at < now() - older_than
                    ORDER BY x.finished_at LIMIT max_rows
                      FOR UPDATE SKIP LOCKED);
  GET DIAGNOSTICS deleted = ROW_COUNT;
  RETURN deleted;
END
$$;

-- Least privilege. Functions are executable by PUBLIC unless revoked.
REVOKE ALL ON outbox.prepared FROM PUBLIC;
REVOKE ALL ON FUNCTION outbox.check_gid(text, text), outbox.check_url_host(text, text),
  outbox.max_prepared_payload(),
  outbox.prepare(text, text, text, bytea, jsonb, text), outbox.prepare(text, text, text, text, jsonb, text),
  outbox.commit_prepared_row(outbox.prepared, text), outbox.rollback_prepared_row(text, text),
  outbox.commit_prepared(text), outbox.rollback_prepared(text),
  outbox.claim_prepared_checks(integer, interval, interval),
  outbox.record_prepared_check(text, uuid, text, text, interval, integer),
  outbox.resume_prepared(text), outbox.drop_prepared(text), outbox.purge_prepared(interval, integer)
  FROM PUBLIC;

-- Producers prepare, commit and roll back; they cannot read or change the table.
GRANT EXECUTE ON FUNCTION outbox.prepare(text, text, text, bytea, jsonb, text),
  outbox.prepare(text, text, text, text, jsonb, text),
  outbox.commit_prepared(text), outbox.rollback_prepared(text)
  TO outbox_producer;

-- The relay checks back, records answers, runs the operator commands and retention
-- only through these functions; it may read the table for status and `prepared list`.
GRANT EXECUTE ON FUNCTION outbox.claim_prepared_checks(integer, interval, interval),
  outbox.record_prepared_check(text, uuid, text, text, interval, integer),
  outbox.resume_prepared(text), outbox.drop_prepared(text), outbox.purge_prepared(interval, integer)
  TO outbox_relay;
GRANT SELECT ON outbox.prepared TO outbox_relay;
