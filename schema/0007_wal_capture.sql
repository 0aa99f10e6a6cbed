-- 0007_wal_capture.sql — WAL capture: messages carried in the WAL instead of rows
-- (issue 15, docs/wal-capture.md).
-- Released migrations are never edited: `outbox-relay migrate` refuses a changed file.
--
-- In `wal` mode outbox.publish (and everything that enqueues through it: commit_prepared,
-- check-back) inserts no row: it calls pg_logical_emit_message(true, 'outbox', record),
-- which is part of the producer's transaction (decoded at its commit, in commit order,
-- gone if it rolls back). The relay reads the records from the logical replication slot
-- outbox.settings.slot_name (plugin pgoutput, publication outbox_wal, option messages).
-- Producers call the same functions in both modes.
--
-- The mode changes only through outbox.set_capture (schema owner). Every publish holds
-- the advisory lock (1869769827, 0) shared from before it reads outbox.settings until its
-- transaction ends (0005); set_capture takes it exclusively, so no publisher is between
-- reading the mode and committing when the mode changes, and the switch marker it emits
-- is decoded after every message of the old mode and before every message of the new one.
--
-- Record (prefix 'outbox', version 1; integers big-endian):
--   u8 version = 1 | i64 id | 16 message_id | i64 created_at (µs since 2000-01-01 UTC)
--   | i32 topic length, topic (UTF-8) | i32 key length (-1: NULL), key (UTF-8)
--   | i32 headers length, headers (the jsonb as JSON text) | i32 payload length (-1: NULL), payload
-- Switch marker (prefix 'outbox.switch', version 1):
--   u8 version = 1 | u8 mode: 'w' (now wal) or 't' (now table) | i64 max_id
--   (highest outbox.messages.id at the switch; 0: none)

-- ---- Settings --------------------------------------------------------------------------
-- The default slot name of this database: 'outbox_', the database name in lowercase with
-- every character other than [a-z0-9_] replaced by '_' and cut to 40 characters, '_' and
-- 8 hex digits of the name's MD5 (slot names are cluster-wide: two databases whose names
-- differ only after the cut, or only in characters replaced, still get their own slot).
CREATE FUNCTION outbox.default_slot_name()
RETURNS text LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp AS $$
  SELECT 'outbox_' || left(regexp_replace(lower(current_database()), '[^a-z0-9_]', '_', 'g'), 40)
         || '_' || left(md5(current_database()), 8)
$$;
REVOKE ALL ON FUNCTION outbox.default_slot_name() FROM PUBLIC;

ALTER TABLE outbox.settings
  -- Where outbox.publish puts messages: 'table' (rows of outbox.messages) or 'wal'
  -- (pg_logical_emit_message, read through the slot). Change it only with
  -- outbox.set_capture().
  ADD COLUMN capture text NOT NULL DEFAULT 'table' CHECK (capture IN ('table', 'wal')),
  -- The logical replication slot of this database. A database copied from another
  -- (CREATE DATABASE ... TEMPLATE) keeps the template's name: set_capture refuses a slot
  -- of another database, then set a name of its own here (schema owner).
  ADD COLUMN slot_name text NOT NULL DEFAULT outbox.default_slot_name()
    CHECK (slot_name ~ '^[a-z0-9_]{1,63}$'),
  -- True after a switch back to 'table' until the relay has published every message of
  -- the slot (it then calls outbox.wal_drained); table lanes do not claim while it is true.
  ADD COLUMN wal_draining boolean NOT NULL DEFAULT false;

-- pgoutput looks its publications up in the catalog as of each decoded transaction
-- (historic snapshots), so the publication must exist before any slot is created. It
-- holds no table: the relay reads only the messages (option messages 'true').
CREATE PUBLICATION outbox_wal;

