#!/usr/bin/env bash
# benches/cache.sh — stubborn's cache against unbound, dnsmasq and stubby (issue 5, item 5):
# cache-hit QPS and latency, cache-miss throughput over DNS-over-TLS, and memory. A
# benchmark, not a test: it asserts nothing, it measures and prints a Markdown report.
#
# Root only: everything runs in a private network namespace (only `lo`), made and removed
# through tests/netns/lib.sh. No packet leaves it.
#
# Upstream (every peer's): one unbound (BENCH_UPSTREAM_THREADS threads, default 8, see
# bench_start_dot_upstream in benches/lib.sh; no query log) serving local data only, over
# DoT on 127.0.0.2:853 and plain DNS on 127.0.0.2:53 (for dnsmasq): q1..q50.test, and
# every name under flood.test answered A 192.0.2.1 (`local-zone: "flood.test." redirect`),
# so that 200k distinct names are 200k distinct answers.
#
# Peers (benches/lib.sh writes their configs; all listen on 127.0.0.1):
#   stubborn :53    one pinned upstream 127.0.0.2:853; [cache] max_entries = 100000
#   unbound  :5300  DoT forwarder of "." to 127.0.0.2@853#dns.test (CA + name), with its
#                   cache (packaged defaults), num-threads 2, so-reuseport yes
#   dnsmasq  :5302  plain-DNS forwarder to 127.0.0.2#53, --cache-size=10000 (the speed
#                   reference for the cache-hit path: no TLS behind it)
#   stubby   :5301  pinned DoT to 127.0.0.2 (it has no cache: miss throughput and RSS only)
#
# Phases (the load average is waited on and recorded before each; see benches/lib.sh):
#  1. Cache hits. stubborn, unbound and dnsmasq run side by side (idle while not measured);
#     each is warmed with the 10 names q1..q10.test, then measured in turn, alternating, for
#     BENCH_HIT_ROUNDS rounds of `dnsperf -l 10` over those 10 names (every answer a hit),
#     once per dnsperf load in BENCH_HIT_DNSPERF (default `-c 16 -T 2 -q 500` and
#     `-c 16 -T 2 -q 100`): QPS, mean latency, lost, CPU µs per query (the peer's utime+stime
#     delta from /proc/PID/stat over the queries it answered). Then BENCH_FIXED_ROUNDS rounds
#     at a fixed rate (the first load plus `-Q BENCH_FIXED_QPS`): mean latency at equal load,
#     CPU µs per query.
#  2. Cache misses over DoT, and memory, per dnsperf -q in BENCH_MISS_OUTSTANDING (default
#     "100 500"), BENCH_MISS_ROUNDS rounds (default 3) with the peers alternating in each:
#     stubborn, unbound, stubby, each freshly started and alone: RSS after start (idle, no
#     query yet), then 200k distinct names (u1..u200000.flood.test) once each (`dnsperf -n 1
#     -l 90 -c 16 -T 2 -q Q -t 5 -v`): QPS, mean latency, p50..max, lost, CPU µs per query
#     (and the upstream's), and how many upstream threads served the run; RSS right after
#     the run. Medians over the rounds; a single run of each moved the ratio between 1.40×
#     and 1.60× from one run to the next (docs/benchmarks.md), so one round decides nothing.
#
# Environment: STUBBORN_BIN (default target/release/stubborn), BENCH_HIT_ROUNDS (default 3),
# BENCH_HIT_DNSPERF (see 1), BENCH_FIXED_ROUNDS (default 2), BENCH_FIXED_QPS (default 50000),
# BENCH_HIT_SECONDS (default 10), BENCH_MISS_NAMES (default 200000), BENCH_MISS_OUTSTANDING
# and BENCH_MISS_ROUNDS (see 2), BENCH_UPSTREAM_THREADS (default 8),
# BENCH_PERF (a path prefix: perf-record stubborn for 3 s of each miss run into
# PREFIX.missQ.data), BENCH_MISS_PEERS (default "stubborn unbound stubby"; a subset for quick comparisons),
# BENCH_PHASES (default "hit miss"), BENCH_LOAD_MAX / BENCH_QUIET_WAIT (the wait for a
# quiet machine: default 0.7 and 900 s), BENCH_OUT (report, default target/bench/cache.md;
# raw data next to it as cache.tsv, configs in cache-configs/).
# Exit status: 0 when the report was written; 1 on a setup failure; 77 when it cannot run.

