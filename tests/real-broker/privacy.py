"""Consent, the contact decision and erasure from clients this project did not write:
confluent-kafka publishes a new customer's profile, consent and preferences and an
unsubscribe naming only her e-mail address; Python grpcio (stubs from
`proto/cmdm/v1/hub.proto`) asks CheckContact by golden id and by address, streams a
CheckContactBatch, exports (steward) and erases (admin); kafka-python then reads the change
feed as a spoke rebuilding its copy would (last value per key, a tombstone deletes) and
finds nothing of her, and reads the dead letter of a later event about her record.

Usage: privacy.py BOOTSTRAP GRPC_ADDR RUN_ID SPOKE_TOKEN STEWARD_TOKEN ADMIN_TOKEN
Prints the person's distinctive name on its last line, for the caller's file search.
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
DLQ = "cmdm.events.v1.dlq"


def fail(reason):
    print(f"privacy interop failed: {reason}", file=sys.stderr)
    sys.exit(1)


def publish(producer, key, event_id, kind, time_, data):
    source, subject = key.split("/", 1)
    producer.produce(EVENTS, key=key.encode(), value=json.dumps(data).encode(), headers=[
        ("ce_specversion", b"1.0"), ("ce_id", event_id.encode()), ("ce_source", source.encode()),
        ("ce_subject", subject.encode()), ("ce_type", kind.encode()), ("ce_time", time_.encode()),
        ("content-type", b"application/json"),
    ])


def main():
    bootstrap, addr, run, spoke_token, steward_token, admin_token = sys.argv[1:7]
    name = f"Zofiaquennell{run}"
    email = f"zofia.quennell.{run}@example.org"
    record = f"web/z-{run}"
    producer = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True})
    publish(producer, record, f"{run}-z-1", "profile.upserted", "2026-11-20T09:00:00Z",
            {"given_name": "Zofia", "family_name": name, "email": email, "timezone": "Europe/Warsaw"})
    publish(producer, record, f"{run}-z-2", "consent.changed", "2026-11-20T09:01:00Z",
            {"purpose": "marketing", "channel": "email", "status": "granted",
             "evidence": {"collection_point": "signup", "text_version": "v2"}})
    publish(producer, f"esp/unsub-{run}", f"{run}-z-3", "preference.changed", "2026-11-21T09:00:00Z",
            {"topics": {"offers": False}, "contact_point": email.upper()})
    producer.flush(30)

    hub = hub_pb2_grpc.CustomerHubStub(grpc.insecure_channel(addr))
    spoke = [("authorization", f"Bearer {spoke_token}")]
    steward = [("authorization", f"Bearer {steward_token}")]
    admin = [("authorization", f"Bearer {admin_token}")]
    source, subject = record.split("/")
    golden = None
    deadline = time.time() + 60
    while time.time() < deadline:
        try:
            golden = hub.LookupBySourceKey(
                hub_pb2.LookupBySourceKeyRequest(source=source, subject=subject), metadata=spoke).record
            if "marketing/email" in golden.consents:
                break
        except grpc.RpcError:
            pass
        time.sleep(0.2)
    else:
        fail(f"{record} and its consent did not arrive")
    gid = golden.golden_id

    def question(topic=""):
        return hub_pb2.ContactQuestion(channel="email", purpose="marketing", topic=topic,
                                       at="2026-11-23T12:00:00Z")

    news = hub.CheckContact(hub_pb2.CheckContactRequest(golden_id=gid, question=question("news")),
                            metadata=spoke)
    if not news.allowed or news.reasons[0].code != "consent_granted":
        fail(f"news by e-mail should be allowed: {news}")
    offers = None
    deadline = time.time() + 30
    while time.time() < deadline:
        offers = hub.CheckContact(hub_pb2.CheckContactRequest(contact_point=email, question=question("offers")),
                                  metadata=spoke)
        if not offers.allowed:
            break
        time.sleep(0.2)
    if offers.allowed or not any(r.code == "topic_unsubscribed" for r in offers.reasons):
        fail(f"the unsubscribe from offers is not honoured: {offers}")
    verdicts = [v for chunk in hub.CheckContactBatch(
        hub_pb2.CheckContactBatchRequest(golden_ids=[gid, "G0000999999"], question=question()),
        metadata=spoke) for v in chunk.verdicts]
    if len(verdicts) != 2 or not verdicts[0].allowed or "no golden record" not in verdicts[1].error:
        fail(f"batch answered {verdicts}")
    print(f"grpcio: CheckContact allowed news, refused offers (unsubscribe link), batch of {len(verdicts)} streamed")

    try:
        hub.Export(hub_pb2.ExportRequest(golden_id=gid), metadata=spoke)
        fail("a spoke could export")
    except grpc.RpcError as e:
        if e.code() != grpc.StatusCode.PERMISSION_DENIED:
            fail(f"export as a spoke: {e.code()}")
    export = json.loads(hub.Export(hub_pb2.ExportRequest(golden_id=gid), metadata=steward).json)
    if export["golden_record"]["consents"]["marketing/email"]["evidence"]["text_version"] != "v2":
        fail(f"the export lacks the consent evidence: {export['golden_record']}")
    erased = hub.Erase(hub_pb2.EraseRequest(golden_id=gid, comment=f"request {run}"), metadata=admin)
    if erased.golden_id != gid or not erased.records:
        fail(f"erase answered {erased}")
    print(f"grpcio: exported, then erased {gid} ({len(erased.records)} record(s), "
          f"store rewritten {erased.bytes_before} -> {erased.bytes_after} bytes)")

    # The feed as a spoke compacts it: the last value per key; a tombstone deletes.
    feed = KafkaConsumer(GOLDEN, bootstrap_servers=bootstrap, group_id=f"e2e-feed-{run}",
                         auto_offset_reset="earliest", consumer_timeout_ms=10000)
    copy, tombstone = {}, False
    for message in feed:
        key = message.key.decode()
        if message.value is None:
            copy.pop(key, None)
            tombstone |= key == gid and dict(message.headers).get("cmdm_change_type") == b"erased"
        else:
            copy[key] = message.value
    feed.close()
    if not tombstone:
        fail(f"no tombstone for {gid} on {GOLDEN}")
    if gid in copy or any(name.lower().encode() in v.lower() for v in copy.values()):
        fail("the compacted feed still holds the person")

    publish(producer, record, f"{run}-z-4", "profile.upserted", "2026-11-22T09:00:00Z",
            {"given_name": "Zofia", "family_name": name})
    producer.flush(30)
    dlq = KafkaConsumer(DLQ, bootstrap_servers=bootstrap, group_id=f"e2e-dlq-erased-{run}",
                        auto_offset_reset="earliest", consumer_timeout_ms=30000)
    letter = None
    for message in dlq:
        headers = {k: v.decode() for k, v in message.headers}
        if headers.get("ce_id") == f"{run}-z-4":
            letter = headers
            break
    dlq.close()
    if letter is None or letter.get("cmdm_dlq_error_class") != "erased":
        fail(f"the later event about the erased record was not dead-lettered as erased: {letter}")
    print("kafka-python: tombstone on the feed, nothing of her in its compacted view; later event dead-lettered (erased)")
    print(name)


if __name__ == "__main__":
    main()