-- ---- Forged records --------------------------------------------------------------------
-- pg_logical_emit_message is executable by PUBLIC: any login of the database could write
-- an 'outbox' record (any topic, unchecked headers and sizes) that the relay would
-- produce. Only outbox.publish (running as the schema owner) may emit them. Changing the
-- privileges of a pg_catalog function needs a superuser; when the migration does not run
-- as one it warns and names the statements a superuser must run.
DO $$
BEGIN
  IF (SELECT rolsuper FROM pg_roles WHERE rolname = current_user) THEN
    EXECUTE 'REVOKE EXECUTE ON FUNCTION pg_catalog.pg_logical_emit_message(boolean, text, bytea), '
            'pg_catalog.pg_logical_emit_message(boolean, text, text) FROM PUBLIC';
    EXECUTE format('GRANT EXECUTE ON FUNCTION pg_catalog.pg_logical_emit_message(boolean, text, bytea) TO %I',
                   current_user);
  ELSE
    RAISE WARNING 'every login of database % can call pg_logical_emit_message and forge outbox records in wal mode',
      current_database()
      USING HINT = format('As a superuser, in this database: REVOKE EXECUTE ON FUNCTION '
                          'pg_logical_emit_message(boolean, text, bytea), pg_logical_emit_message(boolean, text, text) '
                          'FROM PUBLIC; GRANT EXECUTE ON FUNCTION pg_logical_emit_message(boolean, text, bytea) TO %I;',
                          current_user);
  END IF;
END
$$;

-- ---- Encoding ----------------------------------------------------------------------------
-- The record is built in outbox.publish itself (header of this file for the layout): a
-- helper function with SET search_path cannot be inlined, and calling one per message
-- cost more than the emit (docs/performance.md, "Capture modes side by side").

-- Internal (not granted): emits a switch marker ('w' or 't') carrying the highest id of
-- outbox.messages (the caller holds the publish lock exclusively: every publisher has
-- ended, and a READ COMMITTED statement sees all their rows).
CREATE FUNCTION outbox.emit_switch_marker(mode "char")
RETURNS void LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp AS $$
BEGIN
  PERFORM pg_logical_emit_message(true, 'outbox.switch',
            '\x01'::bytea || CASE mode WHEN 'w' THEN '\x77'::bytea ELSE '\x74'::bytea END
            || int8send(coalesce((SELECT max(id) FROM outbox.messages), 0)));
END
$$;
REVOKE ALL ON FUNCTION outbox.emit_switch_marker("char") FROM PUBLIC;

-- ---- Publish ---------------------------------------------------------------------------
-- outbox.publish as in 0006 (topic, headers, limits, the shared publish lock); in wal
-- mode the message becomes a WAL record instead of a row (no NOTIFY: the relay streams).
-- It takes its id from the identity sequence of outbox.messages, so a WAL message parked
-- as a dead letter and retried into the table keeps one id space. Refused (55000) while
-- the slot is missing or lost: nothing is emitted that no relay will read.
CREATE OR REPLACE FUNCTION outbox.publish(topic text, key text, payload bytea, headers jsonb DEFAULT '{}')
RETURNS uuid LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp AS $$
DECLARE
  mid uuid := gen_random_uuid();
  s outbox.settings;
  slot_status text;
  topic_b bytea;
  key_b bytea;
  headers_b bytea;
