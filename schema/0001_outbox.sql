-- 0001_outbox.sql — the producer side of the transactional outbox.
-- Released migrations are never edited: `outbox-relay migrate` refuses a changed file.

CREATE SCHEMA outbox;

-- One row of settings shared by outbox.publish and every relay.
CREATE TABLE outbox.settings (
  singleton   boolean PRIMARY KEY DEFAULT true CHECK (singleton),
  -- Number of lanes (virtual partitions of the key space). A key always maps to the
  -- same lane, and one relay at a time owns a lane, which is what keeps per-key order.
  -- Change it only with outbox.set_lane_count(), which refuses while rows are pending.
  lane_count  integer NOT NULL DEFAULT 16 CHECK (lane_count BETWEEN 1 AND 1024),
  -- Whether outbox.publish sends NOTIFY outbox_relay so relays wake at once. NOTIFY
  -- takes a cluster-wide lock at commit; see docs/relay.md for the measured cost.
  notify      boolean NOT NULL DEFAULT true
);
INSERT INTO outbox.settings DEFAULT VALUES;

-- The queue. Rows are inserted by outbox.publish and deleted by the relay once Kafka
-- acknowledged them; they are never updated.
CREATE TABLE outbox.messages (
  id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  message_id  uuid NOT NULL,
  lane        integer NOT NULL,
  topic       text NOT NULL,
  key         text,
  payload     bytea,
  headers     jsonb NOT NULL DEFAULT '{}',
  created_at  timestamptz NOT NULL DEFAULT now()
) WITH (
  -- Rows are never updated, so space kept free for HOT updates would only be wasted.
  fillfactor = 100,
  -- A queue is mostly dead tuples: vacuum after a fixed number of deletes, not after a
  -- fraction of a table whose size swings between zero and the backlog, and vacuum at
  -- full speed because the live part is small. This keeps heap and indexes bounded.
  autovacuum_vacuum_scale_factor = 0,
  autovacuum_vacuum_threshold = 5000,
  autovacuum_vacuum_insert_scale_factor = 0,
  autovacuum_vacuum_insert_threshold = 20000,
  autovacuum_analyze_scale_factor = 0,
  autovacuum_analyze_threshold = 20000,
  autovacuum_vacuum_cost_delay = 0
);
-- The relay claims "the next rows of lane L in id order".
CREATE INDEX messages_lane_id ON outbox.messages (lane, id);

-- Messages Kafka refused for good (too large, unknown topic, ...). Kept until an
-- operator retries (back into outbox.messages) or drops them.
CREATE TABLE outbox.dead_letters (
  id          bigint PRIMARY KEY,           -- the id the row had in outbox.messages
  message_id  uuid NOT NULL,
  lane        integer NOT NULL,
  topic       text NOT NULL,
  key         text,
  payload     bytea,
  headers     jsonb NOT NULL,
  created_at  timestamptz NOT NULL,
  error       text NOT NULL,
  failed_at   timestamptz NOT NULL DEFAULT now()
);

-- Lane of a key: a stable hash of the key; NULL keys (no order promise) spread by id.
CREATE FUNCTION outbox.lane_of(key text, message_id uuid, lane_count integer)
RETURNS integer LANGUAGE sql IMMUTABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp AS $$
  SELECT (hashtext(coalesce(key, message_id::text)) & 2147483647) % lane_count
$$;

-- Raises a clear error unless headers is a JSON object whose values are strings.
CREATE FUNCTION outbox.check_headers(fn text, headers jsonb)
RETURNS void LANGUAGE plpgsql IMMUTABLE
SET search_path = pg_catalog, pg_temp AS $$
DECLARE
  bad_key text;
  bad_type text;
BEGIN
  IF jsonb_typeof(headers) <> 'object' THEN
    RAISE EXCEPTION '%: headers must be a JSON object of string values, got a JSON %',
      fn, jsonb_typeof(headers) USING ERRCODE = '22023';
  END IF;
  SELECT e.k, jsonb_typeof(e.v) INTO bad_key, bad_type
    FROM jsonb_each(headers) AS e(k, v) WHERE jsonb_typeof(e.v) <> 'string' LIMIT 1;
  IF bad_key IS NOT NULL THEN
    RAISE EXCEPTION '%: header "%" must be a JSON string, got a JSON %', fn, bad_key, bad_type
      USING ERRCODE = '22023';
  END IF;
  IF headers ? 'message_id' THEN
    RAISE EXCEPTION '%: header "message_id" is reserved (the relay sets it)', fn
      USING ERRCODE = '22023';
  END IF;
END
$$;

