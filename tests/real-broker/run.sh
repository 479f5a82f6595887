#!/usr/bin/env bash
# End to end against a real Kafka-compatible broker (tansu, from crates.io) on loopback,
# with spokes written with Python's confluent-kafka and kafka-python: start the broker,
# create the topics, start the hub (release build) on it, run the spokes, read the golden
# record back with `cmdm`, stop the hub gracefully and verify its log replays.
# Needs `tansu` on PATH and a Python with both clients: `make e2e` provides them.
set -euo pipefail
cd "$(dirname "$0")/../.."

TANSU=${TANSU:-tansu}
source tests/real-broker/common.sh

cargo build --release -q -p cmdm-hub -p cmdm-cli

"$TANSU" broker --storage-engine memory://tansu/ \
  --listener-url "tcp://$bootstrap" --advertised-listener-url "tcp://$bootstrap" \
  >"$work/tansu.log" 2>&1 &
broker_pid=$!
for _ in $(seq 100); do
  "$PYTHON" -c "import socket; socket.create_connection(('127.0.0.1', $kafka_port), 1)" 2>/dev/null && break
  sleep 0.1
done
for topic in cmdm.events.v1 cmdm.golden.v1 cmdm.events.v1.dlq; do
  "$TANSU" topic create --broker "tcp://$bootstrap" --partitions 3 "$topic" >/dev/null
done
echo "tansu running at $bootstrap"

# Tokens, so the API checks roles (the Python client below relies on it).
spoke_token=spoke-e2e-$run-0123456789
steward_token=steward-e2e-$run-0123456789
admin_token=admin-e2e-$run-0123456789
cat >"$work/hub.toml" <<TOML
[[api.tokens]]
token = "$spoke_token"
name = "spoke-e2e"
role = "spoke"
[[api.tokens]]
token = "$steward_token"
name = "steward-e2e"
role = "steward"
[[api.tokens]]
token = "$admin_token"
name = "dpo-e2e"
role = "admin"
TOML

./target/release/cmdm-hub --config "$work/hub.toml" --data-dir "$work/data" --brokers "$bootstrap" \
  --grpc-addr "127.0.0.1:$grpc_port" --metrics-addr "127.0.0.1:$metrics_port" \
  2>"$work/hub.log" &
hub_pid=$!

# The protobuf payload messages for the Python spokes, from the project's .proto file.
mkdir -p "$work/pb"
"$PYTHON" -m grpc_tools.protoc -Iproto --python_out="$work/pb" --grpc_python_out="$work/pb" \
  proto/cmdm/v1/events.proto proto/cmdm/v1/hub.proto

if ! PYTHONPATH="$work/pb" "$PYTHON" tests/real-broker/spokes.py "$bootstrap" "$run"; then
  show_logs
  exit 1
fi

answer=$(./target/release/cmdm --hub "http://127.0.0.1:$grpc_port" --token "$spoke_token" --json lookup pos "p-$run")
for member in "pos/p-$run" "web/w-$run" "crm/c-$run" "callcenter/k-$run"; do
  if ! echo "$answer" | grep -q "\"$member\""; then
    echo "real-broker e2e failed: $member is not in the golden record of pos/p-$run:" >&2
    echo "$answer" >&2
    show_logs
    exit 1
  fi
done
echo "gRPC: the golden record of pos/p-$run holds all four source records"

if ! PYTHONPATH="$work/pb" "$PYTHON" tests/real-broker/steward.py "127.0.0.1:$grpc_port" "$run" \
    "$spoke_token" "$steward_token"; then
  show_logs
  exit 1
fi

if ! privacy=$(PYTHONPATH="$work/pb" "$PYTHON" tests/real-broker/privacy.py "$bootstrap" \
    "127.0.0.1:$grpc_port" "$run" "$spoke_token" "$steward_token" "$admin_token"); then
  echo "$privacy"
  show_logs
  exit 1
fi
echo "$privacy" | sed '$d'
erased_name=$(echo "$privacy" | tail -n 1)

metrics=$("$PYTHON" -c "import urllib.request; print(urllib.request.urlopen('http://127.0.0.1:$metrics_port/metrics').read().decode())")
echo "$metrics" | grep -q 'cmdm_ingest_dead_letters_total{class="invalid"} 1' || {
  echo "real-broker e2e failed: the metrics do not count the dead letter" >&2; exit 1; }

kill -TERM "$hub_pid"
wait "$hub_pid"
hub_pid=
./target/release/cmdm-hub --data-dir "$work/data" rebuild --verify
if grep -rqi "$erased_name" "$work/data"; then
  echo "real-broker e2e failed: the erased person's name is still in a file of the data directory:" >&2
  grep -rli "$erased_name" "$work/data" >&2
  exit 1
fi
echo "the erased person's name is in no file of the data directory"
echo "real-broker e2e ok"