. "$(dirname "$0")/../tests/netns/lib.sh"
. "$(dirname "$0")/lib.sh"
STB_NAME=bench-cache

HIT_ROUNDS=${BENCH_HIT_ROUNDS:-3}
FIXED_ROUNDS=${BENCH_FIXED_ROUNDS:-2}
FIXED_QPS=${BENCH_FIXED_QPS:-50000}
HIT_SECONDS=${BENCH_HIT_SECONDS:-10}
MISS_NAMES=${BENCH_MISS_NAMES:-200000}
MISS_ROUNDS=${BENCH_MISS_ROUNDS:-3}
read -r -a MISS_QS <<<"${BENCH_MISS_OUTSTANDING:-100 500}"
PHASES=" ${BENCH_PHASES:-hit miss} "
HIT_PEERS=(stubborn unbound dnsmasq)
read -r -a MISS_PEERS <<<"${BENCH_MISS_PEERS:-stubborn unbound stubby}"
HIT_NAMES=10
MAX_ENTRIES=100000
OUT=${BENCH_OUT:-$STB_REPO_ROOT/target/bench/cache.md}
TSV=${OUT%.md}.tsv
for v in HIT_ROUNDS FIXED_ROUNDS FIXED_QPS HIT_SECONDS MISS_NAMES MISS_ROUNDS; do
    [[ ${!v} =~ ^[0-9]+$ && ${!v} -ge 1 && ${!v} -le 10000000 ]] || {
        echo "$v must be a positive integer (got '${!v}')" >&2
        exit 1
    }
done
for q in "${MISS_QS[@]}"; do
    [[ $q =~ ^[1-9][0-9]{0,3}$ ]] || {
        echo "BENCH_MISS_OUTSTANDING: each value must be 1..9999 (got '$q')" >&2
        exit 1
    }
done
((HIT_SECONDS <= 60 && HIT_ROUNDS <= 20 && FIXED_ROUNDS <= 20 && MISS_ROUNDS <= 10 && MISS_NAMES <= 2000000)) || {
    echo "bounds: BENCH_HIT_SECONDS <= 60, rounds <= 20 (miss rounds <= 10), BENCH_MISS_NAMES <= 2000000" >&2
    exit 1
}

stb_preflight openssl unbound unbound-checkconf kdig dnsperf nft ss awk getconf \
    $(bench_peer_tools dnsmasq) $(bench_peer_tools stubby)
[[ -x $STUBBORN_BIN ]] || stb_fatal "$STB_NAME" "stubborn binary not found: $STUBBORN_BIN (cargo build --release --locked)"
mkdir -p "$(dirname "$OUT")"
NS=$(stb_ns_name cache)
stb_ns_create "$NS"
T=$STB_TMP
stb_log "namespace $NS, temp dir $T, report $OUT"
START=$(date +%s)
LOAD_START=$(bench_loadavg)

# --- upstream -------------------------------------------------------------------------------
bench_start_dot_upstream "$NS" "$T"
got=$(stb_exec "$NS" kdig @127.0.0.2 -p 853 +tls +tls-pin="$PIN" +time=2 +retry=0 +short u7.flood.test)
[[ $got == 192.0.2.1 ]] || stb_fatal "$STB_NAME" "upstream: u7.flood.test answered '$got', want 192.0.2.1" "$T/upstream.log"

# --- peer configs -------------------------------------------------------------------------------
write_configs() { # TAG STUBBORN_EXTRA_TOML
    bench_conf_stubborn "$(bench_conf_file "$T" stubborn "$1")" strict "$PIN" "$2" 127.0.0.2
    bench_conf_unbound "$(bench_conf_file "$T" unbound "$1")" "$T" 2 127.0.0.2
    bench_conf_stubby "$(bench_conf_file "$T" stubby "$1")" "$T" strict "$PIN" 127.0.0.2
    bench_conf_dnsmasq "$(bench_conf_file "$T" dnsmasq "$1")" "127.0.0.2#53"
}
CACHE_TOML="[cache]
max_entries = $MAX_ENTRIES"
write_configs bench "$CACHE_TOML"

