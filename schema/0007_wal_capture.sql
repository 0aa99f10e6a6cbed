-- 0007_wal_capture.sql — capture mode wal: messages carried in the WAL (issue 15).
-- Released migrations are never edited: `outbox-relay migrate` refuses a changed file.
--
-- In capture mode `wal`, outbox.publish (and everything that publishes through it:
-- commit_prepared, check-back) emits the message with pg_logical_emit_message into the
-- WAL instead of inserting a row; the relay reads it from a logical replication slot
-- (plugin pgoutput, publication outbox_wal, option messages). The bytes of a message and
-- of a switch marker are documented in docs/wal-capture.md ("Encoding"); the relay's
-- reader is relay/wal/wal_record.cc.

-- ---- Settings ------------------------------------------------------------------------
ALTER TABLE outbox.settings
  -- 'table' (rows in outbox.messages, the default) or 'wal'. Changed only with
  -- outbox.set_capture (schema owner).
  ADD COLUMN capture text NOT NULL DEFAULT 'table' CHECK (capture IN ('table', 'wal')),
  -- The logical replication slot of this database. Slot names are cluster-wide: the
  -- database's name (what a slot name may hold of it) plus a hash of the whole name.
  ADD COLUMN slot_name name NOT NULL
    DEFAULT 'outbox_' || left(regexp_replace(lower(current_database()), '[^a-z0-9_]', '_', 'g'), 40) || '_'
            || left(md5(current_database()), 8),
  -- True after a switch back to 'table' until the relay published every message of the
  -- slot (outbox.wal_drained): until then the relay claims no new row, because the WAL's
  -- messages were committed before them.
  ADD COLUMN wal_draining boolean NOT NULL DEFAULT false;

-- The publication pgoutput streams. It lists no table (only logical messages are read),
-- and it must exist before any slot is created: pgoutput looks publications up in the
-- catalog as of each decoded transaction.
CREATE PUBLICATION outbox_wal;

-- ---- Encoding ------------------------------------------------------------------------
CREATE FUNCTION outbox.wal_field(b bytea)
RETURNS bytea LANGUAGE sql IMMUTABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp AS $$
  SELECT CASE WHEN b IS NULL THEN '\xffffffff'::bytea ELSE int4send(octet_length(b)) || b END
$$;

-- The message record (version 1): id, message_id, created_at, topic, key, headers, payload.
CREATE FUNCTION outbox.wal_record(id bigint, message_id uuid, created_at timestamptz, topic text, key text,
                                  payload bytea, headers jsonb)
RETURNS bytea LANGUAGE sql IMMUTABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp AS $$
  SELECT '\x01'::bytea || int8send(id) || uuid_send(message_id)
         || int8send((extract(epoch FROM created_at - timestamptz '2000-01-01 00:00:00+00') * 1000000)::bigint)
         || outbox.wal_field(convert_to(topic, 'UTF8'))
         || outbox.wal_field(convert_to(key, 'UTF8'))
         || outbox.wal_field(convert_to(headers::text, 'UTF8'))
         || outbox.wal_field(payload)
$$;

-- Raises 55000 unless the slot exists on this database and can still serve changes.
CREATE FUNCTION outbox.check_slot(fn text, slot name)
RETURNS void LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp AS $$
DECLARE
  st text;
BEGIN
  SELECT coalesce(wal_status, 'reserved') INTO st FROM pg_replication_slots
   WHERE slot_name = slot AND database = current_database();
  IF NOT FOUND THEN
    RAISE EXCEPTION '%: capture mode is wal but replication slot % does not exist: nothing would read the message',
      fn, slot USING ERRCODE = '55000',
      HINT = 'The schema owner switches to table mode with SELECT outbox.set_capture(''table'') (docs/relay.md, "Capture mode").';
  END IF;
  IF st = 'lost' THEN
    RAISE EXCEPTION '%: capture mode is wal but replication slot % was invalidated (max_slot_wal_keep_size)',
      fn, slot USING ERRCODE = '55000',
      HINT = 'The schema owner switches to table mode with SELECT outbox.set_capture(''table'') (docs/relay.md, "Capture mode").';
  END IF;
END
$$;

