# Sourced by the real-broker scripts: ports, a work directory, cleanup of the hub and
# broker they start (hub_pid, broker_pid), and the logs to show when a check fails.
PYTHON=${PYTHON:-.venv-e2e/bin/python}
free_port() { "$PYTHON" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
kafka_port=$(free_port)
grpc_port=$(free_port)
metrics_port=$(free_port)
bootstrap=127.0.0.1:$kafka_port
work=$(mktemp -d)
run=$(date +%s)

cleanup() {
  [ -n "${hub_pid:-}" ] && kill "$hub_pid" 2>/dev/null && wait "$hub_pid" 2>/dev/null
  [ -n "${broker_pid:-}" ] && kill "$broker_pid" 2>/dev/null && wait "$broker_pid" 2>/dev/null
  rm -rf "$work"
}
trap cleanup EXIT
show_logs() {
  echo "--- tansu log" >&2; tail -n 40 "$work/tansu.log" >&2 || true
  echo "--- hub log" >&2; tail -n 60 "$work/hub.log" >&2 || true
}
