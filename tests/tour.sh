#!/usr/bin/env bash
# The README's five-minute tour as a script: start a hub on its embedded broker, publish
# two events about the same person from two spokes with kcat, and read the one golden
# record back with the `cmdm` CLI; then a third, uncertain record goes through the
# steward's workflow (search, review task, merge, split, history). Exits non-zero if any
# answer differs from the README's.
set -euo pipefail
cd "$(dirname "$0")/.."

cargo build --release -q -p cmdm-hub -p cmdm-cli
data=$(mktemp -d)
# The hub's log stays outside the data directory, which the erasure check searches.
log=$(mktemp)
port=${TOUR_GRPC_PORT:-50151}
hub=http://127.0.0.1:$port
./target/release/cmdm-hub --data-dir "$data" --grpc-addr "127.0.0.1:$port" 2>"$log" &
pid=$!
trap 'kill $pid 2>/dev/null; wait $pid 2>/dev/null; rm -rf "$data" "$log"' EXIT

for _ in $(seq 100); do [ -s "$data/broker.addr" ] && break; sleep 0.1; done
BROKER=$(cat "$data/broker.addr")
echo "hub running, embedded broker at $BROKER"

# --- the tour, as in the README ---
echo '{"given_name":"Jon","family_name":"Smyth","email":"Jon.Smyth@example.org","postcode":"SW1A 1AA"}' |
  kcat -P -b "$BROKER" -t cmdm.events.v1 -k web/w-100 \
    -H ce_id=evt-1 -H ce_source=web -H ce_type=profile.upserted \
    -H ce_subject=w-100 -H ce_time=2026-11-20T09:30:00Z

echo '{"given_name":"John","email":"jon.smyth@EXAMPLE.org","phone":"01632 960119"}' |
  kcat -P -b "$BROKER" -t cmdm.events.v1 -k pos/p-7 \
    -H ce_id=evt-2 -H ce_source=pos -H ce_type=profile.upserted \
    -H ce_subject=p-7 -H ce_time=2026-11-21T14:05:00Z
# ---

fail() {
  echo "tour failed: $1; hub log:" >&2
  cat "$log" >&2
  exit 1
}
cmdm() { ./target/release/cmdm --hub "$hub" "$@"; }

merged=
for _ in $(seq 300); do
  if out=$(cmdm --json lookup pos p-7 2>/dev/null) && echo "$out" | grep -q '"web/w-100"'; then
    merged=yes
    break
  fi
  sleep 0.1
done
[ -n "$merged" ] || fail "no golden record with both source records"
cmdm lookup web w-100
echo "tour: one golden record holds pos/p-7 and web/w-100"

# --- the steward's part ---
echo '{"given_name":"Jonathan","family_name":"Smyth","postcode":"SW1A 1AA"}' |
  kcat -P -b "$BROKER" -t cmdm.events.v1 -k callcenter/c-9 \
    -H ce_id=evt-3 -H ce_source=callcenter -H ce_type=profile.upserted \
    -H ce_subject=c-9 -H ce_time=2026-11-22T11:00:00Z
task=
for _ in $(seq 300); do
  task=$(cmdm --json tasks 2>/dev/null | grep -o '"task_id": [0-9]*' | head -1 | grep -o '[0-9]*$' || true)
  [ -n "$task" ] && break
  sleep 0.1
done
[ -n "$task" ] || fail "no review task for callcenter/c-9"
cmdm search --name "Jon Smyth" --postcode "sw1a 1aa"
cmdm tasks
cmdm tasks "$task"
cmdm merge --task "$task" --comment "caller confirmed his e-mail"
# Output is captured before it is searched: `grep -q` stops reading at the first match.
joined=$(cmdm --json lookup callcenter c-9)
echo "$joined" | grep -q '"web/w-100"' || fail "the merge did not join c-9 and w-100"
cmdm split callcenter/c-9 --comment "his son, not him"
apart=$(cmdm --json lookup callcenter c-9)
echo "$apart" | grep -q '"web/w-100"' && fail "the split left c-9 with w-100"
history=$(cmdm history web/w-100; cmdm history callcenter/c-9)
echo "$history"
for step in steward_merged record_split; do
  echo "$history" | grep -q "$step" || fail "the history lacks $step"
done
explained=$(cmdm explain callcenter/c-9 web/w-100)
echo "$explained"
echo "$explained" | grep -q "kept apart" || fail "explain does not say kept apart"

# --- consent, contact decision, subject access and erasure ---
publish() { # key id type time json
  echo "$5" | kcat -P -b "$BROKER" -t cmdm.events.v1 -k "$1" \
    -H ce_id="$2" -H ce_source="${1%%/*}" -H ce_type="$3" -H ce_subject="${1#*/}" -H ce_time="$4"
}
publish web/w-100 evt-4 consent.changed 2026-11-22T12:00:00Z \
  '{"purpose":"marketing","channel":"email","status":"granted","evidence":{"collection_point":"checkout","text_version":"v7"}}'
publish web/w-100 evt-5 preference.changed 2026-11-22T12:00:00Z '{"frequency":{"email":"weekly"}}'
# An unsubscribe link knows only the address: no more offers by e-mail, anything else stays.
publish esp/unsubscribes evt-6 preference.changed 2026-11-22T13:00:00Z \
  '{"topics":{"offers":false},"contact_point":"jon.smyth@example.org"}'
jon=$(cmdm --json lookup web w-100 | grep -o '"golden_id": "G[0-9]*"' | head -1 | grep -o 'G[0-9]*')
allowed=
for _ in $(seq 300); do
  if out=$(cmdm check-contact "$jon" --channel email --purpose marketing --topic news --at 2026-11-23T10:00:00Z 2>/dev/null) &&
    echo "$out" | grep -q "ALLOWED" && ! echo "$out" | grep -q "NOT ALLOWED"; then
    allowed=yes
    break
  fi
  sleep 0.1
done
[ -n "$allowed" ] || fail "marketing e-mail about news is not allowed after the grant"
echo "$out"
offers=$(cmdm check-contact jon.smyth@example.org --channel email --purpose marketing --topic offers --at 2026-11-23T10:00:00Z)
echo "$offers"
echo "$offers" | grep -q topic_unsubscribed || fail "the unsubscribe from offers is not honoured"
publish web/w-100 evt-7 contact.recorded 2026-11-23T09:00:00Z '{"channel":"email","purpose":"marketing","campaign":"winter"}'
capped=
for _ in $(seq 300); do
  out=$(cmdm check-contact "$jon" --channel email --purpose marketing --at 2026-11-23T10:00:00Z)
  if echo "$out" | grep -q frequency_cap_reached; then capped=yes; break; fi
  sleep 0.1
done
[ -n "$capped" ] || fail "the weekly frequency was not enforced after a recorded contact"
echo "$out"
export=$(cmdm export "$jon")
echo "$export" | grep -q '"text_version": "v7"' || fail "the export lacks the consent evidence"
cmdm consent-report
cmdm erase "$jon" --comment "erasure request 2026-11-23/1"
gone=$(cmdm --json lookup web w-100 2>&1 || true)
echo "$gone" | grep -qi "not" || fail "web/w-100 still resolves after the erasure: $gone"
for needle in jon.smyth@example.org 960119; do
  if grep -rqi "$needle" "$data"; then fail "'$needle' is still in a file of the data directory"; fi
done
echo "tour: the erased person's e-mail and phone are in no file of the data directory"
echo "tour ok: one golden record holds pos/p-7 and web/w-100; the review task was merged and split again; consent, contact checks, export and erasure as the README says"
