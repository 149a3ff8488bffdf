#!/usr/bin/env bash
# Take-overs that must not happen, under traffic: a new vvu-forward with another port list, a
# client that sends garbage, one that speaks another protocol version, one that says hello
# and hangs up after the first session record (the old process has paused its data path by
# then), and a take-over from a control socket nobody serves. Each new process exits non-zero
# with the reason; the old one serves on: vvu-traffic's echo loses nothing, and a real
# take-over still succeeds afterwards.
# With --device VVU_DEVICE the process taken over is vvu-device itself (--control / --takeover;
# vvu-forward drives it as a `vvu:` port): the same refusals, and neither vvu-traffic nor
# vvu-forward sees its session end.
# Usage: takeover-refused.sh --traffic VVU_TRAFFIC --forward VVU_FORWARD [--device VVU_DEVICE]
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=../frontend/lib.sh
source "$here/../frontend/lib.sh"

traffic="" forward="" VVU_DEVICE=""
while [[ $# -gt 0 ]]; do
  case $1 in
    --traffic) traffic=$2; shift 2 ;;
    --forward) forward=$2; shift 2 ;;
    --device) VVU_DEVICE=$2; shift 2 ;;
    *) echo "unknown argument $1" >&2; exit 2 ;;
  esac
done
what=forward
[[ -n $VVU_DEVICE ]] && what=device
fe_init "live-update.takeover-refused${VVU_DEVICE:+.device}" python3
need_exe "$traffic"
need_exe "$forward"
sock=$work/port.sock control=$work/control.sock pci=$work/pci.sock rate=500000 packets=10000000 # 20 s: it outlasts every step on a loaded machine

if [[ $what == device ]]; then
  need_exe "$VVU_DEVICE"
  device_start old "$sock" "$pci" --control "$control"
  PEER_STDOUT=1 peer_run forward "$forward" --mode loopback --port "vvu:$pci"
  wait_log old "driver ready" 20
  # What the old process serves, as its hello names it (device_model::handover_description).
  description="vvu-device $sock $pci max_queues=64"
  # new PORT-SOCKET ARGS...: a new process of the kind taken over.
  new() { local s=$1; shift; echo "$VVU_DEVICE" --vhost-user "$s" --pci "$pci" "$@"; }
  took="took the device over"
  ended="front-end disconnected"
else
  PEER_STDOUT=1 peer_run old "$forward" --mode loopback --port "unix:$sock" --control "$control"
  wait_socket "$sock" old 20
  description="unix:$sock"
  new() { local s=$1; shift; echo "$forward" --mode loopback --port "unix:$s" "$@"; }
  took="took 1 ports over"
  ended="session ended"
fi
wait_socket "$control" old 20
PEER_STDOUT=1 peer_run traffic "$traffic" --connect "$sock" --mode echo --packets "$packets" --rate "$rate" \
  --timeout 10000 --idle 5000
wait_log old "front-end connected" 20

# refused NAME WHAT-THE-ERROR-SAYS CMD...: CMD must exit non-zero within 20 s and say so.
refused() {
  local name=$1 want=$2
  shift 2
  local rc=0
  timeout 20 "$@" >"$work/$name.log" 2>&1 || rc=$?
  ((rc != 0 && rc != 124)) || fail "$name: exit status $rc (want a refusal)"
  grep -a -q -- "$want" "$work/$name.log" || { cat "$work/$name.log"; fail "$name: no '$want' in its output"; }
  echo "ok: $name refused (exit $rc): $(grep -a -m1 -- "$want" "$work/$name.log")"
  peer_alive old || fail "the old process ended after $name"
}

