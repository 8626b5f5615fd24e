#!/usr/bin/env bash
# Optional cross-check of the recorder's S3 use against Ceph's RadosGW, the S3 service of
# many on-premises object stores, on this one machine (CI runs the same tests against
# SeaweedFS; this shows they hold on a second implementation of Object Lock).
#
# It starts a throwaway single-node Ceph cluster in a temporary folder, all on 127.0.0.1:
# one monitor, one OSD with the in-memory object store, and RadosGW (beast frontend),
# without cephx (loopback only, deleted afterwards). It creates an S3 user, then runs the
# scale tests that need no server restart against it:
#
#   sudo apt-get install radosgw ceph-mon ceph-osd     # Debian packages (once)
#   scripts/radosgw-crosscheck.sh                      # as root or as a user who may run ceph
#   scripts/radosgw-crosscheck.sh -k lock              # extra pytest arguments are passed on
#
# The tests reach the gateway through RECORDER_TEST_S3_ENDPOINT (and the user's keys in
# RECORDER_TEST_S3_ACCESS_KEY / _SECRET_KEY); see tests/scale/servers.py. PostgreSQL is
# started by the tests themselves, as in CI.
set -euo pipefail
cd "$(dirname "$0")/.."

for tool in ceph-mon ceph-osd radosgw radosgw-admin monmaptool ceph; do
  command -v "$tool" >/dev/null || { echo "$tool is missing: apt-get install radosgw ceph-mon ceph-osd" >&2; exit 2; }
done

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
DIR=$(mktemp -d /tmp/recorder-rgw.XXXXXX)
MON_PORT=$(free_port)
RGW_PORT=$(free_port)
FSID=$(python3 -c 'import uuid; print(uuid.uuid4())')
CONF="$DIR/ceph.conf"
PIDS=()
cleanup() {
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
  rm -rf "$DIR"
}
trap cleanup EXIT
[ -n "${KEEP:-}" ] && trap - EXIT  # KEEP=1: leave the cluster running to look at it

cat >"$CONF" <<EOF
[global]
fsid = $FSID
mon host = 127.0.0.1:$MON_PORT
public network = 127.0.0.0/8
auth cluster required = none
auth service required = none
auth client required = none
osd objectstore = memstore
memstore device bytes = 1073741824
osd pool default size = 1
osd pool default min size = 1
osd pool default pg num = 8
osd pool default pgp num = 8
osd crush chooseleaf type = 0
mon allow pool size one = true
mon warn on pool no redundancy = false
mon max pg per osd = 1000
ms bind ipv4 = true
# without cephx no connection can be "secure": crc only (loopback, throwaway)
ms client mode = crc
ms cluster mode = crc
ms service mode = crc
ms mon client mode = crc
ms mon cluster mode = crc
ms mon service mode = crc
run dir = $DIR/run
log file = $DIR/\$name.log
admin socket = $DIR/run/\$name.asok
[mon.a]
mon data = $DIR/mon
[osd.0]
osd data = $DIR/osd
[client.rgw]
rgw frontends = beast endpoint=127.0.0.1:$RGW_PORT
rgw data = $DIR/rgw
rgw dns name = 127.0.0.1
EOF
mkdir -p "$DIR/run" "$DIR/mon" "$DIR/osd" "$DIR/rgw"

echo "+ ceph monitor on 127.0.0.1:$MON_PORT"
monmaptool --create --add a "127.0.0.1:$MON_PORT" --fsid "$FSID" "$DIR/monmap" >/dev/null
ceph-mon -c "$CONF" --mkfs -i a --monmap "$DIR/monmap"
ceph-mon -c "$CONF" -i a -f &
PIDS+=($!)
for _ in $(seq 1 60); do ceph -c "$CONF" --connect-timeout 2 mon stat >/dev/null 2>&1 && break; sleep 0.5; done

echo "+ one OSD (memstore)"
ceph -c "$CONF" osd create >/dev/null
ceph-osd -c "$CONF" -i 0 --mkfs >/dev/null 2>&1
ceph-osd -c "$CONF" -i 0 -f &
PIDS+=($!)
for _ in $(seq 1 60); do
  ceph -c "$CONF" osd stat 2>/dev/null | grep -q "1 up" && break
  sleep 0.5
done

echo "+ radosgw on 127.0.0.1:$RGW_PORT"
radosgw -c "$CONF" -n client.rgw -f &
PIDS+=($!)
for _ in $(seq 1 120); do
  curl -s -o /dev/null "http://127.0.0.1:$RGW_PORT/" && break
  sleep 0.5
done
curl -s -o /dev/null "http://127.0.0.1:$RGW_PORT/" || { echo "radosgw did not start: see $DIR" >&2; tail -20 "$DIR/client.rgw.log" >&2; exit 1; }

KEY=recorder-rgw
SECRET=$(python3 -c 'import secrets; print(secrets.token_hex(20))')
radosgw-admin -c "$CONF" -n client.rgw user create --uid recorder --display-name recorder \
  --access-key "$KEY" --secret-key "$SECRET" >/dev/null 2>&1

echo "+ scale tests against RadosGW"
export RECORDER_TEST_S3_ENDPOINT="http://127.0.0.1:$RGW_PORT"
export RECORDER_TEST_S3_ACCESS_KEY="$KEY"
export RECORDER_TEST_S3_SECRET_KEY="$SECRET"
# (the S3 outage test stops and restarts its own SeaweedFS: left out here)
python3 -m pytest -q tests/scale -k "not s3_stopped" "$@"