-- Raises a clear error unless topic is a valid Kafka topic name.
CREATE FUNCTION outbox.check_topic(fn text, topic text)
RETURNS void LANGUAGE plpgsql IMMUTABLE
SET search_path = pg_catalog, pg_temp AS $$
BEGIN
  IF topic IS NULL OR topic !~ '^[A-Za-z0-9._-]{1,249}$' OR topic IN ('.', '..') THEN
    RAISE EXCEPTION '%: invalid Kafka topic name %: use 1 to 249 of [A-Za-z0-9._-]',
      fn, coalesce(quote_literal(topic), 'NULL') USING ERRCODE = '22023';
  END IF;
END
$$;

-- Call inside the business transaction. Returns the message id (the Kafka header
-- message_id). Runs as the table owner so producers need no table privileges.
CREATE FUNCTION outbox.publish(topic text, key text, payload bytea, headers jsonb DEFAULT '{}')
RETURNS uuid LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp AS $$
DECLARE
  mid uuid := gen_random_uuid();
  s outbox.settings;
BEGIN
  PERFORM outbox.check_topic('outbox.publish', topic);
  headers := coalesce(headers, '{}'::jsonb);
  PERFORM outbox.check_headers('outbox.publish', headers);
  SELECT * INTO s FROM outbox.settings;
  INSERT INTO outbox.messages (message_id, lane, topic, key, payload, headers)
  VALUES (mid, outbox.lane_of(key, mid, s.lane_count), topic, key, payload, headers);
  IF s.notify THEN
    PERFORM pg_notify('outbox_relay', '');
  END IF;
  RETURN mid;
END
$$;

-- Convenience overload for text payloads (stored as their UTF-8 bytes).
CREATE FUNCTION outbox.publish(topic text, key text, payload text, headers jsonb DEFAULT '{}')
RETURNS uuid LANGUAGE sql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp AS $$
  SELECT outbox.publish(topic, key, convert_to(payload, 'UTF8'), headers)
$$;

-- Operators: move a dead letter back into the queue (new id: it goes to the end of its
-- lane; same message_id). Returns false when no such dead letter exists.
CREATE FUNCTION outbox.retry_dead_letter(dead_id bigint)
RETURNS boolean LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp AS $$
DECLARE
  d outbox.dead_letters;
BEGIN
  DELETE FROM outbox.dead_letters WHERE id = dead_id RETURNING * INTO d;
  IF NOT FOUND THEN
    RETURN false;
  END IF;
  INSERT INTO outbox.messages (message_id, lane, topic, key, payload, headers, created_at)
  VALUES (d.message_id, d.lane, d.topic, d.key, d.payload, d.headers, d.created_at);
  PERFORM pg_notify('outbox_relay', '');
  RETURN true;
END
$$;

-- Changes the number of lanes. Refused while messages are pending, because a pending
-- key would move to another lane and could overtake its own older messages.
CREATE FUNCTION outbox.set_lane_count(n integer)
RETURNS void LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp AS $$
BEGIN
  IF n IS NULL OR n < 1 OR n > 1024 THEN
    RAISE EXCEPTION 'outbox.set_lane_count: lane count must be between 1 and 1024, got %', n
      USING ERRCODE = '22023';
  END IF;
  LOCK TABLE outbox.messages IN EXCLUSIVE MODE;
  IF EXISTS (SELECT 1 FROM outbox.messages) THEN
    RAISE EXCEPTION 'outbox.set_lane_count: % messages are pending; drain the outbox first',
      (SELECT count(*) FROM outbox.messages) USING ERRCODE = '55000';
  END IF;
  UPDATE outbox.settings SET lane_count = n;
END
$$;

-- Least privilege. Roles are cluster-wide, so create them only once.
DO $$
BEGIN
  IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'outbox_producer') THEN
    CREATE ROLE outbox_producer NOLOGIN;
  END IF;
  IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'outbox_relay') THEN
    CREATE ROLE outbox_relay NOLOGIN;
  END IF;
  IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'outbox_consumer') THEN
    CREATE ROLE outbox_consumer NOLOGIN;
  END IF;
END
$$;

REVOKE ALL ON SCHEMA outbox FROM PUBLIC;
REVOKE ALL ON ALL TABLES IN SCHEMA outbox FROM PUBLIC;
REVOKE ALL ON ALL FUNCTIONS IN SCHEMA outbox FROM PUBLIC;
GRANT USAGE ON SCHEMA outbox TO outbox_producer, outbox_relay;

-- Producers may only call publish.
GRANT EXECUTE ON FUNCTION outbox.publish(text, text, bytea, jsonb) TO outbox_producer;
GRANT EXECUTE ON FUNCTION outbox.publish(text, text, text, jsonb) TO outbox_producer;

-- The relay reads and deletes queue rows, parks dead letters and runs the operator
-- commands for them; it cannot insert or change messages directly.
GRANT SELECT ON outbox.settings TO outbox_relay;
GRANT SELECT, DELETE ON outbox.messages TO outbox_relay;
GRANT SELECT, INSERT, DELETE ON outbox.dead_letters TO outbox_relay;
GRANT EXECUTE ON FUNCTION outbox.retry_dead_letter(bigint) TO outbox_relay;
