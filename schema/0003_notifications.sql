-- 0003_notifications.sql — best-effort notifications ("maximum-effort notify").
-- A service calls inbox.notify(...) inside its own transaction; `outbox-relay notify`
-- (or an embedded outbox::Notifier) POSTs the body to the URL: first attempt at once,
-- then one attempt after each interval of the schedule, until a 2xx answer (delivered)
-- or the schedule runs out (exhausted). The receiver can ask for the result itself
-- with inbox.notification_status(id).
-- Released migrations are never edited: `outbox-relay migrate` refuses a changed file.

CREATE SCHEMA IF NOT EXISTS inbox;

-- One row per notification. Workers claim rows with FOR UPDATE SKIP LOCKED and hold a
-- lease on the attempt they send (lease_token, next_attempt_at = lease expiry), so
-- several workers never send one attempt twice, and a crashed worker's attempt is sent
-- again once its lease expires (at-least-once).
CREATE TABLE inbox.notifications (
  id               bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  url              text NOT NULL,
  -- lower-case host:port of url: the key of the per-host concurrency cap of workers.
  host             text NOT NULL,
  body             bytea NOT NULL,
  headers          jsonb NOT NULL,
  -- Waits after attempt 1, 2, ...: cardinality(schedule) + 1 attempts in all.
  schedule         interval[] NOT NULL,
  state            text NOT NULL DEFAULT 'pending'
                   CHECK (state IN ('pending', 'delivered', 'exhausted')),
  -- Attempts finished (delivered, failed or given up). The attempt in flight, if any,
  -- is number attempts + 1.
  attempts         integer NOT NULL DEFAULT 0,
  -- pending: when the next attempt is due; while leased: when the lease expires.
  next_attempt_at  timestamptz,
  -- Set while a worker holds the lease on attempt attempts + 1; results of any other
  -- token (a worker whose lease expired) are ignored.
  lease_token      uuid,
  created_at       timestamptz NOT NULL DEFAULT now(),
  -- When the notification became delivered or exhausted (retention counts from here).
  finished_at      timestamptz,
  CHECK ((state = 'pending') = (next_attempt_at IS NOT NULL)),
  CHECK ((state = 'pending') = (finished_at IS NULL))
) WITH (
  -- Every attempt updates its row twice (claim, result) and retention deletes finished
  -- rows in bulk: the table is mostly dead tuples. Vacuum after a fixed number of
  -- changes rather than a fraction of a table whose size swings, and at full speed, so
  -- heap and the due index stay bounded.
  autovacuum_vacuum_scale_factor = 0,
  autovacuum_vacuum_threshold = 2000,
  autovacuum_vacuum_insert_scale_factor = 0,
  autovacuum_vacuum_insert_threshold = 20000,
  autovacuum_analyze_scale_factor = 0,
  autovacuum_analyze_threshold = 20000,
  autovacuum_vacuum_cost_delay = 0
);
-- Workers claim "pending rows due now, oldest first".
CREATE INDEX notifications_due ON inbox.notifications (next_attempt_at) WHERE state = 'pending';
-- Retention deletes "finished rows older than X".
CREATE INDEX notifications_finished ON inbox.notifications (finished_at) WHERE state <> 'pending';

