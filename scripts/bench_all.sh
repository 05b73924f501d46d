#!/usr/bin/env bash
# bench_all.sh - every benchmark in BENCHMARKS.md, in one go (about 16 minutes).
#
#   scripts/bench_all.sh                      # build, run all steps, copy results, draw charts
#   scripts/bench_all.sh --steps "stream"     # some steps only: hello pipelined explode stream
#   scripts/bench_all.sh --quick --no-copy    # plumbing check: 1 s cells, nothing copied
#
# Steps (each runs the servers pinned to CPU 1 and wrk to CPU 0, see ../shared/bench):
#   hello      compare.sh, all peers + sgi-pool (8 workers) + sgi-dev, c = 1 16 64 256 1024
#   pipelined  compare.sh --wrk-args "-s pipeline.lua": hyper, limit, sgi-pool, sgi-dev, c = 64 256
#   explode    explode.sh (50 ms handler, c = 2000 5000 10000) + sgi-pool and sgi-dev
#   stream     1 GiB bodies, wrk -c1 and -c4 for 10 s: raw_stream (sendfile / std::io::copy /
#              write loop / chunked write loop / the same with 32-byte aligned framing) against sgi's files example (Body::from_file) and big_stream
#              (Body::from_iter, chunked and with a declared Content-Length), both backends
# Raw output goes to --out (default /tmp/sgi-bench-DATE); results.tsv/results.md of each
# step are copied to bench/results/STEP.{tsv,md} in the repo (with STEP.machine.txt: machine,
# toolchain, commit, load at each step's start), and scripts/chart.py draws
# bench/chart.svg and bench/chart-pipelined.svg from them.
#
# Options:
#   --out DIR        raw results directory
#   --steps "LIST"   steps to run (default: hello pipelined explode stream)
#   --quick          1 s cells, fewer concurrencies, no warm-up (to check the plumbing)
#   --no-copy        leave bench/ in the repo alone
#   --no-build       use the release examples as they are
#   --wait-quiet M   first wait up to M minutes until the machine is idle (<10% busy over 5 s)
# Env: BENCH (default ../shared/bench from the repo root), STREAM_DIR (/tmp/sgi-stream, where
# the 1 GiB file is made), STREAM_SECS (10), STREAM_CONC ("1 4").
set -u -o pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BENCH=${BENCH:-$ROOT/../shared/bench}
OUT=/tmp/sgi-bench-$(date +%Y%m%d-%H%M%S)
STEPS="hello pipelined explode stream"
QUICK=0; COPY=1; BUILD=1; WAIT_QUIET=0
STREAM_DIR=${STREAM_DIR:-/tmp/sgi-stream}
STREAM_SECS=${STREAM_SECS:-10}
STREAM_CONC=${STREAM_CONC:-"1 4"}
SERVER_CPU=1; WRK_CPU=0

while [ $# -gt 0 ]; do
  case $1 in
    --out) OUT=$2; shift 2 ;;
    --steps) STEPS=$2; shift 2 ;;
    --quick) QUICK=1; shift ;;
    --no-copy) COPY=0; shift ;;
    --no-build) BUILD=0; shift ;;
    --wait-quiet) WAIT_QUIET=$2; shift 2 ;;
    -h|--help) sed -n '2,/^set -u/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) echo "unknown option: $1" >&2; exit 2 ;;
  esac
done

log() { echo "[$(date +%T)] $*" >&2; }
die() { log "bench_all.sh: $*"; exit 1; }
[ -x "$BENCH/compare.sh" ] || die "no compare.sh in $BENCH (set BENCH=...)"
BENCH=$(cd "$BENCH" && pwd)
EX=$ROOT/target/release/examples
mkdir -p "$OUT" || die "cannot create $OUT"
OUT=$(cd "$OUT" && pwd)

if [ "$QUICK" = 1 ]; then
  HELLO_C="1 64"; PIPE_C="64"; EXPLODE_C="2000"; DUR=1; WARM=0; EXPLODE_DUR=2
  STREAM_SECS=2; STREAM_CONC="1"
else
  HELLO_C="1 16 64 256 1024"; PIPE_C="64 256"; EXPLODE_C="2000 5000 10000"; DUR=5; WARM=2; EXPLODE_DUR=10
