-- 0005_lanes.sql — the lane count can change while relays run (issue 12).
-- Released migrations are never edited: `outbox-relay migrate` refuses a changed file.
--
-- outbox.publish read outbox.settings.lane_count without a lock, so a transaction could
-- read the count, let outbox.set_lane_count change it (the outbox was empty at that
-- moment), and then insert its row with a lane computed from the old count: a lane that
-- may no longer exist (nobody owns it) or that is not the lane of the key's next rows.
-- Now every publishing transaction holds a shared transaction-level advisory lock from
-- before it reads the count until it ends; set_lane_count takes it exclusively (and
-- refuses at once instead of queueing in front of every producer). Shared advisory
-- locks cost one lock-manager entry per transaction, no row lock on outbox.settings (a
-- FOR SHARE on the single settings row would create a MultiXact per concurrent commit).
--
-- outbox.retry_dead_letter re-inserted a row with the lane it had when it was parked;
-- after a lane count change that lane may not exist. It now computes the lane again.

-- The lock: (class, 0) in the two-int advisory namespace, class 0x6f726c63 ('orlc').

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
  -- Held until the transaction ends: the lane count cannot change before this row commits.
  PERFORM pg_advisory_xact_lock_shared(1869769827, 0);
  SELECT * INTO s FROM outbox.settings;
  INSERT INTO outbox.messages (message_id, lane, topic, key, payload, headers)
  VALUES (mid, outbox.lane_of(key, mid, s.lane_count), topic, key, payload, headers);
  IF s.notify THEN
    PERFORM pg_notify('outbox_relay', '');
  END IF;
  RETURN mid;
END
$$;

CREATE OR REPLACE FUNCTION outbox.retry_dead_letter(dead_id bigint)
RETURNS boolean LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp AS $$
DECLARE
  d outbox.dead_letters;
  n integer;
BEGIN
  PERFORM pg_advisory_xact_lock_shared(1869769827, 0);
  DELETE FROM outbox.dead_letters WHERE id = dead_id RETURNING * INTO d;
  IF NOT FOUND THEN
    RETURN false;
  END IF;
  SELECT lane_count INTO n FROM outbox.settings;
  INSERT INTO outbox.messages (message_id, lane, topic, key, payload, headers, created_at)
  VALUES (d.message_id, outbox.lane_of(d.key, d.message_id, n), d.topic, d.key, d.payload, d.headers, d.created_at);
  PERFORM pg_notify('outbox_relay', '');
  RETURN true;
END
$$;

-- Changes the number of lanes. Refused while messages are pending (a pending key would
-- move to another lane and could overtake its own older messages) and while
-- transactions that published are still open (their rows are not visible yet). Running
-- relays pick the new count up at their next rebalance (--rebalance-interval).
CREATE OR REPLACE FUNCTION outbox.set_lane_count(n integer)
RETURNS void LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp AS $$
BEGIN
  IF n IS NULL OR n < 1 OR n > 1024 THEN
    RAISE EXCEPTION 'outbox.set_lane_count: lane count must be between 1 and 1024, got %', n
      USING ERRCODE = '22023';
  END IF;
  IF NOT pg_try_advisory_xact_lock(1869769827, 0) THEN
    RAISE EXCEPTION 'outbox.set_lane_count: transactions that called outbox.publish are still open; retry'
      USING ERRCODE = '55P03';
  END IF;
  LOCK TABLE outbox.messages IN EXCLUSIVE MODE;
  IF EXISTS (SELECT 1 FROM outbox.messages) THEN
    RAISE EXCEPTION 'outbox.set_lane_count: % messages are pending; drain the outbox first',
      (SELECT count(*) FROM outbox.messages) USING ERRCODE = '55000';
  END IF;
  UPDATE outbox.settings SET lane_count = n;
  PERFORM pg_notify('outbox_relay', '');
END
$$;
