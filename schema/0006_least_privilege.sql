-- 0006_least_privilege.sql — ownership, limits and least privilege (docs/security.md).
-- Released migrations are never edited: `outbox-relay migrate` refuses a changed file.
--
-- Who owns what: the LOGIN that called (session_user; a SECURITY DEFINER function sees
-- the login there, not the definer). A half message belongs to the login that prepared
-- it, a notification to the login that scheduled it, a consumer group to the logins the
-- schema owner (or the group's first user) registered, a barrier row to its login.

-- ---- Limits, in the schema (not in a session setting a producer could raise) ----------
ALTER TABLE outbox.settings
  -- Largest payload outbox.publish accepts (bytes). Kafka's own default limit is 1 MiB
  -- (message.max.bytes); a bigger row is refused by the broker and parked in
  -- outbox.dead_letters, so keep this at most what your topics accept.
  ADD COLUMN max_payload_bytes integer NOT NULL DEFAULT 8388608
    CHECK (max_payload_bytes BETWEEN 0 AND 268435456),
  -- Largest key (bytes of its UTF-8 text).
  ADD COLUMN max_key_bytes integer NOT NULL DEFAULT 16384 CHECK (max_key_bytes BETWEEN 1 AND 1048576),
  -- Most headers per message, and the most bytes of all header names and values.
  ADD COLUMN max_headers integer NOT NULL DEFAULT 64 CHECK (max_headers BETWEEN 0 AND 1024),
  ADD COLUMN max_header_bytes integer NOT NULL DEFAULT 65536 CHECK (max_header_bytes BETWEEN 0 AND 1048576),
  -- Largest payload outbox.prepare accepts (replaces the session setting
  -- outbox.max_prepared_payload, which any producer could raise).
  ADD COLUMN max_prepared_payload_bytes integer NOT NULL DEFAULT 1048576
    CHECK (max_prepared_payload_bytes BETWEEN 0 AND 268435456);

-- Raises a clear error (SQLSTATE 54000, program_limit_exceeded) if the message exceeds
-- a limit of outbox.settings, or 22023 for a reserved topic name (Kafka's internal
-- topics start with "__").
CREATE FUNCTION outbox.check_limits(fn text, topic text, key text, payload bytea, headers jsonb,
                                    max_payload integer)
RETURNS void LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp AS $$
DECLARE
  s outbox.settings;
  n integer;
  bytes bigint;
BEGIN
  SELECT * INTO s FROM outbox.settings;
  IF left(topic, 2) = '__' THEN
    RAISE EXCEPTION '%: topic % is reserved (names starting with "__" are Kafka''s internal topics)',
      fn, quote_literal(topic) USING ERRCODE = '22023';
  END IF;
  IF octet_length(payload) > max_payload THEN
    RAISE EXCEPTION '%: payload is % bytes; at most % bytes are allowed', fn, octet_length(payload), max_payload
      USING ERRCODE = '54000', HINT = 'The limit is a column of outbox.settings (schema owner).';
  END IF;
  IF octet_length(key) > s.max_key_bytes THEN
    RAISE EXCEPTION '%: key is % bytes; at most % bytes are allowed (outbox.settings.max_key_bytes)',
      fn, octet_length(key), s.max_key_bytes USING ERRCODE = '54000';
  END IF;
  SELECT count(*), coalesce(sum(octet_length(k) + octet_length(v)), 0) INTO n, bytes
    FROM jsonb_each_text(headers) AS e(k, v);
  IF n > s.max_headers THEN
    RAISE EXCEPTION '%: % headers; at most % are allowed (outbox.settings.max_headers)', fn, n, s.max_headers
      USING ERRCODE = '54000';
  END IF;
  IF bytes > s.max_header_bytes THEN
    RAISE EXCEPTION '%: headers are % bytes; at most % bytes are allowed (outbox.settings.max_header_bytes)',
      fn, bytes, s.max_header_bytes USING ERRCODE = '54000';
  END IF;
END
$$;
REVOKE ALL ON FUNCTION outbox.check_limits(text, text, text, bytea, jsonb, integer) FROM PUBLIC;

-- The schema owner changes limits with UPDATE outbox.settings; producers only read them
-- through the functions.
CREATE OR REPLACE FUNCTION outbox.max_prepared_payload()
RETURNS bigint LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp AS $$
  SELECT max_prepared_payload_bytes::bigint FROM outbox.settings
$$;

-- outbox.publish as in 0005 (the lane-count lock), plus the limits.
CREATE OR REPLACE FUNCTION outbox.publish(topic text, key text, payload bytea, headers jsonb DEFAULT '{}')
RETURNS uuid LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp AS $$
DECLARE
  mid uuid := gen_random_uuid();
  s outbox.settings;
BEGIN
  PERFORM outbox.check_topic('outbox.publish', topic);
  headers := coalesce(headers, '{}'::jsonb);
  PERFORM outbox.check_headers('outbox.publish', headers);
  -- As in 0005: the lane count cannot change between reading it and this commit.
  PERFORM pg_advisory_xact_lock_shared(1869769827, 0);
  SELECT * INTO s FROM outbox.settings;
  PERFORM outbox.check_limits('outbox.publish', topic, key, payload, headers, s.max_payload_bytes);
  INSERT INTO outbox.messages (message_id, lane, topic, key, payload, headers)
  VALUES (mid, outbox.lane_of(key, mid, s.lane_count), topic, key, payload, headers);
  IF s.notify THEN
    PERFORM pg_notify('outbox_relay', '');
  END IF;
  RETURN mid;
END
$$;

-- ---- Dead letters: only through functions that re-validate ---------------------------
-- The relay parks a row Kafka refused for good. Runs as the owner: the relay role needs
-- no write privilege on outbox.dead_letters (a forged row could not be inserted).
-- Returns false if the row is gone (another owner parked or delivered it).
CREATE FUNCTION outbox.dead_letter(row_id bigint, error text)
RETURNS boolean LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp AS $$
BEGIN
  WITH d AS (DELETE FROM outbox.messages WHERE id = row_id RETURNING *)
  INSERT INTO outbox.dead_letters AS x (id, message_id, lane, topic, key, payload, headers, created_at, error)
  SELECT id, message_id, lane, topic, key, payload, headers, created_at, left(coalesce(error, ''), 2000) FROM d
  ON CONFLICT (id) DO UPDATE SET error = EXCLUDED.error, failed_at = now();
  RETURN FOUND;
END
$$;

-- Operators (`outbox-relay dead-letters retry`): moves a dead letter back into the queue,
-- re-validated like a publish (topic, headers, limits: a forged or stale row cannot enter
-- the queue), in the lane its key has now (0005), under the SAME id, so the id an operator
-- saw in `dead-letters list` stays the message's handle (it is parked under it again if
-- Kafka refuses it again). Returns false when no such dead letter exists.
CREATE OR REPLACE FUNCTION outbox.retry_dead_letter(dead_id bigint)
RETURNS boolean LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp AS $$
DECLARE
  d outbox.dead_letters;
  s outbox.settings;
