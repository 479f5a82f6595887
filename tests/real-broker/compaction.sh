#!/usr/bin/env bash
# The outbound topic after an erasure, on a broker that compacts: tansu with its sqlite
# engine compacts topics created with cleanup.policy=compact in its maintenance, which runs
# when the broker starts (and every 10 minutes). A customer is published and erased (the
# raw topic still holds her), the broker is restarted so that its maintenance compacts the
# change feed, and the raw topic, read from its first offset, holds nothing of her.
# Needs TANSU_COMPACTING (a tansu built with --features libsql; `make e2e-tools`).
set -euo pipefail
cd "$(dirname "$0")/../.."

TANSU=${TANSU_COMPACTING:?set TANSU_COMPACTING to a tansu built with --features libsql}
source tests/real-broker/common.sh

start_broker() {
  # The sqlite file is named relative to the broker's working directory.
  (cd "$work" && exec "$TANSU" broker --storage-engine sqlite://tansu.db \
    --listener-url "tcp://$bootstrap" --advertised-listener-url "tcp://$bootstrap") \
    >>"$work/tansu.log" 2>&1 &
  broker_pid=$!
  for _ in $(seq 100); do
    "$PYTHON" -c "import socket; socket.create_connection(('127.0.0.1', $kafka_port), 1)" 2>/dev/null && return
    sleep 0.1
  done
  echo "compaction check failed: tansu did not start" >&2; show_logs; exit 1
}

cargo build --release -q -p cmdm-hub
start_broker
"$TANSU" topic create --broker "tcp://$bootstrap" --partitions 3 cmdm.events.v1 >/dev/null
"$TANSU" topic create --broker "tcp://$bootstrap" --partitions 3 cmdm.events.v1.dlq >/dev/null
"$TANSU" topic create --broker "tcp://$bootstrap" --partitions 3 --config cleanup.policy=compact \
  cmdm.golden.v1 >/dev/null
echo "compacting tansu (sqlite) at $bootstrap"

./target/release/cmdm-hub --data-dir "$work/data" --brokers "$bootstrap" \
  --grpc-addr "127.0.0.1:$grpc_port" --metrics-addr "127.0.0.1:$metrics_port" 2>"$work/hub.log" &
hub_pid=$!
mkdir -p "$work/pb"
"$PYTHON" -m grpc_tools.protoc -Iproto --python_out="$work/pb" --grpc_python_out="$work/pb" \
  proto/cmdm/v1/hub.proto
if ! erased=$(PYTHONPATH="$work/pb" "$PYTHON" tests/real-broker/compaction.py erase "$bootstrap" \
    "127.0.0.1:$grpc_port" "$run"); then
  echo "$erased"; show_logs; exit 1
fi
echo "$erased" | sed '$d'
gid=$(echo "$erased" | tail -n 1)

kill -TERM "$hub_pid"; wait "$hub_pid"; hub_pid=
kill -TERM "$broker_pid"; wait "$broker_pid" || true; broker_pid=
start_broker
if ! PYTHONPATH="$work/pb" "$PYTHON" tests/real-broker/compaction.py check "$bootstrap" "$gid" "$run"; then
  show_logs; exit 1
fi
echo "compaction e2e ok"