-- Every attempt: inserted when a worker claims it (finished_at NULL while in flight),
-- completed with the answer. An attempt whose worker lost its lease (crash, kill -9)
-- is closed as 'abandoned' and the same attempt number is sent again.
CREATE TABLE inbox.notification_attempts (
  id               bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  notification_id  bigint NOT NULL REFERENCES inbox.notifications (id) ON DELETE CASCADE,
  attempt          integer NOT NULL,   -- 1-based; the Notification-Attempt header
  lease_token      uuid NOT NULL,
  started_at       timestamptz NOT NULL,
  finished_at      timestamptz,
  outcome          text CHECK (outcome IN ('delivered', 'failed', 'abandoned')),
  status_code      integer,            -- HTTP status; NULL when no answer arrived
  error            text,               -- why it failed (transport error, non-2xx, ...)
  latency_ms       double precision,   -- request start to answer, as the worker measured
  response         text,               -- start of the answer body (printable, truncated)
  CHECK ((outcome IS NULL) = (finished_at IS NULL))
) WITH (
  -- Insert-then-update once, deleted in bulk with its notification: same reasoning as
  -- inbox.notifications.
  autovacuum_vacuum_scale_factor = 0,
  autovacuum_vacuum_threshold = 2000,
  autovacuum_vacuum_insert_scale_factor = 0,
  autovacuum_vacuum_insert_threshold = 20000,
  autovacuum_analyze_scale_factor = 0,
  autovacuum_analyze_threshold = 20000,
  autovacuum_vacuum_cost_delay = 0
);
CREATE INDEX notification_attempts_of ON inbox.notification_attempts (notification_id, attempt);

-- Returns lower-case host:port of an http(s) URL, or raises a clear error.
CREATE FUNCTION inbox.notify_url_host(url text)
RETURNS text LANGUAGE plpgsql IMMUTABLE
SET search_path = pg_catalog, pg_temp AS $$
DECLARE
  m text[];
  port integer;
BEGIN
  IF url IS NULL OR url = '' THEN
    RAISE EXCEPTION 'inbox.notify: url must not be empty' USING ERRCODE = '22023';
  END IF;
  IF length(url) > 2048 THEN
    RAISE EXCEPTION 'inbox.notify: url is longer than 2048 characters' USING ERRCODE = '22023';
  END IF;
  IF url ~ '[[:space:][:cntrl:]]' THEN
    RAISE EXCEPTION 'inbox.notify: url must not contain spaces or control characters'
      USING ERRCODE = '22023';
  END IF;
  m := regexp_match(url,
    '^([A-Za-z][A-Za-z0-9+.-]*)://(?:[^/?#@]*@)?(\[[0-9A-Fa-f:.]+\]|[^/?#:@\[\]]+)(?::([0-9]{1,5}))?(?:[/?#]|$)');
  IF m IS NULL OR lower(m[1]) NOT IN ('http', 'https') THEN
    -- Never echo the URL: it may carry credentials or tokens.
    RAISE EXCEPTION 'inbox.notify: invalid url: expected http://host[:port]/path or https://host[:port]/path'
      USING ERRCODE = '22023';
  END IF;
  port := coalesce(m[3]::integer, CASE lower(m[1]) WHEN 'https' THEN 443 ELSE 80 END);
  IF port < 1 OR port > 65535 THEN
    RAISE EXCEPTION 'inbox.notify: invalid url: port % is out of range 1..65535', port
      USING ERRCODE = '22023';
  END IF;
  RETURN lower(m[2]) || ':' || port;
END
$$;

-- Raises a clear error unless headers is a JSON object of at most 64 valid HTTP header
-- names with string values free of line breaks, none of them reserved.
CREATE FUNCTION inbox.check_notify_headers(headers jsonb)
RETURNS void LANGUAGE plpgsql IMMUTABLE
SET search_path = pg_catalog, pg_temp AS $$
DECLARE
  e record;
