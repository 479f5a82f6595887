"""The outbound topic itself after an erasure, on a broker that compacts.

Phase `erase`: confluent-kafka publishes two customers; grpcio finds the first and erases
her; kafka-python waits for her tombstone on the change feed, and checks that before
compaction the raw topic still holds her (so the check after it means something).
Phase `check` (after the broker compacted the topic): kafka-python reads every message
still in the raw topic from its first offset: her id has only the tombstone, no message
holds her name or e-mail address, and the other customer's record is still there.

Usage: compaction.py erase BOOTSTRAP GRPC_ADDR RUN_ID
       compaction.py check BOOTSTRAP GOLDEN_ID RUN_ID
"""

import json
import sys
import time

import grpc
from confluent_kafka import Producer
from kafka import KafkaConsumer

from cmdm.v1 import hub_pb2, hub_pb2_grpc

EVENTS = "cmdm.events.v1"
GOLDEN = "cmdm.golden.v1"


def fail(reason):
    print(f"compaction check failed: {reason}", file=sys.stderr)
    sys.exit(1)


def person(run):
    return f"Wenceslasvarga{run}", f"wenceslas.varga.{run}@example.org"


def read_feed(bootstrap, group):
    feed = KafkaConsumer(GOLDEN, bootstrap_servers=bootstrap, group_id=group,
                         auto_offset_reset="earliest", consumer_timeout_ms=10000)
    messages = [(m.key.decode(), m.value, dict(m.headers)) for m in feed]
    feed.close()
    return messages


def holds(messages, needles):
    return [k for k, v, _ in messages if v is not None and any(n.lower().encode() in v.lower() for n in needles)]


def erase(bootstrap, addr, run):
    name, email = person(run)
    producer = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True})
    for subject, data in [(f"v-{run}", {"given_name": "Wenceslas", "family_name": name, "email": email}),
                          (f"o-{run}", {"given_name": "Olga", "family_name": "Other", "email": f"olga.{run}@example.org"})]:
        producer.produce(EVENTS, key=f"web/{subject}".encode(), value=json.dumps(data).encode(), headers=[
            ("ce_specversion", b"1.0"), ("ce_id", f"{run}-{subject}".encode()), ("ce_source", b"web"),
            ("ce_subject", subject.encode()), ("ce_type", b"profile.upserted"),
            ("ce_time", b"2026-11-20T09:00:00Z"), ("content-type", b"application/json")])
    producer.flush(30)
    hub = hub_pb2_grpc.CustomerHubStub(grpc.insecure_channel(addr))
    deadline = time.time() + 60
    gid = None
    while time.time() < deadline and gid is None:
        try:
            gid = hub.LookupBySourceKey(hub_pb2.LookupBySourceKeyRequest(source="web", subject=f"v-{run}")).record.golden_id
        except grpc.RpcError:
            time.sleep(0.2)
    if gid is None:
        fail("the customer never arrived")
    # Her upserted record reaches the feed before she is erased.
    deadline = time.time() + 60
    while time.time() < deadline and not holds(read_feed(bootstrap, f"pre-{run}-{time.time()}"), [name]):
        time.sleep(0.5)
    hub.Erase(hub_pb2.EraseRequest(golden_id=gid, comment=f"compaction check {run}"))
    deadline = time.time() + 60
    while time.time() < deadline:
        messages = read_feed(bootstrap, f"erase-{run}-{time.time()}")
        if any(k == gid and v is None for k, v, _ in messages):
            break
        time.sleep(0.5)
    else:
        fail(f"no tombstone for {gid}")
    if not holds(messages, [name, email]):
        fail("before compaction the raw topic should still hold her earlier record")
    print(f"erased {gid}; before compaction the raw topic holds her in {len(holds(messages, [name]))} message(s)")
    print(gid)


def check(bootstrap, gid, run):
    name, email = person(run)
    messages = read_feed(bootstrap, f"after-{run}")
    left = holds(messages, [name, email])
    if left:
        fail(f"after compaction the raw topic still holds her under keys {left}")
    mine = [v for k, v, _ in messages if k == gid]
    if mine != [None]:
        fail(f"her id should keep only its tombstone, found {mine}")
    if not holds(messages, [f"olga.{run}@example.org"]):
        fail("compaction lost the other customer's record")
    print(f"after compaction: {len(messages)} message(s) in the raw topic, nothing of her, her id a tombstone")


if __name__ == "__main__":
    if sys.argv[1] == "erase":
        erase(*sys.argv[2:5])
    else:
        check(*sys.argv[2:5])
