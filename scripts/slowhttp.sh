#!/usr/bin/env bash
# Slow-client attacks with slowhttptest against the echo example on each backend, with an
# outside availability probe. Not run in CI (about 45 s per run, six runs).
#
#   scripts/slowhttp.sh [-c CONNS] [-r RATE] [-l SECONDS] [-b "dev pool"] [-m "H B X"] [-o DIR]
#
# For each backend and mode (H: slow headers, B: slow body, X: slow read) it starts a fresh
# `target/release/examples/echo --server BACKEND --bind 127.0.0.1:0`, probes it with curl
# every 0.5 s (status and latency, plus the server's thread count), runs slowhttptest for
# -l seconds after a short baseline, keeps probing for a recovery window, and stops the
# server. It prints slowhttptest's final figures (closed, pending, connected, service
# available, from its CSV) and the probe's, per phase, and checks the backends' claims:
#   pool: every probe during the attack gets a 200 (it stays available throughout);
#   dev:  every probe gets a 200 or a 503 (it sheds at its cap, never hangs or resets),
#         and every probe in the recovery window gets a 200 (it recovers).
# Both must survive. Exit status 1 if a claim fails. Needs slowhttptest (apt), curl, python3
# and a release build (`cargo build --release --examples`). Everything is bounded:
# slowhttptest by -l (and `timeout`), each probe by curl --max-time, servers are stopped.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
BIN="$ROOT/target/release/examples/echo"
CONNS=1500 # more than the dev server's cap (1024), so that it has to shed
RATE=200
LENGTH=30
BACKENDS="dev pool"
MODES="H B X"
INTERVAL=5    # seconds between a slow client's follow-up bytes
BASELINE=2    # seconds of probing before the attack
RECOVERY=10   # seconds of probing after it
PROBE_TIMEOUT=3
OUT=""

while getopts "c:r:l:b:m:o:h" opt; do
    case $opt in
    c) CONNS=$OPTARG ;;
    r) RATE=$OPTARG ;;
    l) LENGTH=$OPTARG ;;
    b) BACKENDS=$OPTARG ;;
    m) MODES=$OPTARG ;;
    o) OUT=$OPTARG ;;
    *) sed -n '2,18p' "$0" | sed 's/^# \{0,1\}//'; exit 2 ;;
    esac
done

for tool in slowhttptest curl python3; do
    command -v "$tool" >/dev/null || { echo "needs $tool (slowhttptest: apt-get install slowhttptest)" >&2; exit 2; }
done
[[ -x $BIN ]] || { echo "no $BIN: run cargo build --release --examples" >&2; exit 2; }
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

WORK=$(mktemp -d)
[[ -n $OUT ]] && mkdir -p "$OUT"
OUT=${OUT:-$WORK}
SERVER_PID=""
PROBE_PID=""
SLOW_PID=""

stop_server() {
    local pid=$SERVER_PID
    SERVER_PID=""
    [[ -n $pid ]] || return 0
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 50); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
}
cleanup() {
    [[ -n $SLOW_PID ]] && kill -KILL "$SLOW_PID" 2>/dev/null || true
    [[ -n $PROBE_PID ]] && kill -KILL "$PROBE_PID" 2>/dev/null || true
    stop_server
    rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

start_server() { # BACKEND LOG_PREFIX -> sets SERVER_PID and ADDR
    : >"$2.stdout"
    "$BIN" --server "$1" --bind 127.0.0.1:0 </dev/null >"$2.stdout" 2>"$2.stderr" &
    SERVER_PID=$!
    local deadline=$((SECONDS + 30))
    until [[ $(wc -l <"$2.stdout") -ge 1 ]]; do
        kill -0 "$SERVER_PID" 2>/dev/null || { echo "server exited:" >&2; cat "$2.stderr" >&2; exit 1; }
        ((SECONDS < deadline)) || { echo "server did not announce itself" >&2; exit 1; }
        sleep 0.1
    done
    ADDR=$(head -n 1 "$2.stdout")
    ADDR=${ADDR#listening on http://}
}

# probe URL PID FILE: one line per probe, `epoch status seconds threads`, until FILE.stop.
probe() {
    local url=$1 pid=$2 file=$3 line threads
    while [[ ! -e $file.stop ]]; do
        threads=$(awk '/^Threads:/ {print $2}' "/proc/$pid/status" 2>/dev/null || echo 0)
        line=$(curl -s -o /dev/null -w '%{http_code} %{time_total}' \
            --max-time "$PROBE_TIMEOUT" "$url" 2>/dev/null || true)
        echo "$(date +%s.%N) ${line:-000 $PROBE_TIMEOUT} ${threads:-0}" >>"$file"
        sleep 0.5
    done
}

mode_args() {
    case $1 in
    H) echo "-H -i $INTERVAL" ;;
    B) echo "-B -i $INTERVAL -s 8192" ;;
    # Small advertised windows and slow reads of a response made larger by its query
    # (echo repeats it), three requests per connection.
    X) echo "-X -k 3 -w 1 -y 64 -n 1 -z 32" ;;
    esac
}
mode_name() {
    case $1 in H) echo "slow headers" ;; B) echo "slow body" ;; X) echo "slow read" ;; esac
}

FAILED=0
SUMMARY="$WORK/summary"
: >"$SUMMARY"

