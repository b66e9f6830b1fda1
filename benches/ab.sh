#!/usr/bin/env bash
# A/B comparison of stubborn builds (or settings) side by side, for deciding a change by
# measurement: the cache benchmark's setup (one network namespace, unbound serving DoT
# from local data on 127.0.0.2:853, dnsperf against 127.0.0.1), with the variants run
# in turn, each freshly started, for several interleaved rounds, so that machine noise
# falls on all of them alike. docs/benchmarks.md quotes its runs for the miss-path and
# front-end decisions.
#
# Usage: sudo bash benches/ab.sh [--hits [--rate QPS]] [-r ROUNDS] [-n NAMES] [-q OUTSTANDING]
#                               VARIANT...
#   VARIANT  LABEL=BINARY[:VAR=VALUE,...]  a stubborn binary, run with those environment
#                                          variables (e.g. TOKIO_WORKER_THREADS=1)
#            unbound                       unbound as a DoT forwarder with its cache
#   default: cache misses, NAMES (50000) distinct names once each at dnsperf -q 100,
#            3 rounds; --hits: 8 s of cache hits over 10 warmed names instead, as fast as
#            they are answered or, with --rate, at that many queries per second.
#   AB_CACHE_TOML replaces stubborn's [cache] table (default: max_entries = 100000).
#
# One line per run: QPS, mean latency (ms), the variant's CPU µs per query (utime+stime over answered
# queries), the upstream's, VmRSS right after the run, lost queries, context switches of
# all its threads per query, and how many upstream threads served the run. Then the
# median of each column per variant. BENCH_UPSTREAM_THREADS sets the upstream's threads
# (default 8; see bench_start_dot_upstream in benches/lib.sh).
# Exit status: 0 when every run completed; 1 on a setup failure; 77 when it cannot run.

. "$(dirname "$0")/../tests/netns/lib.sh"
. "$(dirname "$0")/lib.sh"
STB_NAME=bench-ab

HITS=0 RATE=0 ROUNDS=3 NAMES=50000 Q=100
while (($#)); do
    case $1 in
    --hits) HITS=1 ;;
    --rate) RATE=$2 && shift ;;
    -r) ROUNDS=$2 && shift ;;
    -n) NAMES=$2 && shift ;;
    -q) Q=$2 && shift ;;
    *) break ;;
    esac
    shift