BEGIN
  PERFORM pg_advisory_xact_lock_shared(1869769827, 0);
  DELETE FROM outbox.dead_letters WHERE id = dead_id RETURNING * INTO d;
  IF NOT FOUND THEN
    RETURN false;
  END IF;
  PERFORM outbox.check_topic('outbox.retry_dead_letter', d.topic);
  PERFORM outbox.check_headers('outbox.retry_dead_letter', d.headers);
  SELECT * INTO s FROM outbox.settings;
  PERFORM outbox.check_limits('outbox.retry_dead_letter', d.topic, d.key, d.payload, d.headers, s.max_payload_bytes);
  INSERT INTO outbox.messages (id, message_id, lane, topic, key, payload, headers, created_at)
  OVERRIDING SYSTEM VALUE
  VALUES (d.id, d.message_id, outbox.lane_of(d.key, d.message_id, s.lane_count), d.topic, d.key, d.payload,
          d.headers, d.created_at);
  PERFORM pg_notify('outbox_relay', '');
  RETURN true;
END
$$;

-- Operators (`outbox-relay dead-letters drop`): removes a dead letter for good.
CREATE FUNCTION outbox.drop_dead_letter(dead_id bigint)
RETURNS boolean LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp AS $$
BEGIN
  DELETE FROM outbox.dead_letters WHERE id = dead_id;
  RETURN FOUND;
END
$$;
REVOKE ALL ON FUNCTION outbox.dead_letter(bigint, text), outbox.drop_dead_letter(bigint) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION outbox.dead_letter(bigint, text), outbox.drop_dead_letter(bigint) TO outbox_relay;
REVOKE INSERT, UPDATE, DELETE ON outbox.dead_letters FROM outbox_relay;