for ((n = 1; n <= HIT_NAMES; n++)); do echo "q$n.test A"; done >"$T/hit.queries"
for ((n = 1; n <= MISS_NAMES; n++)); do echo "u$n.flood.test A"; done >"$T/miss.queries"

# dnsperf_run OUTFILE PORT ARGS...: dnsperf inside the namespace against 127.0.0.1:PORT.
dnsperf_run() {
    local out=$1 port=$2
    shift 2
    stb_exec "$NS" dnsperf -s 127.0.0.1 -p "$port" "$@" >"$out" 2>&1 || true
    grep -q '^Statistics:' "$out" || stb_fatal "$STB_NAME" "dnsperf gave no statistics (port $port: $*)" "$out"
}

# measure PHASE PEER ROUND PID OUTFILE PORT DNSPERF_ARGS...: one dnsperf run with the peer's
# CPU time around it; appends "phase peer round qps avg_ms completed lost cpu_us_per_query
# rcodes" to $TSV.
# CPU µs per query from two tick counts (per_query T0 T1 N).
per_query() { awk -v t=$(($2 - $1)) -v hz="$BENCH_CLK_TCK" -v n="$3" 'BEGIN { printf "%.2f", (n > 0 ? t * 1e6 / hz / n : 0) }'; }

# measure PHASE PEER ROUND PID OUTFILE PORT DNSPERF_ARGS...: one dnsperf run with the peer's
# (and the upstream's) CPU time around it; appends "phase peer round qps avg_ms completed
# lost cpu_us_per_query rcodes upstream_cpu_us_per_query upstream_threads_busy" to $TSV.
measure() {
    local phase=$1 peer=$2 round=$3 pid=$4 out=$5 port=$6 c0 c1 u0 u1 completed cpu ucpu
    shift 6
    bench_task_ticks "$UPSTREAM_PID" >"$T/upstream-threads.0"
    u0=$(bench_cpu_ticks "$UPSTREAM_PID")
    c0=$(bench_cpu_ticks "$pid")
    dnsperf_run "$out" "$port" "$@"
    c1=$(bench_cpu_ticks "$pid")
    u1=$(bench_cpu_ticks "$UPSTREAM_PID")
    bench_task_ticks "$UPSTREAM_PID" >"$T/upstream-threads.1"
    completed=$(bench_dp "$out" completed)
    cpu=$(per_query "$c0" "$c1" "$completed")
    ucpu=$(per_query "$u0" "$u1" "$completed")
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$phase" "$peer" "$round" "$(bench_dp "$out" qps)" \
        "$(bench_dp "$out" avg_ms)" "$completed" "$(bench_dp "$out" lost)" "$cpu" "$(bench_dp_rcodes "$out")" "$ucpu" \
        "$(bench_busy_threads "$T/upstream-threads.0" "$T/upstream-threads.1")" >>"$TSV"
    stb_log "$phase $peer round $round: $(bench_dp "$out" qps) qps, mean $(bench_dp "$out" avg_ms) ms, lost $(bench_dp "$out" lost), ${cpu} µs CPU/query (upstream ${ucpu})"
}

: >"$TSV"
: >"$T/rss.tsv"
# The dnsperf load options of the saturating cache-hit runs, one set per table, separated
# by ';'. -q 500 is the load the lead used; -q 100 loses no query to a full socket buffer.
IFS=';' read -r -a HIT_LOADS <<<"${BENCH_HIT_DNSPERF:--c 16 -T 2 -q 500;-c 16 -T 2 -q 100}"
read -r -a DP_LOAD <<<"${HIT_LOADS[0]}" # the fixed-rate runs use the first