done
(($# >= 1)) || {
    echo "usage: $0 [--hits] [-r ROUNDS] [-n NAMES] [-q OUTSTANDING] LABEL=BINARY[:VAR=VALUE,...]|unbound ..." >&2
    exit 1
}
[[ $ROUNDS =~ ^[0-9]+$ && $NAMES =~ ^[0-9]+$ && $Q =~ ^[0-9]+$ && $RATE =~ ^[0-9]+$ ]] &&
    ((ROUNDS >= 1 && ROUNDS <= 20 && NAMES >= 1 && NAMES <= 2000000 && Q >= 1 && Q <= 9999 && RATE <= 1000000)) || {
    echo "bounds: 1 <= ROUNDS <= 20, 1 <= NAMES <= 2000000, 1 <= OUTSTANDING <= 9999, RATE <= 1000000" >&2
    exit 1
}
for v in "$@"; do
    [[ $v == unbound || $v =~ ^[A-Za-z0-9_-]+=[^:]+(:.*)?$ ]] || {
        echo "bad variant '$v': LABEL=BINARY[:VAR=VALUE,...] or unbound" >&2
        exit 1
    }
    if [[ $v != unbound ]]; then
        bin=${v#*=}
        bin=${bin%%:*}
        [[ -x $bin ]] || stb_fatal "$STB_NAME" "$v: $bin is not an executable"
    fi
done

stb_preflight openssl unbound unbound-checkconf kdig dnsperf awk
NS=$(stb_ns_name ab)
stb_ns_create "$NS"
T=$STB_TMP
bench_start_dot_upstream "$NS" "$T"
bench_conf_stubborn "$T/ab-stubborn.toml" strict "$PIN" "${AB_CACHE_TOML:-[cache]
max_entries = 100000}" 127.0.0.2
bench_conf_unbound "$(bench_conf_file "$T" unbound ab)" "$T" 2 127.0.0.2
for ((n = 1; n <= NAMES; n++)); do echo "u$n.flood.test A"; done >"$T/miss.queries"
for ((n = 1; n <= 10; n++)); do echo "q$n.test A"; done >"$T/hit.queries"

switches() { cat /proc/"$1"/task/*/status 2>/dev/null | awk '/ctxt_switches/ { s += $2 } END { print s + 0 }'; }
per_query() { awk -v t="$1" -v n="$2" -v k="$3" 'BEGIN { printf "%.2f", (n > 0 ? t * k / n : 0) }'; }

RESULTS=$T/results.tsv
: >"$RESULTS"
for ((round = 1; round <= ROUNDS; round++)); do
    for v in "$@"; do
        label=${v%%=*}
        if [[ $v == unbound ]]; then
            bench_start_peer "$NS" "$T" unbound ab
            pid=$BENCH_PID port=5300
        else
            spec=${v#*=}
            bin=${spec%%:*} envs=
            [[ $spec == *:* ]] && envs=${spec#*:}
            IFS=, read -r -a vars <<<"$envs"
            stb_spawn "$NS" "$T/ab-$label.log" env "${vars[@]}" "$bin" --config "$T/ab-stubborn.toml"
            pid=$STB_LAST_PID port=53
            stb_wait_listening "$NS" "$pid" both 53 127.0.0.1 100 ||
                stb_fatal "$STB_NAME" "$label did not come up" "$T/ab-$label.log"
        fi
        sleep 1
        out=$T/run.dnsperf
        if ((HITS)); then
            stb_exec "$NS" dnsperf -s 127.0.0.1 -p "$port" -d "$T/hit.queries" -n 1 -l 10 -t 5 >/dev/null 2>&1 || true
            load=(-d "$T/hit.queries" -c 16 -T 2 -q "$Q" -l 8 -n 100000000 -t 5)
            ((RATE)) && load+=(-Q "$RATE")
        else
            load=(-d "$T/miss.queries" -c 16 -T 2 -q "$Q" -n 1 -l 60 -t 5)
        fi
        bench_task_ticks "$UPSTREAM_PID" >"$T/upstream-threads.0"
        c0=$(bench_cpu_ticks "$pid") u0=$(bench_cpu_ticks "$UPSTREAM_PID") s0=$(switches "$pid")
        stb_exec "$NS" dnsperf -s 127.0.0.1 -p "$port" "${load[@]}" >"$out" 2>&1 || true
        c1=$(bench_cpu_ticks "$pid") u1=$(bench_cpu_ticks "$UPSTREAM_PID") s1=$(switches "$pid")
        bench_task_ticks "$UPSTREAM_PID" >"$T/upstream-threads.1"
        rss=$(bench_rss_kib "$pid")
        grep -q '^Statistics:' "$out" || stb_fatal "$STB_NAME" "dnsperf gave no statistics ($label)" "$out"
        n=$(bench_dp "$out" completed)
        tick_us=$((1000000 / BENCH_CLK_TCK))
        printf '%s\t%s\t%.0f\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$label" "$round" "$(bench_dp "$out" qps)" "$(bench_dp "$out" avg_ms)" \
            "$(per_query $((c1 - c0)) "$n" "$tick_us")" "$(per_query $((u1 - u0)) "$n" "$tick_us")" \
            "$((rss / 1024))" "$(bench_dp "$out" lost)" "$(per_query $((s1 - s0)) "$n" 1)" \
            "$(bench_busy_threads "$T/upstream-threads.0" "$T/upstream-threads.1")" | tee -a "$RESULTS"
        stb_stop "$pid" 50
    done
done

echo
echo "median of $ROUNDS rounds ($( ((HITS)) && echo "cache hits, -q $Q, rate ${RATE:-0} (0: as fast as answered)" || echo "$NAMES cache misses, -q $Q")):"
printf 'variant\tQPS\tmean ms\tCPU µs/q\tupstream µs/q\tRSS MiB\tlost\tswitches/q\tupstream threads\n'
for v in "$@"; do
    label=${v%%=*}
    row=$label
    for col in 3 4 5 6 7 8 9 10; do
        row+=$'\t'$(awk -F'\t' -v l="$label" -v c="$col" '$1 == l { print $c }' "$RESULTS" | sort -g |
            awk '{ a[NR] = $1 } END { print (NR % 2 ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2) }')
    done
    echo "$row"
done