-- ---- Half messages belong to the login that prepared them ----------------------------
-- A gid is unique per owner: another login's gid is invisible (the same answer as an
-- unknown gid), and nobody can squat a gid another login will use.
ALTER TABLE outbox.prepared ADD COLUMN owner name NOT NULL DEFAULT session_user;
ALTER TABLE outbox.prepared DROP CONSTRAINT prepared_pkey;
ALTER TABLE outbox.prepared ADD CONSTRAINT prepared_pkey PRIMARY KEY (owner, gid);
CREATE INDEX prepared_gid ON outbox.prepared (gid);

CREATE OR REPLACE FUNCTION outbox.prepare(gid text, topic text, key text, payload bytea, headers jsonb,
                                          check_url text)
RETURNS void LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp AS $$
DECLARE
  host text;
  fp bytea;
  p outbox.prepared;
BEGIN
  PERFORM outbox.check_gid('outbox.prepare', gid);
  PERFORM outbox.check_topic('outbox.prepare', topic);
  headers := coalesce(headers, '{}'::jsonb);
  PERFORM outbox.check_headers('outbox.prepare', headers);
  host := outbox.check_url_host('outbox.prepare', check_url);
  PERFORM outbox.check_limits('outbox.prepare', topic, key, payload, headers,
                              (SELECT max_prepared_payload_bytes FROM outbox.settings));
  fp := sha256(convert_to(jsonb_build_array(topic, key, headers, check_url, payload IS NULL)::text, 'UTF8')
               || coalesce(payload, ''::bytea));
  INSERT INTO outbox.prepared AS t (owner, gid, topic, key, payload, headers, check_url, check_host, fingerprint)
  VALUES (session_user, gid, topic, key, payload, headers, check_url, host, fp)
  ON CONFLICT ON CONSTRAINT prepared_pkey DO NOTHING;
  IF FOUND THEN
    RETURN;
  END IF;
  SELECT * INTO p FROM outbox.prepared t WHERE t.owner = session_user AND t.gid = prepare.gid;
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

CREATE OR REPLACE FUNCTION outbox.commit_prepared_row(p outbox.prepared, resolver text)
RETURNS uuid LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp AS $$
DECLARE
  mid uuid;
BEGIN
  mid := outbox.publish(p.topic, p.key, p.payload, p.headers);
  UPDATE outbox.prepared t
     SET state = 'committed', message_id = mid, resolved_by = resolver, finished_at = now(),
         payload = NULL, check_url = NULL, lease_token = NULL, next_check_at = NULL
   WHERE t.owner = p.owner AND t.gid = p.gid;
  RETURN mid;
END
$$;

-- Internal (not granted): discards the locked, prepared or parked row (owner, gid).
CREATE FUNCTION outbox.rollback_prepared_row(owner name, gid text, resolver text)
RETURNS void LANGUAGE sql VOLATILE
SET search_path = pg_catalog, pg_temp AS $$
  UPDATE outbox.prepared t
     SET state = 'rolled_back', resolved_by = resolver, finished_at = now(),
         payload = NULL, check_url = NULL, lease_token = NULL, next_check_at = NULL
   WHERE t.owner = rollback_prepared_row.owner AND t.gid = rollback_prepared_row.gid
$$;
REVOKE ALL ON FUNCTION outbox.rollback_prepared_row(name, text, text) FROM PUBLIC;
DROP FUNCTION outbox.rollback_prepared_row(text, text);

CREATE OR REPLACE FUNCTION outbox.commit_prepared(gid text)
RETURNS uuid LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp AS $$
DECLARE
  p outbox.prepared;
BEGIN
  PERFORM outbox.check_gid('outbox.commit_prepared', gid);
  SELECT * INTO p FROM outbox.prepared t
   WHERE t.owner = session_user AND t.gid = commit_prepared.gid FOR UPDATE;
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

CREATE OR REPLACE FUNCTION outbox.rollback_prepared(gid text)
RETURNS void LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp AS $$
DECLARE
  p outbox.prepared;
