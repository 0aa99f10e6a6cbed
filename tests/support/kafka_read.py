#!/usr/bin/python3
"""Reads a Kafka topic from the beginning with confluent_kafka (a client the project did
not write) and prints one JSON object per record:
  {"p": partition, "o": offset, "k": key|null, "v": value|null, "h": {name: value}}
Stops after --count records (with --to-end: once every partition is read up to its high
watermark, so duplicates are counted too — never "until N seconds of silence"), or when
--timeout seconds pass. Exit code 0 either way; the caller checks what it got."""
import argparse
import json
import sys
import time
import uuid

from confluent_kafka import Consumer, TopicPartition, OFFSET_BEGINNING


def text(b):
    return None if b is None else b.decode("utf-8", errors="replace")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--brokers", required=True)
    ap.add_argument("--topic", required=True)
    ap.add_argument("--count", type=int, default=0)
    ap.add_argument("--timeout", type=float, default=60)
    ap.add_argument("--to-end", action="store_true",
                    help="after --count records, read every partition up to its high watermark")
    args = ap.parse_args()
    deadline = time.time() + args.timeout
    c = Consumer({
        "bootstrap.servers": args.brokers,
        "group.id": "outbox-test-reader-" + uuid.uuid4().hex,
        "enable.auto.commit": False,
        "auto.offset.reset": "earliest",
        "fetch.wait.max.ms": 10,
        "log_level": 3,
    })
    partitions = None
    while partitions is None and time.time() < deadline:
        md = c.list_topics(args.topic, timeout=5)
        t = md.topics.get(args.topic)
        if t is not None and t.error is None and t.partitions:
            partitions = sorted(t.partitions)
        else:
            time.sleep(0.1)
    if partitions is None:
        return 0
    c.assign([TopicPartition(args.topic, p, OFFSET_BEGINNING) for p in partitions])
    n = 0
    out = sys.stdout
    position = {p: 0 for p in partitions}  # next offset to read, per partition
    high = None                             # high watermarks, read once --count is reached
    while time.time() < deadline:
        if args.count and n >= args.count:
            if not args.to_end:
                break
            if high is None:
                high = {p: c.get_watermark_offsets(TopicPartition(args.topic, p), timeout=10)[1]
                        for p in partitions}
            if all(position[p] >= high[p] for p in partitions):
                break
        msg = c.poll(0.05)
        if msg is None or msg.error():
            continue
        position[msg.partition()] = msg.offset() + 1
        headers = {k: text(v) for k, v in (msg.headers() or [])}
        out.write(json.dumps({"p": msg.partition(), "o": msg.offset(), "k": text(msg.key()),
                              "v": text(msg.value()), "h": headers}) + "\n")
        n += 1
    out.flush()
    c.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