fi

busy_pct() { # % of all CPUs busy over $1 seconds
  local a b
  a=$(awk '$1 == "cpu" { print $2 + $3 + $4 + $7 + $8 + $9, $2 + $3 + $4 + $5 + $6 + $7 + $8 + $9 }' /proc/stat)
  sleep "$1"
  b=$(awk '$1 == "cpu" { print $2 + $3 + $4 + $7 + $8 + $9, $2 + $3 + $4 + $5 + $6 + $7 + $8 + $9 }' /proc/stat)
  awk -v a="$a" -v b="$b" 'BEGIN { split(a, x, " "); split(b, y, " "); t = y[2] - x[2]; p = (t > 0) ? 100 * (y[1] - x[1]) / t : 0; printf "%.0f\n", p }'
}

if [ "$WAIT_QUIET" -gt 0 ]; then
  t0=$SECONDS
  while :; do
    b=$(busy_pct 5)
    [ "$b" -lt 10 ] && { log "machine quiet (${b}% busy)"; break; }
    [ $((SECONDS - t0)) -ge $((WAIT_QUIET * 60)) ] && { log "still ${b}% busy after ${WAIT_QUIET} min; running anyway"; break; }
    log "machine ${b}% busy; waiting. Top: $(ps -eo pcpu,comm --sort=-pcpu | sed -n 2,4p | tr -s ' ' | tr '\n' ';')"
    sleep 55
  done
fi

if [ "$BUILD" = 1 ]; then
  log "building release examples"
  (cd "$ROOT" && cargo build --release --example hello --example files --example big_stream --example raw_stream) >&2 \
    || die "cargo build failed"
fi
for e in hello files big_stream raw_stream; do [ -x "$EX/$e" ] || die "missing $EX/$e"; done

{
  echo "date: $(date -u +%FT%TZ)"
  echo "nproc: $(nproc --all)"
  echo "cpu: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //')"
  echo "kernel: $(uname -sr)"
  echo "rustc: $(rustc --version)"
  echo "wrk: $(wrk -v 2>&1 | head -n1)"
  echo "sgi: $(git -C "$ROOT" rev-parse --short HEAD)$(git -C "$ROOT" diff --quiet HEAD -- src Cargo.toml 2>/dev/null || echo ' (src/ modified)')"
  echo "examples built: $(date -u -r "$EX/hello" +%FT%TZ) (a later cargo build in this target dir replaces them)"
  echo "busy before start: $(busy_pct 3)% of all CPUs"
} >"$OUT/machine.txt"
cat "$OUT/machine.txt" >&2

POOL="$EX/hello --server pool --workers 8 --port {port}"
DEV="$EX/hello --server dev --port {port}"
COMPARE=("$BENCH/compare.sh" -d "$DUR" -w "$WARM")

step_hello() {
  (cd "$BENCH" && "${COMPARE[@]}" -c "$HELLO_C" --out "$OUT/hello" \
    --add sgi-pool 18190 "$POOL" --add sgi-dev 18191 "$DEV")
}

step_pipelined() {
  (cd "$BENCH" && "${COMPARE[@]}" -c "$PIPE_C" --peers hyper,limit --out "$OUT/pipelined" \
    --wrk-args "-s $BENCH/pipeline.lua" --add sgi-pool 18190 "$POOL" --add sgi-dev 18191 "$DEV")
}

step_explode() {
  (cd "$BENCH" && OUT="$OUT/explode" CONCURRENCY="$EXPLODE_C" DURATION="$EXPLODE_DUR" ./explode.sh \
    --add sgi-pool 18192 "$EX/hello --server pool --workers 8 --sleep-ms 50 --port {port}" \
    --add sgi-dev 18193 "$EX/hello --server dev --sleep-ms 50 --port {port}") | tee "$OUT/explode-findings.txt"
}