BEGIN
  PERFORM outbox.check_topic('outbox.publish', topic);
  headers := coalesce(headers, '{}'::jsonb);
  PERFORM outbox.check_headers('outbox.publish', headers);
  -- Held until the transaction ends: neither the lane count nor the capture mode can
  -- change before this message commits.
  PERFORM pg_advisory_xact_lock_shared(1869769827, 0);
  SELECT * INTO s FROM outbox.settings;
  PERFORM outbox.check_limits('outbox.publish', topic, key, payload, headers, s.max_payload_bytes);
  IF s.capture = 'wal' AND current_setting('transaction_isolation') <> 'read committed' THEN
    -- A REPEATABLE READ or SERIALIZABLE snapshot may predate a switch back to 'table':
    -- its record would come after the 't' marker, when the relay no longer reads the
    -- slot. Locking the row fails (40001) if it changed after the snapshot.
    SELECT * INTO s FROM outbox.settings FOR SHARE;
  END IF;
  IF s.capture = 'wal' THEN
    SELECT r.wal_status INTO slot_status FROM pg_get_replication_slots() r
     WHERE r.slot_name = s.slot_name AND r.datoid = (SELECT d.oid FROM pg_database d WHERE d.datname = current_database());
    IF NOT FOUND OR slot_status = 'lost' THEN
      RAISE EXCEPTION 'outbox.publish: capture is wal but replication slot % is %', quote_literal(s.slot_name),
        CASE WHEN FOUND THEN 'lost (invalidated: max_slot_wal_keep_size)' ELSE 'missing' END
        USING ERRCODE = '55000',
              HINT = 'Nothing is published until the schema owner recovers: see docs/wal-capture.md '
                     '(SELECT outbox.set_capture(''table'') switches back to the outbox table).';
    END IF;
    -- The record (layout in this file's header), built here: see "Encoding" above.
    topic_b := convert_to(topic, 'UTF8');
    key_b := convert_to(key, 'UTF8');
    headers_b := convert_to(headers::text, 'UTF8');
    PERFORM pg_logical_emit_message(true, 'outbox',
              '\x01'::bytea
              || int8send(nextval('outbox.messages_id_seq'::regclass))
              || uuid_send(mid)
              || int8send((date_part('epoch', now()) * 1000000)::bigint - 946684800000000)
              || int4send(octet_length(topic_b)) || topic_b
              || CASE WHEN key_b IS NULL THEN '\xffffffff'::bytea ELSE int4send(octet_length(key_b)) || key_b END
              || int4send(octet_length(headers_b)) || headers_b
              || CASE WHEN payload IS NULL THEN '\xffffffff'::bytea ELSE int4send(octet_length(payload)) || payload END);
    RETURN mid;
  END IF;
  INSERT INTO outbox.messages (message_id, lane, topic, key, payload, headers)
  VALUES (mid, outbox.lane_of(key, mid, s.lane_count), topic, key, payload, headers);
  IF s.notify THEN
    PERFORM pg_notify('outbox_relay', '');
  END IF;
  RETURN mid;
END
$$;

-- ---- Switching -------------------------------------------------------------------------
-- Schema owner only (not granted). 'wal': creates the slot (or reuses an inactive
-- pgoutput slot of this database with that name, left by a switch that rolled back),
-- then takes the publish lock exclusively (waits for the open publishing transactions;
-- new publishes wait behind it), sets capture = 'wal' and emits a 'w' marker. Refused
-- while wal_draining. 'table': takes the lock, sets capture = 'table' and wal_draining,
-- emits a 't' marker; with the slot missing or lost it switches at once with a WARNING
-- (wal_draining stays false). The same mode: no-op. Run it in its own READ COMMITTED
-- transaction (a slot cannot be created in a transaction that already wrote).
CREATE FUNCTION outbox.set_capture(mode text)
RETURNS void LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp AS $$
DECLARE
  s outbox.settings;
  slot record;
  can_replicate boolean;
  msg text;
  detail text;
BEGIN
  IF mode IS NULL OR mode NOT IN ('table', 'wal') THEN
    RAISE EXCEPTION 'outbox.set_capture: mode must be ''table'' or ''wal'', got %',
      coalesce(quote_literal(mode), 'NULL') USING ERRCODE = '22023';
  END IF;
  IF current_setting('transaction_isolation') <> 'read committed' THEN
    RAISE EXCEPTION 'outbox.set_capture: the transaction is %, not READ COMMITTED',
      upper(current_setting('transaction_isolation')) USING ERRCODE = '25001',
      HINT = 'Call outbox.set_capture in its own READ COMMITTED transaction.';
  END IF;
  SELECT * INTO s FROM outbox.settings;
  IF s.capture = mode THEN
    -- Draining a slot that went away (dropped, invalidated): nothing is left to drain, and
    -- the table lanes would wait for ever. End it.
    IF mode = 'table' AND s.wal_draining AND NOT EXISTS (
         SELECT 1 FROM pg_replication_slots r
          WHERE r.slot_name = s.slot_name AND r.database = current_database()
            AND r.wal_status IS DISTINCT FROM 'lost') THEN
      UPDATE outbox.settings SET wal_draining = false;
      RAISE WARNING 'outbox.set_capture: replication slot % is missing or lost; draining ended',
        quote_literal(s.slot_name)
        USING DETAIL = 'Messages published in wal mode that no relay had produced yet are lost.';
    END IF;
    RETURN;
  END IF;

  IF mode = 'wal' THEN
    IF s.wal_draining THEN
      RAISE EXCEPTION 'outbox.set_capture: the relay has not published every message of the last WAL stream yet (outbox.settings.wal_draining)'
        USING ERRCODE = '55000',
              HINT = 'Retry once a running relay has drained slot ' || quote_literal(s.slot_name) ||
                     ' (wal_draining becomes false).';
    END IF;
    IF current_setting('wal_level') <> 'logical' THEN
      RAISE EXCEPTION 'outbox.set_capture: wal_level is %, WAL capture needs logical', current_setting('wal_level')
        USING ERRCODE = '55000',
              HINT = 'Set wal_level = logical in postgresql.conf (ALTER SYSTEM SET wal_level = logical) and restart the server.';
    END IF;
    SELECT rolreplication OR rolsuper INTO can_replicate FROM pg_roles WHERE rolname = current_user;
    IF NOT coalesce(can_replicate, false) THEN
      RAISE EXCEPTION 'outbox.set_capture: role % has neither REPLICATION nor SUPERUSER; creating the replication slot needs one',
        current_user USING ERRCODE = '42501',
        HINT = format('As a superuser: ALTER ROLE %I REPLICATION;', current_user);
    END IF;
    IF pg_current_xact_id_if_assigned() IS NOT NULL THEN
      RAISE EXCEPTION 'outbox.set_capture: this transaction has already written; a replication slot cannot be created in it'
        USING ERRCODE = '25001', HINT = 'Call outbox.set_capture in its own transaction.';
    END IF;
    SELECT r.slot_type, r.plugin, r.database, r.active, r.active_pid, r.temporary, r.wal_status INTO slot
      FROM pg_replication_slots r WHERE r.slot_name = s.slot_name;
    IF NOT FOUND THEN
      BEGIN
        PERFORM pg_create_logical_replication_slot(s.slot_name, 'pgoutput');
      EXCEPTION WHEN configuration_limit_exceeded THEN
        GET STACKED DIAGNOSTICS msg = MESSAGE_TEXT;
        RAISE EXCEPTION 'outbox.set_capture: cannot create replication slot %: %', quote_literal(s.slot_name), msg
          USING ERRCODE = '53400',
                HINT = 'Drop a replication slot that is not used any more (pg_replication_slots), or raise '
                       'max_replication_slots (and max_wal_senders) and restart the server.';
      END;
    ELSIF slot.slot_type <> 'logical' OR slot.plugin IS DISTINCT FROM 'pgoutput'
          OR slot.database IS DISTINCT FROM current_database() OR slot.temporary THEN
      RAISE EXCEPTION 'outbox.set_capture: replication slot % exists and is not a pgoutput slot of database %',
        quote_literal(s.slot_name), quote_ident(current_database()) USING ERRCODE = '42710',
        DETAIL = format('It is a %s%s slot (plugin %s) of database %s.', CASE WHEN slot.temporary THEN 'temporary ' ELSE '' END,
                        slot.slot_type, coalesce(slot.plugin, 'none'), coalesce(slot.database::text, 'none')),
        HINT = 'Set another name: UPDATE outbox.settings SET slot_name = ''...''; (schema owner), or drop that slot.';
    ELSIF slot.active THEN
      RAISE EXCEPTION 'outbox.set_capture: replication slot % is in use (by process %)', quote_literal(s.slot_name),
        slot.active_pid USING ERRCODE = '55006',
        HINT = 'Stop whatever streams from it, or set another name in outbox.settings.slot_name.';
    ELSIF slot.wal_status = 'lost' THEN
      RAISE EXCEPTION 'outbox.set_capture: replication slot % is invalidated (wal_status lost)', quote_literal(s.slot_name)
        USING ERRCODE = '55000',
              HINT = format('Drop it first: SELECT pg_drop_replication_slot(%L);', s.slot_name);
    END IF;
    -- Reused or created: from here on this transaction writes.
  END IF;

  PERFORM pg_advisory_xact_lock(1869769827, 0);
  SELECT * INTO s FROM outbox.settings FOR UPDATE;
  IF s.capture = mode THEN
    RETURN;  -- a concurrent set_capture switched first
  END IF;
  IF mode = 'wal' THEN
    IF s.wal_draining THEN
      RAISE EXCEPTION 'outbox.set_capture: the relay has not published every message of the last WAL stream yet (outbox.settings.wal_draining)'
        USING ERRCODE = '55000';
    END IF;
    UPDATE outbox.settings SET capture = 'wal';
    PERFORM outbox.emit_switch_marker('w');
    RETURN;
  END IF;
  IF NOT EXISTS (SELECT 1 FROM pg_replication_slots r
                  WHERE r.slot_name = s.slot_name AND r.database = current_database()
                    AND r.wal_status IS DISTINCT FROM 'lost') THEN
    RAISE WARNING 'outbox.set_capture: replication slot % is missing or lost; switched to table at once',
      quote_literal(s.slot_name)
      USING DETAIL = 'Messages published in wal mode that no relay had produced yet are lost.';
    UPDATE outbox.settings SET capture = 'table', wal_draining = false;
    RETURN;
  END IF;
  UPDATE outbox.settings SET capture = 'table', wal_draining = true;
  PERFORM outbox.emit_switch_marker('t');
END
$$;
REVOKE ALL ON FUNCTION outbox.set_capture(text) FROM PUBLIC;

-- ---- Relay side --------------------------------------------------------------------------
-- The relay calls this after it published everything up to the 't' marker and closed its
-- stream: clears wal_draining and drops the slot. Only if capture = 'table', wal_draining
-- and `slot` is outbox.settings.slot_name; else a no-op (returns false). Runs as the
-- owner (who created the slot): the relay login needs no REPLICATION for it. Refused
-- (55006) while the slot is still in use (the relay's walsender has not exited yet: retry).
CREATE FUNCTION outbox.wal_drained(slot name)
RETURNS boolean LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp AS $$
DECLARE
  s outbox.settings;
  pid integer;
BEGIN
  SELECT * INTO s FROM outbox.settings FOR UPDATE;
  IF s.capture <> 'table' OR NOT s.wal_draining OR s.slot_name IS DISTINCT FROM slot::text THEN
    RETURN false;
  END IF;
  UPDATE outbox.settings SET wal_draining = false;
  SELECT r.active_pid INTO pid FROM pg_replication_slots r WHERE r.slot_name = s.slot_name;
  IF FOUND THEN
    IF pid IS NOT NULL THEN
      RAISE EXCEPTION 'outbox.wal_drained: replication slot % is still in use (by process %)',
        quote_literal(s.slot_name), pid USING ERRCODE = '55006', HINT = 'Close the stream first, then retry.';
    END IF;
    PERFORM pg_drop_replication_slot(s.slot_name);
  END IF;
  PERFORM pg_notify('outbox_relay', '');
  RETURN true;
END
$$;

-- The relay parks a WAL message Kafka refused for good (there is no row to move). It
-- re-validates nothing: outbox.retry_dead_letter validates like a publish before the
-- message re-enters the queue (the table, in either mode, under the same id). A second
-- failure of the same id updates the error.
CREATE FUNCTION outbox.dead_letter_wal(id bigint, message_id uuid, topic text, key text, payload bytea,
                                       headers jsonb, created_at timestamptz, error text)
RETURNS void LANGUAGE sql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp AS $$
  INSERT INTO outbox.dead_letters AS x (id, message_id, lane, topic, key, payload, headers, created_at, error)
  VALUES (dead_letter_wal.id, dead_letter_wal.message_id,
          outbox.lane_of(dead_letter_wal.key, dead_letter_wal.message_id, (SELECT lane_count FROM outbox.settings)),
          dead_letter_wal.topic, dead_letter_wal.key, dead_letter_wal.payload,
          coalesce(dead_letter_wal.headers, '{}'::jsonb), coalesce(dead_letter_wal.created_at, now()),
          left(coalesce(dead_letter_wal.error, ''), 2000))
  ON CONFLICT (id) DO UPDATE SET error = EXCLUDED.error, failed_at = now()
$$;

REVOKE ALL ON FUNCTION outbox.wal_drained(name),
  outbox.dead_letter_wal(bigint, uuid, text, text, bytea, jsonb, timestamptz, text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION outbox.wal_drained(name),
  outbox.dead_letter_wal(bigint, uuid, text, text, bytea, jsonb, timestamptz, text) TO outbox_relay;