BEGIN
  PERFORM outbox.check_gid('outbox.rollback_prepared', gid);
  LOOP
    SELECT * INTO p FROM outbox.prepared t
     WHERE t.owner = session_user AND t.gid = rollback_prepared.gid FOR UPDATE;
    EXIT WHEN FOUND;
    INSERT INTO outbox.prepared (owner, gid, state, resolved_by, finished_at)
    VALUES (session_user, gid, 'rolled_back', 'producer', now())
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
      PERFORM outbox.rollback_prepared_row(p.owner, p.gid, 'producer');
  END CASE;
END
$$;

-- Relay side: rows are addressed by ctid within one statement and by lease token
-- across statements, so two owners' equal gids never mix.
CREATE OR REPLACE FUNCTION outbox.claim_prepared_checks(max_rows integer, check_after interval, lease interval)
RETURNS TABLE (gid text, check_url text, check_host text, attempt integer, lease_token uuid)
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp AS $$
#variable_conflict use_column
DECLARE
  first_due tid[];
  next_due tid[];
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
    SELECT p.ctid FROM outbox.prepared p
     WHERE p.state = 'prepared' AND p.next_check_at IS NULL AND p.created_at <= now() - check_after
     ORDER BY p.created_at LIMIT max_rows
       FOR UPDATE SKIP LOCKED);
  next_due := ARRAY(
    SELECT p.ctid FROM outbox.prepared p
     WHERE p.state = 'prepared' AND p.next_check_at IS NOT NULL AND p.next_check_at <= now()
     ORDER BY p.next_check_at LIMIT max_rows - cardinality(first_due)
       FOR UPDATE SKIP LOCKED);
  RETURN QUERY
    UPDATE outbox.prepared p
       SET lease_token = gen_random_uuid(), next_check_at = now() + lease
     WHERE p.ctid = ANY (first_due || next_due)
    RETURNING p.gid, p.check_url, p.check_host, p.checks + 1, p.lease_token;
END
$$;