# --- 1. cache hits ------------------------------------------------------------------------------
if [[ $PHASES == *" hit "* ]]; then
    declare -A PID=()
    for peer in "${HIT_PEERS[@]}"; do
        bench_start_peer "$NS" "$T" "$peer" bench
        PID[$peer]=$BENCH_PID
        dnsperf_run "$T/warm-$peer.dnsperf" "$(bench_port "$peer")" -d "$T/hit.queries" -n 1 -l 10 -t 5
        [[ $(bench_dp "$T/warm-$peer.dnsperf" completed) == "$HIT_NAMES" ]] ||
            stb_fatal "$STB_NAME" "$peer: the warm-up did not answer all $HIT_NAMES names" "$T/warm-$peer.dnsperf" "$T/bench-$peer.log"
    done
    for i in "${!HIT_LOADS[@]}"; do
        read -r -a load <<<"${HIT_LOADS[$i]}"
        bench_wait_quiet "the cache-hit runs with ${HIT_LOADS[$i]}"
        for ((round = 1; round <= HIT_ROUNDS; round++)); do
            for peer in "${HIT_PEERS[@]}"; do
                measure "hit$i" "$peer" "$round" "${PID[$peer]}" "$T/hit$i-$peer-$round.dnsperf" "$(bench_port "$peer")" \
                    -d "$T/hit.queries" "${load[@]}" -l "$HIT_SECONDS" -n 100000000 -t 5
            done
        done
    done
    bench_wait_quiet "the fixed-rate runs"
    for ((round = 1; round <= FIXED_ROUNDS; round++)); do
        for peer in "${HIT_PEERS[@]}"; do
            measure fixed "$peer" "$round" "${PID[$peer]}" "$T/fixed-$peer-$round.dnsperf" "$(bench_port "$peer")" \
                -d "$T/hit.queries" "${DP_LOAD[@]}" -Q "$FIXED_QPS" -l "$HIT_SECONDS" -n 100000000 -t 5
        done
    done
    for peer in "${HIT_PEERS[@]}"; do
        stb_stop "${PID[$peer]}" 50
    done
fi

# --- 2. cache misses over DoT, memory -----------------------------------------------------------
if [[ $PHASES == *" miss "* ]]; then
    for q in "${MISS_QS[@]}"; do
        bench_wait_quiet "the cache-miss runs with -q $q"
        for ((round = 1; round <= MISS_ROUNDS; round++)); do
            for peer in "${MISS_PEERS[@]}"; do
                bench_start_peer "$NS" "$T" "$peer" bench
                pid=$BENCH_PID
                sleep 2
                idle=$(bench_rss_kib "$pid")
                out=$T/miss$q-$peer-$round.dnsperf
                if [[ -n ${BENCH_PERF:-} && $peer == stubborn && $round == 1 ]]; then
                    # A 3 s CPU profile from 1 s into the run (a build with symbols helps).
                    (sleep 1 && perf record -F 1999 -g -p "$pid" -o "$BENCH_PERF.miss$q.data" -- sleep 3) >/dev/null 2>&1 &
                fi
                measure "miss$q" "$peer" "$round" "$pid" "$out" "$(bench_port "$peer")" \
                    -d "$T/miss.queries" -c 16 -T 2 -q "$q" -n 1 -l 90 -t 5 -v
                after=$(bench_rss_kib "$pid")
                read -r p50 p90 p99 pmax _ <<<"$(bench_dp_percentiles "$out")"
                printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$peer" "$idle" "$after" "$(bench_dp "$out" completed)" \
                    "$p50" "$p90" "$p99" "$pmax" "$q" "$round" >>"$T/rss.tsv"
                # dnsperf -v wrote one line per query: keep the statistics only.
                sed -i '/^> /d' "$out"
                stb_log "miss -q $q round $round $peer: RSS idle $idle KiB, after $after KiB; p50 $p50 p99 $p99 ms"
                stb_stop "$pid" 100
            done
        done
    done
fi
ELAPSED=$(($(date +%s) - START))
LOAD_END=$(bench_loadavg)

rm -rf "$(dirname "$OUT")/cache-configs"
mkdir -p "$(dirname "$OUT")/cache-configs"
cp "$T"/bench-stubborn.toml "$T"/bench-unbound.conf "$T"/bench-stubby.yml "$T"/bench-dnsmasq.args \
    "$T/upstream.conf" "$(dirname "$OUT")/cache-configs/" 2>/dev/null || true
