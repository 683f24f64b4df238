#!/bin/sh
# The schemathesis gate's inside, run by test_schemathesis.py as `unshare -n sh fuzz.sh`: in a network namespace
# of its own, where only loopback exists, so nothing the fuzzer makes the server contact (nodes registered with
# arbitrary URLs, which the sync job and operations then call) can reach beyond this machine. Postgres is
# reached through its unix socket. Environment: BIN (the venv's bin), PORT, CONFIG, MTACTL_* settings, FUZZ_ARGS.
set -eu
ip link set lo up
"$BIN/mtactl" db upgrade >/dev/null
KEY=$("$BIN/mtactl" keys create --name fuzz --scopes admin)
"$BIN/mtactl" serve --host 127.0.0.1 --port "$PORT" &
SERVER=$!
trap 'kill $SERVER 2>/dev/null || true; wait $SERVER 2>/dev/null || true' EXIT
"$BIN/python" - <<PY
import time, urllib.request
for _ in range(200):
    try:
        urllib.request.urlopen("http://127.0.0.1:$PORT/api/v1/health", timeout=1)
        break
    except Exception:
        time.sleep(0.1)
PY
# shellcheck disable=SC2086
"$BIN/schemathesis" --no-color --config-file "$CONFIG" run "http://127.0.0.1:$PORT/schema/openapi.json" \
  -H "Authorization: Bearer $KEY" $FUZZ_ARGS