# A raw client of the control socket (python3: SCM_RIGHTS receive), MODE garbage|version|halfway.
client() {
  python3 - "$control" "$1" "$description" <<'PY'
import socket, struct, sys
path, mode, description = sys.argv[1], sys.argv[2], sys.argv[3]
VERSION = 2  # the hand-over protocol's (transport::handover_socket::version)
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
s.connect(path)
s.settimeout(5)
def hello(version):
    desc = description.encode()
    payload = struct.pack("<I", 1) + struct.pack("<I", len(desc)) + desc
    return struct.pack("<IHHII", 0x4C555656, version, 1, len(payload), 0) + payload
if mode == "garbage":
    s.sendall(b"GET / HTTP/1.1\r\nHost: vvu\r\n\r\n")
elif mode == "version":
    s.sendall(hello(7))
else:
    s.sendall(hello(VERSION))
def record():
    head, anc, _, _ = s.recvmsg(16, socket.CMSG_SPACE(253 * 4))
    body = b""
    size = struct.unpack("<IHHII", head)[3] if len(head) == 16 else 0
    while len(body) < size:
        chunk = s.recv(size - len(body))
        if not chunk:
            break
        body += chunk
    return head, anc, body
if mode == "halfway":
    # The memory comes first while the old process still runs; "ready" (type 12) lets it pause.
    while True:
        head, anc, body = record()
        if len(head) < 16 or struct.unpack("<IHHII", head)[2] != 10:
            break
    s.sendall(struct.pack("<IHHII", 0x4C555656, VERSION, 12, 0, 0))
header, ancillary, _, _ = s.recvmsg(16, socket.CMSG_SPACE(253 * 4))
fds = [fd for level, kind, data in ancillary if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS
       for fd in struct.unpack(f"<{len(data) // 4}i", data[: len(data) // 4 * 4])]
kind = struct.unpack("<IHHII", header[:16])[2] if len(header) >= 16 else -1
if mode == "halfway":
    announced = struct.unpack("<IHHII", header[:16])[4] if len(header) >= 16 else -1
    print(f"got record type {kind} with {len(fds)} fds (announced {announced}); hanging up")  # 3: port: the old one has paused
else:
    size = struct.unpack("<IHHII", header)[3]
    body = s.recv(size)
    print(f"record type {kind}: {body[4:].decode(errors='replace')}")  # 2: refuse, and why
if mode == "halfway":  # the port's session came: its sockets, memory, notifiers (not only a listener)
    sys.exit(0 if kind == 3 and announced >= 5 else 1)
sys.exit(0 if kind == 2 else 1)
PY
}

# shellcheck disable=SC2046 # new() prints a command line of paths without spaces
refused other-ports "port lists differ" $(new "$work/other.sock" --takeover "$control")
# shellcheck disable=SC2046
refused nobody "control socket" $(new "$sock" --takeover "$work/nobody.sock")
for mode in garbage version halfway; do
  out=$(client "$mode") || fail "control client ($mode): $out"
  echo "ok: control client ($mode): $out"
  peer_alive old || fail "the old process ended after the $mode client"
done
grep -a "take-over refused" "$work/old.log" | sed 's/^/  old: /'
peer_alive traffic || fail "vvu-traffic finished before the refusals were all tried (make --packets larger)"
grep -a -q "$ended" "$work/old.log" && fail "the old process's session ended during the refusals"
[[ $what == device ]] && grep -a -q "session ended" "$work/forward.log" &&
  fail "vvu-forward's session ended during the refusals"

# And a real one still works.
# shellcheck disable=SC2046
PEER_STDOUT=1 peer_run new $(new "$sock" --control "$control" --takeover "$control")
wait_log new "$took" 20
peer_wait old 20
((peer_rc == 0)) || fail "the old process exited with status $peer_rc after the real take-over"
peer_wait traffic 60
((peer_rc == 0)) || fail "vvu-traffic exited with status $peer_rc"
echo "vvu-traffic: $(grep -a '^{' "$work/traffic.out" | tail -n 1)"
expect_eq "received" "$(json_field "$work/traffic.out" received)" "$packets"
expect_eq "lost" "$(json_field "$work/traffic.out" lost)" 0
expect_eq "gaps" "$(json_field "$work/traffic.out" gaps)" 0
peer_stop new TERM 20
if [[ $what == device ]]; then
  expect_eq "vvu-forward's session ends (vvu-traffic's close)" "$(grep -a -c "session ended" "$work/forward.log")" 1
  peer_stop forward TERM 20
  expect_eq "vvu-device drivers" "$(json_field "$work/new.out" drivers)" 1
  expect_eq "vvu-device disconnects (vvu-traffic's close)" "$(json_field "$work/new.out" disconnects)" 1
fi
echo "PASS: $test_name"