CREATE OR REPLACE FUNCTION outbox.record_prepared_check(gid text, token uuid, verdict text, error text,
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
    UPDATE outbox.prepared t SET last_check_at = now() WHERE t.owner = p.owner AND t.gid = p.gid;
    RETURN 'committed';
  ELSIF verdict = 'rolled_back' THEN
    PERFORM outbox.rollback_prepared_row(p.owner, p.gid, 'check-back');
    UPDATE outbox.prepared t SET last_check_at = now() WHERE t.owner = p.owner AND t.gid = p.gid;
    RETURN 'rolled_back';
  ELSIF verdict = 'released' THEN
    UPDATE outbox.prepared t SET lease_token = NULL, next_check_at = now()
     WHERE t.owner = p.owner AND t.gid = p.gid;
    RETURN 'prepared';
  END IF;
  UPDATE outbox.prepared t
     SET checks = t.checks + 1, last_check_at = now(), last_error = left(error, 1000),
         lease_token = NULL,
         state = CASE WHEN t.checks + 1 >= check_max THEN 'parked' ELSE 'prepared' END,
         next_check_at = CASE WHEN t.checks + 1 >= check_max THEN NULL ELSE now() + retry_in END
   WHERE t.owner = p.owner AND t.gid = p.gid
  RETURNING * INTO p;
  RETURN p.state;
END
$$;

-- Operators act on a gid across owners (`prepared list` shows the owner).
CREATE OR REPLACE FUNCTION outbox.drop_prepared(gid text)
RETURNS boolean LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp AS $$
DECLARE
  p outbox.prepared;
  any_dropped boolean := false;
BEGIN
  FOR p IN SELECT * FROM outbox.prepared t
            WHERE t.gid = drop_prepared.gid AND t.state IN ('prepared', 'parked') FOR UPDATE LOOP
    PERFORM outbox.rollback_prepared_row(p.owner, p.gid, 'operator');
    any_dropped := true;
  END LOOP;
  RETURN any_dropped;
END
$$;

CREATE OR REPLACE FUNCTION outbox.purge_prepared(older_than interval, max_rows integer DEFAULT 10000)
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
   WHERE p.ctid = ANY (ARRAY(SELECT x.ctid FROM outbox.prepared x
                    WHERE x.state IN ('committed', 'rolled_back') AND x.finished_at < now() - older_than
                    ORDER BY x.finished_at LIMIT max_rows
                      FOR UPDATE SKIP LOCKED));
  GET DIAGNOSTICS deleted = ROW_COUNT;
  RETURN deleted;
END
$$;

-- ---- Notifications belong to the login that scheduled them ---------------------------
ALTER TABLE inbox.notifications ADD COLUMN owner name NOT NULL DEFAULT session_user;
-- Sent as the Notification-Uuid header: unique across databases (the id is a counter of
-- this database), so a receiver fed by several databases can deduplicate on it.
ALTER TABLE inbox.notifications ADD COLUMN uid uuid NOT NULL DEFAULT gen_random_uuid();

-- Receivers and senders see only their own notifications; the relay role (the worker,
-- operators) sees all. Another login's id gives the same answer as an unknown id.
CREATE OR REPLACE FUNCTION inbox.notification_status(notification_id bigint)
RETURNS TABLE (id bigint, state text, attempts integer, max_attempts integer,
               in_flight boolean, created_at timestamptz, next_attempt_at timestamptz,
               finished_at timestamptz, last_attempt_at timestamptz,
               last_status_code integer, last_error text, last_response text)
LANGUAGE sql STABLE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp AS $$
  SELECT n.id, n.state, n.attempts, cardinality(n.schedule) + 1, n.lease_token IS NOT NULL,
         n.created_at, CASE WHEN n.lease_token IS NULL THEN n.next_attempt_at END,
         n.finished_at, a.started_at, a.status_code, a.error, a.response
    FROM inbox.notifications n
    LEFT JOIN LATERAL (
      SELECT x.started_at, x.status_code, x.error, x.response
        FROM inbox.notification_attempts x
       WHERE x.notification_id = n.id AND x.finished_at IS NOT NULL
       ORDER BY x.id DESC LIMIT 1) a ON true
   WHERE n.id = notification_status.notification_id
     AND (n.owner = session_user OR pg_has_role(session_user, 'outbox_relay', 'MEMBER'))
$$;

-- ---- Consumer groups: a group's inbox rows belong to its member logins ----------------
CREATE TABLE inbox.consumer_groups (
  group_id   text NOT NULL,
  member     name NOT NULL,
  joined_at  timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (group_id, member)
);
-- The smallest `older_than` retention may use (inbox.trim_batch); the schema owner sets
-- it. A consumer cannot delete history younger than this, so a replay inside the window
-- is still recognised as a duplicate.
CREATE TABLE inbox.settings (
  singleton      boolean PRIMARY KEY DEFAULT true CHECK (singleton),
  min_retention  interval NOT NULL DEFAULT '1 hour' CHECK (min_retention >= interval '0')
);
INSERT INTO inbox.settings DEFAULT VALUES;

-- The groups of the calling login.
CREATE FUNCTION inbox.my_groups()
RETURNS text[] LANGUAGE sql STABLE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp AS $$
  SELECT coalesce(array_agg(group_id), '{}') FROM inbox.consumer_groups WHERE member = session_user
$$;

-- Called by the consumer library at start-up. A group nobody has used yet becomes the
-- caller's; a group of other logins is refused with a clear error (the schema owner adds
-- members: INSERT INTO inbox.consumer_groups (group_id, member) VALUES (...)).
CREATE FUNCTION inbox.join_group(group_id text)
RETURNS void LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp AS $$
DECLARE
  others text;
BEGIN
  IF group_id IS NULL OR group_id = '' OR octet_length(group_id) > 255 THEN
    RAISE EXCEPTION 'inbox.join_group: group id must be 1 to 255 bytes' USING ERRCODE = '22023';
  END IF;
  PERFORM pg_advisory_xact_lock(hashtext('inbox.join_group'), hashtext(group_id));
  IF EXISTS (SELECT 1 FROM inbox.consumer_groups g WHERE g.group_id = join_group.group_id
                AND g.member = session_user) THEN
    RETURN;
  END IF;
  SELECT string_agg(g.member::text, ', ' ORDER BY g.member) INTO others
    FROM inbox.consumer_groups g WHERE g.group_id = join_group.group_id;
  IF others IS NOT NULL THEN
    RAISE EXCEPTION 'inbox.join_group: consumer group % belongs to login(s) %, not %',
      quote_literal(group_id), others, session_user USING ERRCODE = '42501',
      HINT = 'The schema owner can add a member: INSERT INTO inbox.consumer_groups (group_id, member) VALUES (...).';
  END IF;
  INSERT INTO inbox.consumer_groups (group_id, member) VALUES (group_id, session_user);
