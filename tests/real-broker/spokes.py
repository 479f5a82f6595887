"""Spokes written with the two Python Kafka clients, against a real broker and a running hub.

confluent-kafka (librdkafka) publishes CloudEvents in binary mode from the point of sale
and the web shop, plus one consent without a purpose, and a protobuf payload from the
call centre (`proto/cmdm/v1/events.proto`, compiled by grpcio-tools' protoc onto
PYTHONPATH); kafka-python (pure Python) publishes a structured-mode event from the CRM.
Then confluent-kafka follows the change feed until one golden record holds all four source
records, and kafka-python reads the dead letter. Exits 1 with the reason if anything is
missing.

Usage: spokes.py BOOTSTRAP RUN_ID
"""

import json
import sys
import time

from confluent_kafka import Consumer, Producer
from kafka import KafkaConsumer, KafkaProducer

from cmdm.v1 import events_pb2

EVENTS = "cmdm.events.v1"
GOLDEN = "cmdm.golden.v1"
DLQ = "cmdm.events.v1.dlq"


def fail(reason):
    print(f"real-broker e2e failed: {reason}", file=sys.stderr)
    sys.exit(1)


def binary_event(producer, run, source, subject, kind, time_, data):
    headers = [
        ("ce_specversion", b"1.0"),
        ("ce_id", f"{run}-{source}-{subject}-{kind}".encode()),
        ("ce_source", source.encode()),
        ("ce_subject", subject.encode()),
        ("ce_type", kind.encode()),
        ("ce_time", time_.encode()),
        ("content-type", b"application/json"),
    ]
    producer.produce(
        EVENTS,
        key=f"{source}/{subject}".encode(),
        value=json.dumps(data).encode(),
        headers=headers,
    )


def main():
    bootstrap, run = sys.argv[1], sys.argv[2]
    email = f"ann.lee.{run}@example.org"
    # A phone of this run only, so runs against one broker do not match each other.
    phone = f"01632 96{sum(map(ord, run)) % 10000:04d}"

    # Spokes on librdkafka: binary mode.
    producer = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True})
    binary_event(producer, run, "pos", f"p-{run}", "profile.upserted", "2026-11-20T09:30:00Z",
                 {"given_name": "Ann", "family_name": "Lee", "email": email})
    binary_event(producer, run, "web", f"w-{run}", "profile.upserted", "2026-11-21T10:00:00Z",
                 {"given_name": "Anne", "family_name": "Lee", "email": email.upper(),
                  "phone": phone})
    binary_event(producer, run, "web", f"w-{run}", "consent.changed", "2026-11-21T10:01:00Z",
                 {"channel": "email", "status": "granted"})
    # The call centre sends its payload in protobuf.
    profile = events_pb2.ProfileUpserted(attributes=[
        events_pb2.Attribute(name="given_name", value="Ann"),
        events_pb2.Attribute(name="family_name", value="Lee"),
        events_pb2.Attribute(name="email", value=email),
        events_pb2.Attribute(name="phone"),  # no value: cleared
    ])
    producer.produce(
        EVENTS,
        key=f"callcenter/k-{run}".encode(),
        value=profile.SerializeToString(),
        headers=[
            ("ce_specversion", b"1.0"),
            ("ce_id", f"{run}-callcenter-1".encode()),
            ("ce_source", b"callcenter"),
            ("ce_subject", f"k-{run}".encode()),
            ("ce_type", b"profile.upserted"),
            ("ce_time", b"2026-11-22T09:00:00Z"),
            ("content-type", b"application/protobuf"),
        ],
    )
    if producer.flush(30) != 0:
        fail("confluent-kafka could not deliver the spoke events")

    # A spoke on kafka-python: structured mode.
    kp = KafkaProducer(bootstrap_servers=bootstrap)
    structured = {
        "specversion": "1.0", "id": f"{run}-crm-1", "source": "crm", "subject": f"c-{run}",
        "type": "profile.upserted", "time": "2026-11-22T08:00:00Z",
        "data": {"given_name": "Ann", "family_name": "Lee", "phone": "+44" + phone[1:],
                 "email": email},
    }
    kp.send(EVENTS, key=f"crm/c-{run}".encode(), value=json.dumps(structured).encode(),
            headers=[("content-type", b"application/cloudevents+json")]).get(timeout=30)
    kp.flush()
    kp.close()

    # Follow the change feed with confluent-kafka until one record holds all three.
    wanted = {f"pos/p-{run}", f"web/w-{run}", f"crm/c-{run}", f"callcenter/k-{run}"}
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"e2e-feed-{run}",
                         "auto.offset.reset": "earliest", "enable.auto.commit": False})
    consumer.subscribe([GOLDEN])
    deadline = time.time() + 90
    found = None
    while time.time() < deadline and found is None:
        message = consumer.poll(0.5)
        if message is None or message.error():
            continue
        change = json.loads(message.value())
        record = change.get("record") or {}
        members = {f"{m['source']}/{m['subject']}" for m in record.get("members", [])}
        if change.get("type") == "upserted" and wanted <= members:
            found = change
    consumer.close()
    if found is None:
        fail(f"no golden record with {sorted(wanted)} on {GOLDEN} within 90 s")
    attributes = found["record"]["attributes"]
    print(f"change feed: {found['golden_id']} holds {sorted(wanted)}; "
          f"email {attributes['email']['value']}")

    # Read the dead letter with kafka-python.
    dlq = KafkaConsumer(DLQ, bootstrap_servers=bootstrap, group_id=f"e2e-dlq-{run}",
                        auto_offset_reset="earliest", consumer_timeout_ms=30000)
    letter = None
    for message in dlq:
        headers = {k: v.decode() for k, v in message.headers}
        if headers.get("ce_id") == f"{run}-web-w-{run}-consent.changed":
            letter = headers
            break
    dlq.close()
    if letter is None:
        fail("the consent without a purpose did not reach the dead letter topic")
    if letter.get("cmdm_dlq_error_class") != "invalid" or "purpose" not in letter.get(
            "cmdm_dlq_reason", ""):
        fail(f"unexpected dead letter headers: {letter}")
    print(f"dead letter: class {letter['cmdm_dlq_error_class']}, "
          f"from {letter['cmdm_dlq_original_topic']}/{letter['cmdm_dlq_original_partition']}"
          f"@{letter['cmdm_dlq_original_offset']}: {letter['cmdm_dlq_reason']}")


if __name__ == "__main__":
    main()