for backend in $BACKENDS; do
    for mode in $MODES; do
        tag="$backend-$mode"
        printf '\n==> %s server, %s (slowhttptest -%s): %s connections at %s/s for %s s\n' \
            "$backend" "$(mode_name "$mode")" "$mode" "$CONNS" "$RATE" "$LENGTH"
        start_server "$backend" "$OUT/$tag.server"
        echo "echo --server $backend at $ADDR (pid $SERVER_PID)"
        url="http://$ADDR/"
        [[ $mode == X ]] && url="http://$ADDR/?pad=$(printf 'x%.0s' $(seq 4000))"
        probe "http://$ADDR/?probe=1" "$SERVER_PID" "$OUT/$tag.probe" &
        PROBE_PID=$!
        sleep "$BASELINE"
        t_start=$(date +%s.%N)
        # shellcheck disable=SC2046
        (cd "$OUT" && timeout $((LENGTH + 60)) slowhttptest $(mode_args "$mode") \
            -c "$CONNS" -r "$RATE" -l "$LENGTH" -p "$PROBE_TIMEOUT" -u "$url" \
            -g -o "$tag.slowhttptest" >"$tag.slowhttptest.log" 2>&1) &
        SLOW_PID=$!
        wait "$SLOW_PID" || echo "slowhttptest exited $?"
        SLOW_PID=""
        t_end=$(date +%s.%N)
        sleep "$RECOVERY"
        touch "$OUT/$tag.probe.stop"
        wait "$PROBE_PID" 2>/dev/null || true
        PROBE_PID=""
        alive=yes
        kill -0 "$SERVER_PID" 2>/dev/null || alive=no
        stop_server

        python3 - "$backend" "$mode" "$OUT/$tag.probe" "$OUT/$tag.slowhttptest" \
            "$t_start" "$t_end" "$alive" "$SUMMARY" <<'EOF' || FAILED=1
import csv, re, statistics, sys

backend, mode, probe_file, report, t_start, t_end, alive, summary = sys.argv[1:]
csv_file = report + ".csv"
t_start, t_end = float(t_start), float(t_end)
probes = []
with open(probe_file) as f:
    for line in f:
        p = line.split()
        if len(p) == 4:
            probes.append((float(p[0]), p[1], float(p[2]), int(p[3])))

def phase(lo, hi):
    return [p for p in probes if lo <= p[0] < hi]

def describe(ps):
    if not ps:
        return "no probes", {}
    codes = {}
    for p in ps:
        codes[p[1]] = codes.get(p[1], 0) + 1
    ok = [p[2] for p in ps if p[1] == "200"]
    lat = (f"200 latency p50 {statistics.median(ok) * 1000:.1f} ms, max {max(ok) * 1000:.1f} ms"
           if ok else "no 200")
    mix = ", ".join(f"{k}: {v}" for k, v in sorted(codes.items()))
    return f"{len(ps)} probes ({mix}; {100 * len(ok) / len(ps):.0f}% ok), {lat}", codes

base_text, _ = describe(phase(0, t_start))
attack = phase(t_start, t_end)
attack_text, attack_codes = describe(attack)
recovery = phase(t_end, float("inf"))
rec_text, rec_codes = describe(recovery)
first_ok = next((p[0] - t_end for p in recovery if p[1] == "200"), None)
threads = max((p[3] for p in probes), default=0)

rows = []
try:
    with open(csv_file) as f:
        rows = [r for r in csv.DictReader(f)]
except OSError:
    pass
if rows:
    last = rows[-1]
    peak = max(int(r["Connected"]) for r in rows)
    down = sum(1 for r in rows if int(r["Service Available"]) == 0)
    slow = (f"final: closed {last['Closed']}, pending {last['Pending']}, connected "
            f"{last['Connected']}, service available {'YES' if int(last['Service Available']) else 'NO'}"
            f" (at {last['Seconds']} s); peak connected {peak}; seconds reported unavailable "
            f"{down} of {len(rows)}")
else:
    slow = "no CSV report"
try:
    with open(report + ".log", errors="replace") as f:
        log = re.sub(r"\x1b\[[0-9;]*[A-Za-z]", "", f.read())
    ended = re.findall(r"Exit status: *(.*)", log)
    if ended:
        slow += f"; ended: {ended[-1].strip()}"
except OSError:
    pass

claims = []
claims.append(("server survived", alive == "yes"))
if backend == "pool":
    claims.append(("every probe during the attack got 200",
                   bool(attack) and set(attack_codes) == {"200"}))
else:
    claims.append(("every probe during the attack got 200 or 503",
                   bool(attack) and set(attack_codes) <= {"200", "503"}))
    claims.append(("every probe after the attack got 200",
                   bool(recovery) and set(rec_codes) == {"200"}))
print(f"  slowhttptest: {slow}")
print(f"  probe before: {base_text}")
print(f"  probe during: {attack_text}")
print(f"  probe after:  {rec_text}; first 200 after the attack at "
      + (f"+{first_ok:.1f} s" if first_ok is not None else "never"))
print(f"  server threads: peak {threads}")
ok_all = True
for text, ok in claims:
    print(f"  [{'PASS' if ok else 'FAIL'}] {backend}: {text}")
    ok_all &= ok
with open(summary, "a") as f:
    f.write(f"{backend:4} {mode}  {'PASS' if ok_all else 'FAIL'}  slowhttptest {slow}\n"
            f"        during: {attack_text}\n        after:  {rec_text}\n")
sys.exit(0 if ok_all else 1)
EOF
    done
done

printf '\n==> summary (%s connections at %s/s for %s s; files in %s)\n' "$CONNS" "$RATE" "$LENGTH" "$OUT"
cat "$SUMMARY"
[[ $OUT == "$WORK" ]] && echo "(pass -o DIR to keep the CSV/HTML reports and probe logs)"
exit "$FAILED"