sed -i '/local-data: "q[0-9]*\.test/d' "$(dirname "$OUT")/cache-configs/upstream.conf" 2>/dev/null || true
cp "$T/rss.tsv" "${OUT%.md}.rss.tsv"

# --- report -------------------------------------------------------------------------------------
# med PHASE PEER COLUMN: the median of a TSV column (4 qps, 5 avg_ms, 8 cpu µs/query).
med() { awk -F'\t' -v p="$1" -v q="$2" -v c="$3" '$1 == p && $2 == q { print $c }' "$TSV" | bench_median; }
each() { awk -F'\t' -v p="$1" -v q="$2" -v c="$3" '$1 == p && $2 == q { printf "%s%s", (n++ ? ", " : ""), $c }' "$TSV"; }
fmt() { awk -v v="$1" -v d="${2:-0}" 'BEGIN { if (v ~ /^[0-9.]+$/) printf "%.*f", d, v; else print v }'; }
mib() { awk -v k="$1" 'BEGIN { if (k ~ /^[0-9]+$/) printf "%.1f", k / 1024; else print "-" }'; }
verdict() { [[ $1 == 1 ]] && echo "**met**" || echo "**not met**"; }
# rss_col PEER Q COLUMN: one value per miss round from rss.tsv (2 idle KiB, 3 after KiB,
# 4 answered, 5..8 p50..max ms).
rss_col() { awk -F'\t' -v p="$1" -v m="$2" -v c="$3" '$1 == p && $9 == m { print $c }' "$T/rss.tsv"; }
# joined [mib]: the values on stdin as "a, b, c" (with mib: KiB shown as MiB).
joined() { awk -v mib="${1:-}" '{ printf "%s", (NR > 1 ? ", " : ""); if (mib) printf "%.1f", $1 / 1024; else printf "%s", $1 }'; }
# round_ratios PHASE PEER OTHER: PEER's QPS over OTHER's, round by round.
round_ratios() {
    local r a b sep=""
    for ((r = 1; r <= MISS_ROUNDS; r++)); do
        a=$(awk -F'\t' -v p="$1" -v q="$2" -v r="$r" '$1 == p && $2 == q && $3 == r { print $4 }' "$TSV")
        b=$(awk -F'\t' -v p="$1" -v q="$3" -v r="$r" '$1 == p && $2 == q && $3 == r { print $4 }' "$TSV")
        printf '%s%s' "$sep" "$(bench_ratio "$a" "$b")"
        sep=", "
    done
}