# --- stream: 1 GiB bodies -------------------------------------------------------------
pgroup_ticks() { # utime+stime summed over the processes of process group $1
  local pg=$1 f line rest t=0
  for f in /proc/[0-9]*/stat; do
    { read -r line <"$f"; } 2>/dev/null || continue
    rest=${line##*) }; set -- $rest
    [ "${3:-}" = "$pg" ] || continue
    t=$((t + ${12:-0} + ${13:-0}))
  done
  echo "$t"
}
cpu_ticks() { awk -v c="cpu$1" '$1 == c { print $2 + $3 + $4 + $9, $2 + $3 + $4 + $5 + $6 + $7 + $8 + $9 }' /proc/stat; }
port_open() { timeout 1 bash -c "exec 3<>/dev/tcp/127.0.0.1/$1" 2>/dev/null; }
to_mib() { # wrk size ("1.23GB") -> MiB
  awk -v s="$1" 'BEGIN { n = s + 0; u = s; sub(/^[0-9.]+/, "", u)
    f = (u == "GB") ? 1024 : (u == "MB") ? 1 : (u == "KB") ? 1 / 1024 : (u == "B") ? 1 / 1048576 : 0
    printf "%.0f\n", n * f }'
}

stream_one() { # name port cmd path
  local name=$1 port=$2 cmd=${3//\{port\}/$2} path=$4 pid t c f b0 t0 b1 t1 g0 g1 tr req err srv bg
  log "stream $name: $cmd"
  setsid taskset -c "$SERVER_CPU" bash -c "exec $cmd" >>"$OUT/stream/$name.log" 2>&1 </dev/null &
  pid=$!
  t=$SECONDS
  until port_open "$port"; do
    kill -0 "$pid" 2>/dev/null || { log "$name exited"; return 1; }
    [ $((SECONDS - t)) -lt 60 ] || { log "$name: no port"; kill -- "-$pid"; return 1; }
    sleep 0.2
  done
  for c in $STREAM_CONC; do
    f="$OUT/stream/$name.c$c.wrk"
    read -r b0 t0 <<<"$(cpu_ticks "$SERVER_CPU")"; g0=$(pgroup_ticks "$pid")
    taskset -c "$WRK_CPU" wrk -t1 -c"$c" -d"${STREAM_SECS}s" --timeout 60s "http://127.0.0.1:$port$path" >"$f" 2>&1
    read -r b1 t1 <<<"$(cpu_ticks "$SERVER_CPU")"; g1=$(pgroup_ticks "$pid")
    tr=$(awk '/^Transfer\/sec:/ { print $2 }' "$f"); req=$(awk '/ requests in / { print $1 }' "$f")
    err=$(awk '/Socket errors:/ { gsub(/,/, ""); print $4 + $6 + $8 + $10 } /Non-2xx/ { print $5 }' "$f" | awk '{ s += $1 } END { print s + 0 }')
    read -r srv bg <<<"$(awk -v b="$((b1 - b0))" -v t="$((t1 - t0))" -v g="$((g1 - g0))" \
      'BEGIN { if (t <= 0) { print "0 0"; exit } o = 100 * (b - g) / t; if (o < 0) o = 0; printf "%.0f %.0f\n", 100 * g / t, o }')"
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$name" "$c" "$(to_mib "${tr:-0B}")" "${req:-0}" "$err" "$srv" "$bg" >>"$OUT/stream/results.tsv"
    log "stream $name c=$c: ${tr:-?}/s, $req responses, errors=$err srv=${srv}% bg=${bg}%"
    sleep 1
  done
  kill -TERM -- "-$pid" 2>/dev/null
  for t in $(seq 50); do kill -0 -- "-$pid" 2>/dev/null || break; sleep 0.1; done
  kill -KILL -- "-$pid" 2>/dev/null; wait "$pid" 2>/dev/null
  sleep 1
}

step_stream() {
  mkdir -p "$OUT/stream" "$STREAM_DIR"
  local big=$STREAM_DIR/big.bin s w
  if [ "$(stat -c %s "$big" 2>/dev/null)" != 1073741824 ]; then
    log "making $big (1 GiB)"; head -c 1073741824 /dev/zero | tr '\0' x >"$big" || die "cannot write $big"
  fi
  cat "$big" >/dev/null # into the page cache
  printf 'server\tconc\tmib_s\tresponses\terrors\tsrv_cpu_pct\tbg_cpu_pct\n' >"$OUT/stream/results.tsv"
  stream_one raw-sendfile 18300 "$EX/raw_stream --mode sendfile --file $big --port {port}" /
  stream_one raw-copy 18301 "$EX/raw_stream --mode copy --file $big --port {port}" /
  stream_one raw-write 18302 "$EX/raw_stream --mode write --port {port}" /
  stream_one raw-write-chunked 18303 "$EX/raw_stream --mode write-chunked --port {port}" /
  stream_one raw-write-chunked-aligned 18304 "$EX/raw_stream --mode write-chunked-aligned --port {port}" /
  for s in pool dev; do
    w=""; [ $s = pool ] && w="--workers 8"
    stream_one "sgi-$s-file" 18310 "$EX/files --server $s $w --root $STREAM_DIR --port {port}" /big.bin
    stream_one "sgi-$s-iter" 18311 "$EX/big_stream --server $s $w --port {port}" /
    stream_one "sgi-$s-iter-length" 18312 "$EX/big_stream --server $s $w --length --port {port}" /
  done
  # Ratios: file bodies against raw sendfile, iterator bodies against the raw write loop, and
  # chunked iterator bodies also against the raw loop that sends the same chunks.
  awk -F'\t' -v md="$OUT/stream/results.md" '
    NR == 1 { next }
    { n[NR] = $1; c[NR] = $2; v[NR] = $3; q[NR] = $4; e[NR] = $5; s[NR] = $6; b[NR] = $7; val[$1 " " $2] = $3 }
    END {
      print "| body | conc | MiB/s | responses | errors | vs raw-sendfile | vs raw-write | vs raw-write-chunked | srv% | bg% |" > md
      print "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|" > md
      for (i = 2; i <= NR; i++) {
        rs = val["raw-sendfile " c[i]]; rw = val["raw-write " c[i]]; rc = val["raw-write-chunked " c[i]]
        r1 = (rs > 0) ? sprintf("%.2f", v[i] / rs) : "-"; r2 = (rw > 0) ? sprintf("%.2f", v[i] / rw) : "-"
        r3 = (rc > 0 && (n[i] ~ /-iter$/ || n[i] == "raw-write-chunked")) ? sprintf("%.2f", v[i] / rc) : "-"
        printf "| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |\n", n[i], c[i], v[i], q[i], e[i], r1, r2, r3, s[i], b[i] > md
      }
    }' "$OUT/stream/results.tsv"
  cat "$OUT/stream/results.md" >&2
}

for s in $STEPS; do
  case $s in
    hello|pipelined|explode|stream)
      log "== step $s == busy $(busy_pct 2)%; top: $(ps -eo pcpu,comm --sort=-pcpu | sed -n 2,4p | tr -s ' ' | tr '\n' ';')" 2>&1 | tee -a "$OUT/machine.txt" >&2
      "step_$s" || log "step $s failed" ;;
    *) die "unknown step $s" ;;
  esac
done

if [ "$COPY" = 1 ]; then
  mkdir -p "$ROOT/bench/results"
  for s in hello pipelined explode stream; do
    [ -f "$OUT/$s/results.tsv" ] || continue
    cp "$OUT/$s/results.tsv" "$ROOT/bench/results/$s.tsv"
    [ -f "$OUT/$s/results.md" ] && cp "$OUT/$s/results.md" "$ROOT/bench/results/$s.md"
    [ -f "$OUT/$s/header.txt" ] && cp "$OUT/$s/header.txt" "$ROOT/bench/results/$s.header.txt"
    cp "$OUT/machine.txt" "$ROOT/bench/results/$s.machine.txt"
  done
  if [ -f "$ROOT/bench/results/hello.tsv" ]; then
    pipe=(); [ -f "$ROOT/bench/results/pipelined.tsv" ] && pipe=(--pipelined "$ROOT/bench/results/pipelined.tsv" --pipelined-out "$ROOT/bench/chart-pipelined.svg")
    python3 "$ROOT/scripts/chart.py" "$ROOT/bench/results/hello.tsv" --out "$ROOT/bench/chart.svg" "${pipe[@]}"
  fi
fi
log "raw results: $OUT"