END
$$;

ALTER TABLE inbox.messages ENABLE ROW LEVEL SECURITY;
ALTER TABLE inbox.attempts ENABLE ROW LEVEL SECURITY;
ALTER TABLE inbox.retries ENABLE ROW LEVEL SECURITY;
CREATE POLICY own_groups ON inbox.messages
  USING (group_id = ANY (inbox.my_groups())) WITH CHECK (group_id = ANY (inbox.my_groups()));
CREATE POLICY own_groups ON inbox.attempts
  USING (group_id = ANY (inbox.my_groups())) WITH CHECK (group_id = ANY (inbox.my_groups()));
CREATE POLICY own_groups ON inbox.retries
  USING (group_id = ANY (inbox.my_groups())) WITH CHECK (group_id = ANY (inbox.my_groups()));

-- Barrier rows belong to their login: another login's (gid, branch, op) neither blocks
-- nor answers for yours.
ALTER TABLE inbox.barrier ADD COLUMN owner name NOT NULL DEFAULT session_user;
ALTER TABLE inbox.barrier DROP CONSTRAINT barrier_gid_branch_op;
ALTER TABLE inbox.barrier ADD CONSTRAINT barrier_owner_gid_branch_op UNIQUE (owner, gid, branch_id, op);
ALTER TABLE inbox.barrier ENABLE ROW LEVEL SECURITY;
CREATE POLICY own_rows ON inbox.barrier
  USING (owner = session_user) WITH CHECK (owner = session_user);

-- Retention deletes only the caller's groups' rows (all rows when the schema owner
-- calls), never younger than inbox.settings.min_retention.
CREATE OR REPLACE FUNCTION inbox.trim_batch(older_than interval, batch_size integer DEFAULT 1000,
                                            OUT messages bigint, OUT attempts bigint, OUT barrier bigint)
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp AS $$
DECLARE
  cutoff timestamptz := now() - older_than;
  floor_age interval := (SELECT min_retention FROM inbox.settings);
  everything boolean := pg_has_role(session_user, (SELECT tableowner::name FROM pg_tables
                                                   WHERE schemaname = 'inbox' AND tablename = 'messages'), 'MEMBER');
  mine text[] := inbox.my_groups();
BEGIN
  IF older_than IS NULL OR older_than < interval '0' THEN
    RAISE EXCEPTION 'inbox.trim_batch: older_than must be a non-negative interval, got %',
      coalesce(older_than::text, 'NULL') USING ERRCODE = '22023';
  END IF;
  IF older_than < floor_age AND NOT everything THEN
    RAISE EXCEPTION 'inbox.trim_batch: older_than % is below the minimum retention % (inbox.settings.min_retention)',
      older_than, floor_age USING ERRCODE = '22023';
  END IF;
  IF batch_size IS NULL OR batch_size < 1 THEN
    RAISE EXCEPTION 'inbox.trim_batch: batch_size must be at least 1, got %',
      coalesce(batch_size::text, 'NULL') USING ERRCODE = '22023';
  END IF;
  DELETE FROM inbox.messages WHERE ctid = ANY (ARRAY(
    SELECT ctid FROM inbox.messages WHERE processed_at < cutoff AND (everything OR group_id = ANY (mine))
    ORDER BY processed_at LIMIT batch_size));
  GET DIAGNOSTICS messages = ROW_COUNT;
  DELETE FROM inbox.attempts WHERE ctid = ANY (ARRAY(
    SELECT ctid FROM inbox.attempts WHERE failed_at < cutoff AND (everything OR group_id = ANY (mine))
    ORDER BY failed_at LIMIT batch_size));
  GET DIAGNOSTICS attempts = ROW_COUNT;
  DELETE FROM inbox.barrier WHERE ctid = ANY (ARRAY(
    SELECT ctid FROM inbox.barrier WHERE created_at < cutoff AND (everything OR owner = session_user)
    ORDER BY created_at LIMIT batch_size));
  GET DIAGNOSTICS barrier = ROW_COUNT;
END
$$;

REVOKE ALL ON inbox.consumer_groups, inbox.settings FROM PUBLIC;
REVOKE ALL ON FUNCTION inbox.my_groups(), inbox.join_group(text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION inbox.my_groups(), inbox.join_group(text) TO outbox_consumer;
GRANT SELECT ON inbox.settings TO outbox_consumer;