{
    echo "### Results ($(date -u '+%Y-%m-%d %H:%M UTC'); ${ELAPSED} s)"
    echo
    echo "Machine: $(bench_machine); load average $LOAD_START at the start, $LOAD_END at the end."
    echo "Versions: $(bench_peer_version stubborn); $(bench_peer_version unbound) (forwarder and upstream); $(bench_peer_version dnsmasq); $(bench_peer_version stubby); $(dnsperf -h 2>&1 | sed -n 's/^Version /dnsperf /p')."
    echo
    echo "Load before each phase:"
    echo
    printf '%s' "$BENCH_LOAD_NOTES"
    echo
    if [[ $PHASES == *" hit "* ]]; then
        for i in "${!HIT_LOADS[@]}"; do
            su=$(med "hit$i" unbound 4)
            lu=$(med "hit$i" unbound 5)
            echo "#### Cache hits, saturating: \`dnsperf ${HIT_LOADS[$i]} -l $HIT_SECONDS\`, $HIT_NAMES names, $HIT_ROUNDS runs per peer, alternating"
            echo
            echo "| resolver | QPS (median) | QPS each run | mean latency ms (median) | CPU µs/query (median) | QPS vs unbound | latency vs unbound | lost (all runs) |"
            echo "|---|---|---|---|---|---|---|---|"
            for peer in "${HIT_PEERS[@]}"; do
                q=$(med "hit$i" "$peer" 4)
                l=$(med "hit$i" "$peer" 5)
                lost=$(awk -F'\t' -v p="hit$i" -v q="$peer" '$1 == p && $2 == q { s += $7 } END { print s + 0 }' "$TSV")
                echo "| $peer | $(fmt "$q") | $(each "hit$i" "$peer" 4 | awk -F', ' '{ for (i = 1; i <= NF; i++) printf "%s%.0f", (i > 1 ? ", " : ""), $i }') | $(fmt "$l" 3) | $(fmt "$(med "hit$i" "$peer" 8)" 1) | $(bench_ratio "$q" "$su") | $(bench_ratio "$l" "$lu") | $lost |"
            done
            echo
        done
        echo "#### Cache hits at a fixed rate: \`dnsperf ${DP_LOAD[*]} -Q $FIXED_QPS -l $HIT_SECONDS\`, $FIXED_ROUNDS runs per peer"
        echo
        echo "| resolver | achieved QPS (median) | mean latency ms (median) | mean latency each run | CPU µs/query (median) | latency vs unbound | CPU vs unbound |"
        echo "|---|---|---|---|---|---|---|"
        fu=$(med fixed unbound 5)
        cu=$(med fixed unbound 8)
        for peer in "${HIT_PEERS[@]}"; do
            l=$(med fixed "$peer" 5)
            c=$(med fixed "$peer" 8)
            echo "| $peer | $(fmt "$(med fixed "$peer" 4)") | $(fmt "$l" 3) | $(each fixed "$peer" 5) | $(fmt "$c" 1) | $(bench_ratio "$l" "$fu") | $(bench_ratio "$c" "$cu") |"
        done
        echo
    fi
    if [[ $PHASES == *" miss "* ]]; then
        declare -A BEST=() BESTPEER=()
        for mq in "${MISS_QS[@]}"; do
            best=""
            bestpeer=""
            for peer in unbound stubby; do
                q=$(med "miss$mq" "$peer" 4)
                if [[ -z $best ]] || awk -v a="$q" -v b="$best" 'BEGIN { exit !(a > b) }'; then
                    best=$q
                    bestpeer=$peer
                fi
            done
            BEST[$mq]=$best
            BESTPEER[$mq]=$bestpeer
            echo "#### Cache misses over DoT: $MISS_NAMES distinct names once each, \`dnsperf -c 16 -T 2 -q $mq -n 1 -l 90 -t 5\`, $MISS_ROUNDS rounds, each peer freshly started and alone"
            echo
            echo "| resolver | QPS (median) | QPS each round | mean latency ms | p50 / p90 / p99 / max ms | answered (all rounds) | lost (all rounds) | rcodes (round 1) | CPU µs/query | upstream's CPU µs/query | QPS vs best DoT peer ($bestpeer) | the same, each round | upstream threads serving, each round |"
            echo "|---|---|---|---|---|---|---|---|---|---|---|---|---|"
            for peer in "${MISS_PEERS[@]}"; do
                q=$(med "miss$mq" "$peer" 4)
                done=$(awk -F'\t' -v p="miss$mq" -v q="$peer" '$1 == p && $2 == q { s += $6 } END { print s + 0 }' "$TSV")
                lost=$(awk -F'\t' -v p="miss$mq" -v q="$peer" '$1 == p && $2 == q { s += $7 } END { print s + 0 }' "$TSV")
                rc=$(awk -F'\t' -v p="miss$mq" -v q="$peer" '$1 == p && $2 == q && $3 == 1 { print $9 }' "$TSV")
                pct=$(for c in 5 6 7 8; do rss_col "$peer" "$mq" "$c" | bench_median; done | paste -sd/ | sed 's|/| / |g')
                echo "| $peer | $(fmt "$q") | $(each "miss$mq" "$peer" 4 | awk -F', ' '{ for (i = 1; i <= NF; i++) printf "%s%.0f", (i > 1 ? ", " : ""), $i }') | $(fmt "$(med "miss$mq" "$peer" 5)" 3) | $pct | $done/$((MISS_NAMES * MISS_ROUNDS)) | $lost | $rc | $(fmt "$(med "miss$mq" "$peer" 8)" 1) | $(fmt "$(med "miss$mq" "$peer" 10)" 1) | $(bench_ratio "$q" "$best") | $(round_ratios "miss$mq" "$peer" "$bestpeer") | $(each "miss$mq" "$peer" 11) |"
            done
            echo
        done
        echo "#### Memory (VmRSS): idle = 2 s after start, no query yet; after = right after a miss run; each round"
        echo
        echo "| resolver | miss run | idle MiB | after the miss run MiB | names answered in each run |"
        echo "|---|---|---|---|---|"
        for mq in "${MISS_QS[@]}"; do
            for peer in "${MISS_PEERS[@]}"; do
                [[ -n $(rss_col "$peer" "$mq" 2) ]] || continue
                echo "| $peer | -q $mq | $(rss_col "$peer" "$mq" 2 | joined mib) | $(rss_col "$peer" "$mq" 3 | joined mib) | $(rss_col "$peer" "$mq" 4 | joined) |"
            done
        done
        echo
    fi
    echo "#### Targets (issue 5), this run"
    echo
    if [[ $PHASES == *" hit "* ]]; then
        for i in "${!HIT_LOADS[@]}"; do
            qs=$(med "hit$i" stubborn 4)
            ls=$(med "hit$i" stubborn 5)
            su=$(med "hit$i" unbound 4)
            lu=$(med "hit$i" unbound 5)
            ok=$(awk -v a="$qs" -v b="$su" 'BEGIN { print (a >= 1.25 * b) ? 1 : 0 }')
            echo "- cache-hit QPS ≥ 1.25 × unbound's (\`${HIT_LOADS[$i]}\`): $(fmt "$qs") vs $(fmt "$su") = $(bench_ratio "$qs" "$su") → $(verdict "$ok")"
            ok=$(awk -v a="$ls" -v b="$lu" 'BEGIN { print (a <= b) ? 1 : 0 }')
            echo "  - with lower or equal mean latency in the same saturating runs: $(fmt "$ls" 3) vs $(fmt "$lu" 3) ms → $(verdict "$ok")"
        done
        ls=$(med fixed stubborn 5)
        ok=$(awk -v a="$ls" -v b="$fu" 'BEGIN { print (a <= b) ? 1 : 0 }')
        echo "- mean latency at equal load ($FIXED_QPS QPS) ≤ unbound's: $(fmt "$ls" 3) vs $(fmt "$fu" 3) ms → $(verdict "$ok")"
    fi
    if [[ $PHASES == *" miss "* ]]; then
        for mq in "${MISS_QS[@]}"; do
            qs=$(med "miss$mq" stubborn 4)
            ok=$(awk -v a="$qs" -v b="${BEST[$mq]}" 'BEGIN { print (a >= 1.5 * b) ? 1 : 0 }')
            echo "- miss QPS over DoT ≥ 1.5 × the best DoT peer (-q $mq: ${BESTPEER[$mq]}), medians of $MISS_ROUNDS rounds: $(fmt "$qs") vs $(fmt "${BEST[$mq]}") = $(bench_ratio "$qs" "${BEST[$mq]}") → $(verdict "$ok"); each round: $(round_ratios "miss$mq" stubborn "${BESTPEER[$mq]}")"
        done
        for mq in "${MISS_QS[@]}"; do
            idle=$(rss_col stubborn "$mq" 2 | sort -g | tail -n 1)
            after=$(rss_col stubborn "$mq" 3 | sort -g | tail -n 1)
            ok=$(awk -v k="$idle" 'BEGIN { print (k <= 8 * 1024) ? 1 : 0 }')
            echo "- idle RSS ≤ 8 MiB (the largest of the starts before the -q $mq runs): $(mib "$idle") MiB → $(verdict "$ok")"
            ok=$(awk -v k="$after" 'BEGIN { print (k <= 74 * 1024) ? 1 : 0 }')
            echo "- RSS after the $MISS_NAMES-name runs (-q $mq, the largest) with max_entries = $MAX_ENTRIES ≤ max_bytes (64 MiB, the default) + 10 MiB = 74 MiB: $(mib "$after") MiB → $(verdict "$ok")"
        done
    fi
    echo
} >"$OUT"
cat "$OUT"