BEGIN
  IF headers IS NULL OR jsonb_typeof(headers) <> 'object' THEN
    RAISE EXCEPTION 'inbox.notify: headers must be a JSON object of string values, got %',
      coalesce('a JSON ' || jsonb_typeof(headers), 'NULL') USING ERRCODE = '22023';
  END IF;
  IF (SELECT count(*) FROM jsonb_object_keys(headers)) > 64 THEN
    RAISE EXCEPTION 'inbox.notify: at most 64 headers are allowed' USING ERRCODE = '22023';
  END IF;
  FOR e IN SELECT k, v FROM jsonb_each(headers) AS h(k, v) LOOP
    IF jsonb_typeof(e.v) <> 'string' THEN
      RAISE EXCEPTION 'inbox.notify: header "%" must be a JSON string, got a JSON %',
        e.k, jsonb_typeof(e.v) USING ERRCODE = '22023';
    END IF;
    IF e.k !~ '^[!#$%&''*+.^_`|~0-9A-Za-z-]+$' OR length(e.k) > 256 THEN
      RAISE EXCEPTION 'inbox.notify: header name % is not a valid HTTP header name',
        quote_literal(left(e.k, 64)) USING ERRCODE = '22023';
    END IF;
    IF lower(e.k) IN ('notification-id', 'notification-attempt') THEN
      RAISE EXCEPTION 'inbox.notify: header "%" is reserved (the worker sets it)', e.k
        USING ERRCODE = '22023';
    END IF;
    IF lower(e.k) IN ('host', 'content-length', 'transfer-encoding', 'connection', 'expect',
                      'upgrade', 'te', 'trailer', 'keep-alive') THEN
      RAISE EXCEPTION 'inbox.notify: header "%" is controlled by the HTTP client and may not be set', e.k
        USING ERRCODE = '22023';
    END IF;
    IF (e.v #>> '{}') ~ '[\r\n\x01-\x08\x0b\x0c\x0e-\x1f\x7f]' OR length(e.v #>> '{}') > 8192 THEN
      RAISE EXCEPTION 'inbox.notify: header "%" must be at most 8192 characters without line breaks or control characters', e.k
        USING ERRCODE = '22023';
    END IF;
  END LOOP;
END
$$;

-- Raises a clear error unless schedule is 1 to 32 positive intervals of at most 7 days
-- each, in non-decreasing order.
CREATE FUNCTION inbox.check_notify_schedule(schedule interval[])
RETURNS void LANGUAGE plpgsql IMMUTABLE
SET search_path = pg_catalog, pg_temp AS $$
DECLARE
  n integer := coalesce(cardinality(schedule), 0);
BEGIN
  IF schedule IS NULL OR n = 0 THEN
    RAISE EXCEPTION 'inbox.notify: schedule must list at least one interval (the wait after the first attempt)'
      USING ERRCODE = '22023';
  END IF;
  IF array_ndims(schedule) <> 1 THEN
    RAISE EXCEPTION 'inbox.notify: schedule must be a one-dimensional array of intervals'
      USING ERRCODE = '22023';
  END IF;
  IF n > 32 THEN
    RAISE EXCEPTION 'inbox.notify: schedule has % intervals; at most 32 are allowed', n
      USING ERRCODE = '22023';
  END IF;
  FOR i IN 1 .. n LOOP
    IF schedule[array_lower(schedule, 1) + i - 1] IS NULL
       OR schedule[array_lower(schedule, 1) + i - 1] <= interval '0' THEN
      RAISE EXCEPTION 'inbox.notify: schedule interval % (%) must be positive', i,
        coalesce(schedule[array_lower(schedule, 1) + i - 1]::text, 'NULL') USING ERRCODE = '22023';
    END IF;
    IF schedule[array_lower(schedule, 1) + i - 1] > interval '7 days' THEN
      RAISE EXCEPTION 'inbox.notify: schedule interval % (%) is longer than 7 days', i,
        schedule[array_lower(schedule, 1) + i - 1] USING ERRCODE = '22023';
    END IF;
    IF i > 1 AND schedule[array_lower(schedule, 1) + i - 1] < schedule[array_lower(schedule, 1) + i - 2] THEN
      RAISE EXCEPTION 'inbox.notify: schedule must be in non-decreasing order: interval % (%) is shorter than interval % (%)',
        i, schedule[array_lower(schedule, 1) + i - 1], i - 1, schedule[array_lower(schedule, 1) + i - 2]
        USING ERRCODE = '22023';
    END IF;
  END LOOP;
END
$$;

-- Schedules a notification inside the caller's transaction: nothing is sent unless the
-- transaction commits. Returns the notification id (the Notification-Id header).
-- Runs as the table owner so callers need no table privileges.
CREATE FUNCTION inbox.notify(url text, body bytea, headers jsonb DEFAULT '{}',
  schedule interval[] DEFAULT '{1 min,5 min,10 min,30 min,1 hour,2 hours,5 hours,10 hours}')
RETURNS bigint LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp AS $$
DECLARE
  h text := inbox.notify_url_host(url);
  new_id bigint;
BEGIN
  headers := coalesce(headers, '{}'::jsonb);
  PERFORM inbox.check_notify_headers(headers);
  PERFORM inbox.check_notify_schedule(schedule);
  IF octet_length(body) > 10 * 1024 * 1024 THEN
    RAISE EXCEPTION 'inbox.notify: body is % bytes; at most 10 MiB is allowed', octet_length(body)
      USING ERRCODE = '22023';
  END IF;
  INSERT INTO inbox.notifications (url, host, body, headers, schedule, next_attempt_at)
  VALUES (url, h, coalesce(body, ''::bytea), headers,
          schedule[array_lower(schedule, 1):array_upper(schedule, 1)], now())
  RETURNING id INTO new_id;
  RETURN new_id;
END
$$;

-- Convenience overload for text bodies (sent as their UTF-8 bytes).
CREATE FUNCTION inbox.notify(url text, body text, headers jsonb DEFAULT '{}',
  schedule interval[] DEFAULT '{1 min,5 min,10 min,30 min,1 hour,2 hours,5 hours,10 hours}')
RETURNS bigint LANGUAGE sql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp AS $$
  SELECT inbox.notify(url, convert_to(body, 'UTF8'), headers, schedule)
$$;

-- What the receiver (or the sender) can ask: one row for a known id, none otherwise.
CREATE FUNCTION inbox.notification_status(notification_id bigint)
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
$$;

-- Workers: claims up to max_rows due notifications, skipping rows other workers hold,
-- and leases each for `lease` (which must exceed the worker's request timeout). At
-- most per_host attempts per host are handed out, counting busy_counts[i] attempts the
-- caller already has in flight to busy_hosts[i]. A row whose previous lease expired
-- (its worker died) gets that attempt closed as abandoned and is sent again with the
-- same attempt number.
CREATE FUNCTION inbox.claim_notifications(max_rows integer, lease interval, per_host integer,
  busy_hosts text[] DEFAULT '{}', busy_counts integer[] DEFAULT '{}')
RETURNS TABLE (id bigint, attempt integer, max_attempts integer, url text, host text,
               body bytea, headers jsonb, lease_token uuid)
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp AS $$
#variable_conflict use_column
BEGIN
  IF max_rows IS NULL OR max_rows < 1 OR max_rows > 1000 THEN
    RAISE EXCEPTION 'inbox.claim_notifications: max_rows must be 1..1000, got %', max_rows
      USING ERRCODE = '22023';
  END IF;
  IF lease IS NULL OR lease <= interval '0' THEN
    RAISE EXCEPTION 'inbox.claim_notifications: lease must be positive' USING ERRCODE = '22023';
  END IF;
  IF per_host IS NULL OR per_host < 1 THEN
    RAISE EXCEPTION 'inbox.claim_notifications: per_host must be at least 1' USING ERRCODE = '22023';
  END IF;
  IF coalesce(cardinality(busy_hosts), 0) <> coalesce(cardinality(busy_counts), 0) THEN
    RAISE EXCEPTION 'inbox.claim_notifications: busy_hosts and busy_counts differ in length'
      USING ERRCODE = '22023';
  END IF;
  RETURN QUERY
  WITH busy AS (
    SELECT b.h, sum(b.c)::integer AS c
      FROM unnest(coalesce(busy_hosts, '{}'), coalesce(busy_counts, '{}')) AS b(h, c) GROUP BY b.h
  ), candidates AS MATERIALIZED (
    SELECT n.id, n.host, n.next_attempt_at, n.lease_token AS old_token
      FROM inbox.notifications n
     WHERE n.state = 'pending' AND n.next_attempt_at <= now()
       AND NOT EXISTS (SELECT 1 FROM busy WHERE busy.h = n.host AND busy.c >= per_host)
     ORDER BY n.next_attempt_at
     LIMIT max_rows * 4
       FOR UPDATE OF n SKIP LOCKED
  ), chosen AS (
    SELECT r.id, r.old_token
      FROM (SELECT c.*, row_number() OVER (PARTITION BY c.host ORDER BY c.next_attempt_at, c.id) AS rn
              FROM candidates c) r
      LEFT JOIN busy ON busy.h = r.host
     WHERE r.rn <= per_host - coalesce(busy.c, 0)
     ORDER BY r.next_attempt_at, r.id
     LIMIT max_rows
  ), abandoned AS (
    UPDATE inbox.notification_attempts a
       SET finished_at = now(), outcome = 'abandoned',
           error = 'abandoned: the worker lost its lease (crashed, killed or too slow); the attempt is sent again'
      FROM chosen ch
     WHERE ch.old_token IS NOT NULL AND a.notification_id = ch.id
       AND a.lease_token = ch.old_token AND a.finished_at IS NULL
  ), claimed AS (
    UPDATE inbox.notifications n
       SET lease_token = gen_random_uuid(), next_attempt_at = now() + lease
      FROM chosen ch
     WHERE n.id = ch.id
    RETURNING n.id, n.attempts, n.schedule, n.url, n.host, n.body, n.headers, n.lease_token
  ), started AS (
    INSERT INTO inbox.notification_attempts (notification_id, attempt, lease_token, started_at)
    SELECT c.id, c.attempts + 1, c.lease_token, now() FROM claimed c
  )
  SELECT c.id, c.attempts + 1, cardinality(c.schedule) + 1, c.url, c.host, c.body, c.headers,
         c.lease_token
    FROM claimed c ORDER BY c.id;
END
$$;

-- Workers: records the answer to the attempt held under `token` and moves the
-- notification on: a 2xx status delivers it; otherwise the next attempt is due after
-- the schedule's next interval, or, after the last attempt, it is exhausted. Returns
-- the new state, or NULL when the lease is no longer held (the result is dropped;
-- another worker sends or sent the attempt).
CREATE FUNCTION inbox.finish_notification_attempt(notification_id bigint, token uuid,
  status_code integer, error text, latency_ms double precision, response text DEFAULT NULL)
RETURNS text LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp AS $$
#variable_conflict use_variable
DECLARE
  n inbox.notifications;
  delivered boolean := coalesce(status_code BETWEEN 200 AND 299, false);
  done integer;
  new_state text;
BEGIN
  SELECT * INTO n FROM inbox.notifications x
   WHERE x.id = notification_id AND x.lease_token = token FOR UPDATE;
  IF NOT FOUND THEN
    RETURN NULL;
  END IF;
  done := n.attempts + 1;
  new_state := CASE WHEN delivered THEN 'delivered'
                    WHEN done >= cardinality(n.schedule) + 1 THEN 'exhausted'
                    ELSE 'pending' END;
  UPDATE inbox.notification_attempts a
     SET finished_at = now(), outcome = CASE WHEN delivered THEN 'delivered' ELSE 'failed' END,
         status_code = finish_notification_attempt.status_code,
         error = CASE WHEN delivered THEN NULL
                      ELSE coalesce(finish_notification_attempt.error, 'HTTP status ' || status_code) END,
         latency_ms = finish_notification_attempt.latency_ms,
         response = left(finish_notification_attempt.response, 1024)
   WHERE a.notification_id = n.id AND a.lease_token = token AND a.finished_at IS NULL;
  UPDATE inbox.notifications x
     SET attempts = done, state = new_state, lease_token = NULL,
         next_attempt_at = CASE WHEN new_state = 'pending'
                                THEN now() + n.schedule[array_lower(n.schedule, 1) + done - 1] END,
         finished_at = CASE WHEN new_state = 'pending' THEN NULL ELSE now() END
   WHERE x.id = n.id;
  RETURN new_state;
END
$$;

-- Workers: pending notifications, how many are due now and how late the oldest is.
CREATE FUNCTION inbox.notification_backlog()
RETURNS TABLE (pending bigint, due bigint, oldest_due_seconds double precision)
LANGUAGE sql STABLE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp AS $$
  SELECT count(*),
         count(*) FILTER (WHERE n.next_attempt_at <= now() AND n.lease_token IS NULL),
         coalesce(extract(epoch FROM now() - min(n.next_attempt_at)
                          FILTER (WHERE n.next_attempt_at <= now() AND n.lease_token IS NULL)), 0)
    FROM inbox.notifications n WHERE n.state = 'pending'
$$;

-- Retention: deletes up to max_rows delivered or exhausted notifications (and their
-- attempts) that finished more than older_than ago. Returns how many were deleted;
-- call again while it returns max_rows. Pending notifications are never deleted.
CREATE FUNCTION inbox.purge_notifications(older_than interval, max_rows integer DEFAULT 10000)
RETURNS integer LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp AS $$
DECLARE
  deleted integer;
BEGIN
  IF older_than IS NULL OR older_than < interval '0' THEN
    RAISE EXCEPTION 'inbox.purge_notifications: older_than must not be negative' USING ERRCODE = '22023';
  END IF;
  IF max_rows IS NULL OR max_rows < 1 THEN
    RAISE EXCEPTION 'inbox.purge_notifications: max_rows must be at least 1' USING ERRCODE = '22023';
  END IF;
  DELETE FROM inbox.notifications n
   WHERE n.id IN (SELECT x.id FROM inbox.notifications x
                   WHERE x.state <> 'pending' AND x.finished_at < now() - older_than
                   ORDER BY x.finished_at LIMIT max_rows
                     FOR UPDATE SKIP LOCKED);
  GET DIAGNOSTICS deleted = ROW_COUNT;
  RETURN deleted;
END
$$;

-- Least privilege. Functions are executable by PUBLIC unless revoked.
REVOKE ALL ON inbox.notifications, inbox.notification_attempts FROM PUBLIC;
REVOKE ALL ON FUNCTION inbox.notify_url_host(text), inbox.check_notify_headers(jsonb),
  inbox.check_notify_schedule(interval[]),
  inbox.notify(text, bytea, jsonb, interval[]), inbox.notify(text, text, jsonb, interval[]),
  inbox.notification_status(bigint),
  inbox.claim_notifications(integer, interval, integer, text[], integer[]),
  inbox.finish_notification_attempt(bigint, uuid, integer, text, double precision, text),
  inbox.notification_backlog(), inbox.purge_notifications(interval, integer)
  FROM PUBLIC;
GRANT USAGE ON SCHEMA inbox TO outbox_consumer, outbox_relay;

-- Consumer services schedule notifications (typically inside a handler's transaction)
-- and answer status queries; they cannot read or change the tables.
GRANT EXECUTE ON FUNCTION inbox.notify(text, bytea, jsonb, interval[]),
  inbox.notify(text, text, jsonb, interval[]), inbox.notification_status(bigint)
  TO outbox_consumer;

-- The worker (`outbox-relay notify`, or an embedded outbox::Notifier running as a role
-- granted outbox_relay) claims, records and purges only through these functions; it
-- may read the tables for `outbox-relay status` and diagnosis.
GRANT EXECUTE ON FUNCTION inbox.notification_status(bigint),
  inbox.claim_notifications(integer, interval, integer, text[], integer[]),
  inbox.finish_notification_attempt(bigint, uuid, integer, text, double precision, text),
  inbox.notification_backlog(), inbox.purge_notifications(interval, integer)
  TO outbox_relay;
GRANT SELECT ON inbox.notifications, inbox.notification_attempts TO outbox_relay;
