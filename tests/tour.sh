#!/usr/bin/env bash
# The README's five-minute tour as a script: start a hub on its embedded broker, publish
# two events about the same person from two spokes with kcat, and read the one golden
# record back with the `cmdm` CLI. Exits non-zero if the answer is not one record
# holding both source records.
set -euo pipefail
cd "$(dirname "$0")/.."

cargo build --release -q -p cmdm-hub -p cmdm-cli
data=$(mktemp -d)
port=${TOUR_GRPC_PORT:-50151}
hub=http://127.0.0.1:$port
./target/release/cmdm-hub --data-dir "$data" --grpc-addr "127.0.0.1:$port" 2>"$data/hub.log" &
pid=$!
trap 'kill $pid 2>/dev/null; wait $pid 2>/dev/null; rm -rf "$data"' EXIT

for _ in $(seq 100); do [ -s "$data/broker.addr" ] && break; sleep 0.1; done
BROKER=$(cat "$data/broker.addr")
echo "hub running, embedded broker at $BROKER"

# --- the tour, as in the README ---
echo '{"given_name":"Jon","family_name":"Smyth","email":"Jon.Smyth@example.org"}' |
  kcat -P -b "$BROKER" -t cmdm.events.v1 -k web/w-100 \
    -H ce_id=evt-1 -H ce_source=web -H ce_type=profile.upserted \
    -H ce_subject=w-100 -H ce_time=2026-11-20T09:30:00Z

echo '{"given_name":"John","email":"jon.smyth@EXAMPLE.org","phone":"01632 960119"}' |
  kcat -P -b "$BROKER" -t cmdm.events.v1 -k pos/p-7 \
    -H ce_id=evt-2 -H ce_source=pos -H ce_type=profile.upserted \
    -H ce_subject=p-7 -H ce_time=2026-11-21T14:05:00Z
# ---

for _ in $(seq 300); do
  if out=$(./target/release/cmdm --hub "$hub" --json lookup pos p-7 2>/dev/null) &&
     echo "$out" | grep -q '"web/w-100"'; then
    ./target/release/cmdm --hub "$hub" lookup web w-100
    echo "tour ok: one golden record holds pos/p-7 and web/w-100"
    exit 0
  fi
  sleep 0.1
done
echo "tour failed: no golden record with both source records; hub log:" >&2
cat "$data/hub.log" >&2
exit 1