-- ---- outbox.publish ------------------------------------------------------------------
-- As in 0006 (checks, limits, the shared publish lock), plus capture mode wal.
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
  -- Held until the transaction ends: neither the lane count nor the capture mode can
  -- change between reading them and this commit (set_capture takes it exclusively).
  PERFORM pg_advisory_xact_lock_shared(1869769827, 0);
  SELECT * INTO s FROM outbox.settings;
  PERFORM outbox.check_limits('outbox.publish', topic, key, payload, headers, s.max_payload_bytes);
  IF s.capture = 'wal' THEN
    PERFORM outbox.check_slot('outbox.publish', s.slot_name);
    -- The id comes from the table's identity: one id space for rows, WAL messages and
    -- dead letters.
    PERFORM pg_logical_emit_message(true, 'outbox',
      outbox.wal_record(nextval(pg_get_serial_sequence('outbox.messages', 'id')), mid, now(), topic, key,
                        payload, headers));
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

-- ---- Switching -----------------------------------------------------------------------
-- Schema owner only (not granted). Call it in its own transaction: a logical slot can
-- only be created before the transaction writes anything. Needs wal_level = logical and
-- a login with REPLICATION (or superuser). See docs/relay.md, "Capture mode".
CREATE FUNCTION outbox.set_capture(mode text)
RETURNS text LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp AS $$
DECLARE
  s outbox.settings;
  slot record;
  max_id bigint;
