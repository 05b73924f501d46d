#!/usr/bin/env bash
# User-space instructions per request of a hello server over a real socket, counted by
# callgrind (stable on a noisy machine, unlike time). Usage:
#
#   scripts/icount.sh N 'COMMAND --port {port}'
#
# e.g. scripts/icount.sh 5000 'target/release/examples/hello --server pool --port {port}'
#      scripts/icount.sh 5000 '/tmp/bench-peers-target/release/peer-hyper --port {port}'
#
# Starts COMMAND under valgrind with instrumentation off, sends 200 warm-up requests on one
# keep-alive connection, then counts only while N more `GET /` requests are answered one
# after another (each awaited before the next is sent; with DEPTH=D, in pipelined batches of
# D), and prints the total divided by N. With CONC=C, the counted part is instead N seconds
# of `wrk -t1 -cC` (so N is a duration; the total is divided by the requests wrk made):
# under valgrind the server is slow, so every poll finds a batch of ready requests, as a
# busy server's does (CONC=16 is the harness for "under load" in BENCHMARKS.md).
# Kernel work (the system calls) is not counted. Needs valgrind and python3; bounded by the
# timeouts below. A build with `debug = 1` lets callgrind_annotate name the functions in
# the dump it leaves in /tmp/icount.out.*.
set -euo pipefail
n=${1:?usage: icount.sh N 'COMMAND --port {port}'}
cmd=${2:?usage: icount.sh N 'COMMAND --port {port}'}
port=${PORT:-18330}
depth=${DEPTH:-1} # requests pipelined per round trip (DEPTH=16 for the pipelined case)
cmd=${cmd//\{port\}/$port}
rm -f /tmp/icount.out.*
# shellcheck disable=SC2086 # the command is split into words on purpose
setsid valgrind --tool=callgrind --instr-atstart=no --callgrind-out-file=/tmp/icount.out.%p \
  $cmd >/tmp/icount.log 2>&1 &
vg=$!
trap 'kill -9 -- -$vg 2>/dev/null || true' EXIT

drive() { # requests
  timeout 600 python3 - "$port" "$1" "$depth" <<'PY'
import socket, sys, time
port, n = int(sys.argv[1]), int(sys.argv[2])
deadline = time.monotonic() + 60
while True:
    try:
        s = socket.create_connection(("127.0.0.1", port), timeout=30)
        break
    except OSError:
        if time.monotonic() > deadline:
            raise
        time.sleep(0.2)
s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
depth = int(sys.argv[3])
for _ in range(n // depth):
    s.sendall(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n" * depth)
    got = b""
    while got.count(b"Hello, World!") < depth:
        more = s.recv(65536)
        if not more:
            sys.exit("the server closed the connection")
        got += more
s.close()
PY
}

drive 200
callgrind_control -i on "$vg" >/dev/null 2>&1
if [ -n "${CONC:-}" ]; then
  out=$(timeout $((n + 60)) wrk -t1 -c"$CONC" -d"${n}s" --timeout 10s "http://127.0.0.1:$port/")
  secs=$n
  n=$(echo "$out" | awk '/requests in/ {print $1}')
  [ "${n:-0}" -gt 0 ] || { echo "wrk made no requests: $out" >&2; exit 1; }
else
  drive "$n"
fi
callgrind_control -i off "$vg" >/dev/null 2>&1
callgrind_control -d "$vg" >/dev/null 2>&1
dump=$(ls -t /tmp/icount.out.*.1 | head -1)
total=$(callgrind_annotate "$dump" 2>/dev/null | awk '/PROGRAM TOTALS/ {gsub(",", "", $1); print $1}')
echo "instructions: $total for $n requests${secs:+ in $secs s at c=$CONC}, $((total / n)) per request ($dump)"