BEGIN
  IF mode IS NULL OR mode NOT IN ('table', 'wal') THEN
    RAISE EXCEPTION 'outbox.set_capture: mode must be ''table'' or ''wal'', got %', coalesce(quote_literal(mode), 'NULL')
      USING ERRCODE = '22023';
  END IF;
  SELECT * INTO s FROM outbox.settings;
  IF s.capture = mode AND NOT (mode = 'table' AND s.wal_draining) THEN
    RETURN 'capture is already ' || mode;
  END IF;
  IF mode = 'table' AND s.capture = 'table' THEN
    -- Draining. If the slot went away meanwhile, nothing is left to drain: end it.
    IF NOT EXISTS (SELECT 1 FROM pg_replication_slots WHERE slot_name = s.slot_name AND coalesce(wal_status, '') <> 'lost') THEN
      UPDATE outbox.settings SET wal_draining = false;
      RAISE WARNING 'outbox.set_capture: replication slot % is missing or invalidated: messages it still held are lost', s.slot_name;
      RETURN 'capture is table (the slot was gone: draining ended)';
    END IF;
    RETURN 'capture is table; the relay is still publishing the WAL stream of the last wal period';
  END IF;

  IF mode = 'wal' THEN
    IF s.wal_draining THEN
      RAISE EXCEPTION 'outbox.set_capture: the relay is still publishing the messages of the last wal period (outbox.settings.wal_draining)'
        USING ERRCODE = '55000', HINT = 'Wait until outbox-relay status shows draining false, then switch again.';
    END IF;
    IF current_setting('wal_level') <> 'logical' THEN
      RAISE EXCEPTION 'outbox.set_capture: wal_level is %, capture mode wal needs wal_level = logical', current_setting('wal_level')
        USING ERRCODE = '55000', HINT = 'Set wal_level = logical in postgresql.conf and restart PostgreSQL.';
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = current_user AND (rolreplication OR rolsuper)) THEN
      RAISE EXCEPTION 'outbox.set_capture: role % cannot create a replication slot (it needs REPLICATION)', current_user
        USING ERRCODE = '42501', HINT = 'Run it as a role with REPLICATION (ALTER ROLE ... REPLICATION) that owns the outbox schema.';
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_publication WHERE pubname = 'outbox_wal') THEN
      RAISE EXCEPTION 'outbox.set_capture: publication outbox_wal is missing' USING ERRCODE = '55000',
        HINT = 'Create it as the schema owner: CREATE PUBLICATION outbox_wal;';
    END IF;
    SELECT * INTO slot FROM pg_replication_slots WHERE slot_name = s.slot_name;
    IF FOUND THEN
      -- Left by a switch that rolled back (slots are not transactional): reuse it if it is
      -- ours and can still serve changes.
      IF slot.plugin IS DISTINCT FROM 'pgoutput' OR slot.database IS DISTINCT FROM current_database()
         OR slot.active OR coalesce(slot.wal_status, '') = 'lost' THEN
        RAISE EXCEPTION 'outbox.set_capture: replication slot % exists and is not a usable slot of this outbox (plugin %, database %, active %, wal_status %)',
          s.slot_name, slot.plugin, slot.database, slot.active, slot.wal_status USING ERRCODE = '55000',
          HINT = 'Drop it if nothing needs it (SELECT pg_drop_replication_slot(''' || s.slot_name || ''')), or set another outbox.settings.slot_name.';
      END IF;
    ELSE
      BEGIN
        PERFORM pg_create_logical_replication_slot(s.slot_name, 'pgoutput');
      EXCEPTION
        WHEN active_sql_transaction OR object_not_in_prerequisite_state THEN
          RAISE EXCEPTION 'outbox.set_capture: %', SQLERRM USING ERRCODE = '55000',
            HINT = 'Call SELECT outbox.set_capture(''wal'') in its own transaction, before anything else writes in it.';
        WHEN configuration_limit_exceeded OR program_limit_exceeded THEN
          RAISE EXCEPTION 'outbox.set_capture: %', SQLERRM USING ERRCODE = '53400',
            HINT = 'Raise max_replication_slots (restart needed) or drop an unused slot.';
      END;
    END IF;
    -- No publisher is between reading the mode and committing while this is held.
    PERFORM pg_advisory_xact_lock(1869769827, 0);
    SELECT coalesce(max(id), 0) INTO max_id FROM outbox.messages;
    UPDATE outbox.settings SET capture = 'wal', wal_draining = false;
    PERFORM pg_logical_emit_message(true, 'outbox.switch', '\x0177'::bytea || int8send(max_id));
    RETURN 'capture is wal (slot ' || s.slot_name || '); rows up to id ' || max_id || ' are published first';
  END IF;

  -- wal -> table
  PERFORM pg_advisory_xact_lock(1869769827, 0);
  IF NOT EXISTS (SELECT 1 FROM pg_replication_slots WHERE slot_name = s.slot_name AND coalesce(wal_status, '') <> 'lost') THEN
    UPDATE outbox.settings SET capture = 'table', wal_draining = false;
    RAISE WARNING 'outbox.set_capture: replication slot % is missing or invalidated: messages it still held are lost', s.slot_name;
    RETURN 'capture is table (the slot was gone: nothing to drain)';
  END IF;
  UPDATE outbox.settings SET capture = 'table', wal_draining = true;
  PERFORM pg_logical_emit_message(true, 'outbox.switch', '\x0174'::bytea || int8send(0::bigint));
  RETURN 'capture is table; the relay publishes the rest of the WAL stream first, then drops slot ' || s.slot_name;
END
$$;
REVOKE ALL ON FUNCTION outbox.set_capture(text) FROM PUBLIC;

-- The relay: everything up to the switch back to table mode is published and confirmed,
-- and its stream is closed. Ends draining and drops the slot. No-op unless draining.
CREATE FUNCTION outbox.wal_drained(slot name)
RETURNS boolean LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp AS $$
DECLARE
  s outbox.settings;
BEGIN
  SELECT * INTO s FROM outbox.settings FOR UPDATE;
  IF s.capture <> 'table' OR NOT s.wal_draining OR s.slot_name <> slot THEN
    RETURN false;
  END IF;
  IF EXISTS (SELECT 1 FROM pg_replication_slots WHERE slot_name = slot AND database = current_database()) THEN
    PERFORM pg_drop_replication_slot(slot);  -- fails while a walsender still holds it: retried
  END IF;
  UPDATE outbox.settings SET wal_draining = false;
  RETURN true;
END
$$;

-- The relay parks a WAL message Kafka refused for good (like outbox.dead_letter for a row).
CREATE FUNCTION outbox.dead_letter_wal(id bigint, message_id uuid, topic text, key text, payload bytea,
                                       headers jsonb, created_at timestamptz, error text)
RETURNS void LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp AS $$
BEGIN
  INSERT INTO outbox.dead_letters AS x (id, message_id, lane, topic, key, payload, headers, created_at, error)
  VALUES (dead_letter_wal.id, dead_letter_wal.message_id,
          outbox.lane_of(dead_letter_wal.key, dead_letter_wal.message_id, (SELECT lane_count FROM outbox.settings)),
          dead_letter_wal.topic, dead_letter_wal.key, dead_letter_wal.payload, coalesce(dead_letter_wal.headers, '{}'),
          dead_letter_wal.created_at, left(coalesce(dead_letter_wal.error, ''), 2000))
  ON CONFLICT ON CONSTRAINT dead_letters_pkey DO UPDATE SET error = EXCLUDED.error, failed_at = now();
END
$$;

REVOKE ALL ON FUNCTION outbox.wal_field(bytea),
  outbox.wal_record(bigint, uuid, timestamptz, text, text, bytea, jsonb),
  outbox.check_slot(text, name),
  outbox.wal_drained(name),
  outbox.dead_letter_wal(bigint, uuid, text, text, bytea, jsonb, timestamptz, text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION outbox.wal_drained(name),
  outbox.dead_letter_wal(bigint, uuid, text, text, bytea, jsonb, timestamptz, text) TO outbox_relay;
