#!/usr/bin/env bash
# benches/resilience.sh — hedging and loss (issue 4, item 9): stubborn, unbound (as a DoT
# forwarder) and stubby against the same two DoT upstreams, healthy, after a mid-stream
# blackhole, and under 5% random packet loss. A benchmark, not a test: it asserts nothing,
# it measures and prints a Markdown report.
#
# Root only: everything runs in a private network namespace (only `lo`), made and removed
# through tests/netns/lib.sh. No packet leaves it.
#
# Upstreams: two unbound processes serving the same local data over DoT, on 127.0.0.2:853 and
# 127.0.0.3:853, each logging every query it receives (log-queries), so the queries each
# upstream got are counted by name. Every name under flood.test answers A 192.0.2.1
# (`local-zone: "flood.test." redirect`), so each run uses names no one has asked before
# (e.g. h17.stubborn.flood.test): never a cache hit.
#
# Resolvers (configs from benches/lib.sh), each freshly started for every scenario, alone:
#   stubborn :53    both upstreams, .2 first, pinned; [hedging] and [health] defaults
#   unbound  :5300  forward-tls-upstream to both (CA + name); packaged defaults, 1 thread
#   stubby   :5301  both upstreams, .2 first (round_robin_upstreams: 0), pinned, TLS only
#
# Scenarios:
#  (a) healthy: 3 warm-up queries, then BENCH_HEALTHY_NAMES fresh names once each through
#      dnsperf (-Q 1000 -q 50 -t 5): the queries the upstreams received for those names
#      against the client's; the surplus is hedging (or retries).
#  (b) mid-stream blackhole, BENCH_ROUNDS fresh starts per resolver: 5 warm-up queries
#      (connections up; stubborn's primary is .2 and its spare .3), then every packet from or
#      to 127.0.0.2 is dropped (nft, output and input hooks), .3 stays healthy, and the next
#      20 fresh names are asked one after another (kdig +time=2 +retry=0): each answer's
#      latency. Target (stubborn): each ≤ 2 × RTT + 150 ms, RTT = the median latency of
#      stubborn's warm-up queries 2..5 (through stubborn: an upper bound of the loopback RTT).
#  (c) 5% random loss both ways on the upstream path (nft `numgen random mod 100 < 5 drop`
#      on tcp dport 853 to .2/.3 and tcp sport 853 from them): 1000 fresh names through
#      dnsperf (-n 1 -Q 500 -q 50 -t 5 -v): lost, rcodes, p50/p99/max latency.
#
# Environment: STUBBORN_BIN (default target/release/stubborn), BENCH_PEERS (default
# "stubborn unbound stubby"), BENCH_ROUNDS (blackhole starts per resolver, default 2),
# BENCH_HEALTHY_NAMES (default 5000), BENCH_LOAD_MAX / BENCH_QUIET_WAIT (the wait for a quiet
# machine, see benches/lib.sh), BENCH_OUT (report, default target/bench/resilience.md; raw
# data next to it as resilience.tsv, configs in resilience-configs/).
# Exit status: 0 when the report was written; 1 on a setup failure; 77 when it cannot run.

. "$(dirname "$0")/../tests/netns/lib.sh"
. "$(dirname "$0")/lib.sh"
STB_NAME=bench-resilience

PEERS=(${BENCH_PEERS:-stubborn unbound stubby})
ROUNDS=${BENCH_ROUNDS:-2}
HEALTHY_NAMES=${BENCH_HEALTHY_NAMES:-5000}
LOSS_NAMES=1000
NEXT=20
OUT=${BENCH_OUT:-$STB_REPO_ROOT/target/bench/resilience.md}
TSV=${OUT%.md}.tsv
[[ $ROUNDS =~ ^[1-9]$ ]] || {
    echo "BENCH_ROUNDS must be 1..9" >&2
    exit 1
}
[[ $HEALTHY_NAMES =~ ^[1-9][0-9]{0,5}$ ]] || {
    echo "BENCH_HEALTHY_NAMES must be 1..999999" >&2
    exit 1
}

tools=(openssl unbound unbound-checkconf kdig dnsperf nft ss awk)
for p in "${PEERS[@]}"; do
    case $p in stubborn | unbound | stubby) tools+=($(bench_peer_tools "$p")) ;; *)
        echo "unknown peer '$p'" >&2
        exit 1
        ;;
    esac
done
stb_preflight "${tools[@]}"
[[ " ${PEERS[*]} " != *" stubborn "* || -x $STUBBORN_BIN ]] ||
    stb_fatal "$STB_NAME" "stubborn binary not found: $STUBBORN_BIN (cargo build --release --locked)"
mkdir -p "$(dirname "$OUT")"
NS=$(stb_ns_name resil)
stb_ns_create "$NS"
T=$STB_TMP
TABLE=stb_bench_resil
stb_log "namespace $NS, temp dir $T, report $OUT"
START=$(date +%s)
LOAD_START=$(bench_loadavg)

# --- upstreams --------------------------------------------------------------------------------
stb_make_pki "$T" || stb_fatal "$STB_NAME" "openssl failed" "$T/openssl.log"
PIN=$STB_PIN
declare -A UPLOG=()
for ip in 127.0.0.2 127.0.0.3; do
    STB_UPSTREAM_FLOOD_ZONE=flood.test stb_unbound_upstream_conf "$T/upstream-$ip.conf" "$T" "$ip@853"
    stb_start_unbound "$NS" "$T/upstream-$ip.conf" "$T/upstream-$ip.log" "$ip@853"
    UPLOG[$ip]=$T/upstream-$ip.log
done
for ip in 127.0.0.2 127.0.0.3; do
    stb_retry 30 stb_exec "$NS" kdig @"$ip" -p 853 +tls +tls-pin="$PIN" +time=2 +retry=0 +short a.test ||
        stb_fatal "$STB_NAME" "upstream unbound does not answer DoT on $ip" "${UPLOG[$ip]}"
done

# upstream_count IP REGEX: queries that upstream logged whose (lowercased) name matches the
# awk REGEX (the name as logged, with its trailing dot).
upstream_count() {
    awk -v re="$2" '/ IN$/ { if (tolower($(NF - 2)) ~ re) n++ } END { print n + 0 }' "${UPLOG[$1]}"
}

# --- resolvers ----------------------------------------------------------------------------------
HEALTH_TOML='[hedging]
enabled = true
floor_ms = 50
cap_ms = 1000
spare = true

[health]
dead_after_unanswered = 3
dead_after_silence_ms = 2000'

# start PEER TAG: write its config and start it (BENCH_PID). stubborn logs its hedges (debug
# for the pool module only).
start() {
    local peer=$1 tag=$2
    case $peer in
    stubborn) bench_conf_stubborn "$(bench_conf_file "$T" stubborn "$tag")" strict "$PIN" "$HEALTH_TOML" 127.0.0.2 127.0.0.3 ;;
    unbound) bench_conf_unbound "$(bench_conf_file "$T" unbound "$tag")" "$T" 1 127.0.0.2 127.0.0.3 ;;
    stubby) bench_conf_stubby "$(bench_conf_file "$T" stubby "$tag")" "$T" strict "$PIN" 127.0.0.2 127.0.0.3 ;;
    esac
    RUST_LOG=info,hickory_proto=warn,stubborn::upstream::pool=debug bench_start_peer "$NS" "$T" "$peer" "$tag"
}

# dnsperf_run OUT PORT ARGS...
dnsperf_run() {
    local out=$1 port=$2
    shift 2
    stb_exec "$NS" dnsperf -s 127.0.0.1 -p "$port" "$@" >"$out" 2>&1 || true
    grep -q '^Statistics:' "$out" || stb_fatal "$STB_NAME" "dnsperf gave no statistics (port $port: $*)" "$out"
}

# warm PEER NAME_PREFIX COUNT: COUNT sequential fresh queries; prints their kdig ms.
warm() {
    local peer=$1 prefix=$2 count=$3 i r
    for ((i = 1; i <= count; i++)); do
        r=$(bench_query "$NS" "$(bench_port "$peer")" "$prefix$i.$peer.flood.test" 2 192.0.2.1)
        echo "${r#* }" | cut -d' ' -f1
    done
}

: >"$TSV"
# TSV rows:
#   healthy PEER client_queries upstream_2 upstream_3 completed lost p50 p99 hedge_lines
#   bh      PEER ROUND N STATUS MS            (N = 1..20)
#   bhwarm  PEER ROUND warm_ms... | to_2 to_3 (which upstream the warm-up queries reached)
#   loss    PEER sent completed lost p50 p90 p99 max upstream_total rcodes drop_out drop_in hedges

# --- (a) healthy ---------------------------------------------------------------------------------------
bench_wait_quiet "(a) healthy"
for peer in "${PEERS[@]}"; do
    start "$peer" healthy
    warm "$peer" hw 3 >/dev/null
    for ((n = 1; n <= HEALTHY_NAMES; n++)); do echo "h$n.$peer.flood.test A"; done >"$T/healthy-$peer.queries"
    dnsperf_run "$T/healthy-$peer.dnsperf" "$(bench_port "$peer")" -d "$T/healthy-$peer.queries" \
        -n 1 -l 60 -t 5 -c 1 -q 50 -Q 1000 -v
    sleep 1 # let late upstream queries (hedges, retries) land in the logs
    read -r p50 _ p99 _ _ <<<"$(bench_dp_percentiles "$T/healthy-$peer.dnsperf")"
    re="^h[0-9]+\\.$peer\\.flood\\.test\\.\$"
    hedges=$(grep -c 'hedging' "$T/healthy-$peer.log" || true)
    printf 'healthy\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$peer" "$(bench_dp "$T/healthy-$peer.dnsperf" sent)" \
        "$(upstream_count 127.0.0.2 "$re")" "$(upstream_count 127.0.0.3 "$re")" \
        "$(bench_dp "$T/healthy-$peer.dnsperf" completed)" "$(bench_dp "$T/healthy-$peer.dnsperf" lost)" \
        "$p50" "$p99" "$hedges" >>"$TSV"
    sed -i '/^> /d' "$T/healthy-$peer.dnsperf"
    stb_stop "$BENCH_PID" 50
    stb_log "(a) $peer: $(tail -n 1 "$TSV")"
done

# --- (b) mid-stream blackhole of 127.0.0.2 -----------------------------------------------------------
bench_wait_quiet "(b) blackhole"
BH_RULES=("ip daddr 127.0.0.2 counter drop" "ip saddr 127.0.0.2 counter drop"
    "input: ip daddr 127.0.0.2 counter drop" "input: ip saddr 127.0.0.2 counter drop")
for ((round = 1; round <= ROUNDS; round++)); do
    for peer in "${PEERS[@]}"; do
        tag=bh$round
        start "$peer" "$tag"
        mapfile -t wms < <(warm "$peer" "w$round-" 5)
        sleep 0.5 # stubborn's warm spare comes up right after the first connection
        re="^w$round-[0-9]+\\.$peer\\.flood\\.test\\.\$"
        printf 'bhwarm\t%s\t%s\t%s\t%s\t%s\n' "$peer" "$round" "${wms[*]}" \
            "$(upstream_count 127.0.0.2 "$re")" "$(upstream_count 127.0.0.3 "$re")" >>"$TSV"
        stb_nft_table "$NS" "$TABLE" "${BH_RULES[@]}" || stb_fatal "$STB_NAME" "nft failed (blackhole)"
        for ((n = 1; n <= NEXT; n++)); do
            r=$(bench_query "$NS" "$(bench_port "$peer")" "b$round-$n.$peer.flood.test" 2 192.0.2.1)
            printf 'bh\t%s\t%s\t%s\t%s\n' "$peer" "$round" "$n" "$(cut -d' ' -f1-2 <<<"$r" | tr ' ' '\t')" >>"$TSV"
        done
        if [[ $round == 1 ]]; then
            {
                echo "$peer, round 1 — nft counters after the 20 queries:"
                stb_nft_rules "$NS" "$TABLE" | sed 's/^/    /'
            } >>"$T/bh-counters.txt"
        fi
        stb_nft_del "$NS" "$TABLE"
        if [[ $peer == stubborn ]]; then
            {
                echo "round $round:"
                grep -E 'hedging|declared dead|connection closed|connection lost|promoting|warm spare up|race won' \
                    "$T/$tag-stubborn.log" | sed 's/^[^ ]* *[A-Z]* *[^ ]* //' | sed 's/^/    /'
            } >>"$T/bh-stubborn-log.txt"
        fi
        stb_stop "$BENCH_PID" 50
        stb_log "(b) $peer round $round: $(awk -F'\t' -v p="$peer" -v r="$round" '$1 == "bh" && $2 == p && $3 == r { printf "%s ", ($5 == "ok" ? $6 : $5) }' "$TSV")"
    done
done

# --- (c) 5% loss ----------------------------------------------------------------------------------------
bench_wait_quiet "(c) 5% loss"
LOSS_RULES=(
    "ip daddr { 127.0.0.2, 127.0.0.3 } tcp dport 853 counter"
    "ip daddr { 127.0.0.2, 127.0.0.3 } tcp dport 853 numgen random mod 100 < 5 counter drop"
    "ip saddr { 127.0.0.2, 127.0.0.3 } tcp sport 853 counter"
    "ip saddr { 127.0.0.2, 127.0.0.3 } tcp sport 853 numgen random mod 100 < 5 counter drop"
)
for peer in "${PEERS[@]}"; do
    start "$peer" loss
    warm "$peer" lw 3 >/dev/null
    for ((n = 1; n <= LOSS_NAMES; n++)); do echo "l$n.$peer.flood.test A"; done >"$T/loss-$peer.queries"
    stb_nft_table "$NS" "$TABLE" "${LOSS_RULES[@]}" || stb_fatal "$STB_NAME" "nft failed (loss)"
    dnsperf_run "$T/loss-$peer.dnsperf" "$(bench_port "$peer")" -d "$T/loss-$peer.queries" \
        -n 1 -l 60 -t 5 -c 1 -q 50 -Q 500 -v
    sleep 1
    read -r p50 p90 p99 pmax _ <<<"$(bench_dp_percentiles "$T/loss-$peer.dnsperf")"
    re="^l[0-9]+\\.$peer\\.flood\\.test\\.\$"
    up=$(($(upstream_count 127.0.0.2 "$re") + $(upstream_count 127.0.0.3 "$re")))
    {
        echo "$peer:"
        stb_nft_rules "$NS" "$TABLE" | sed 's/^/    /'
    } >>"$T/loss-counters.txt"
    printf 'loss\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$peer" \
        "$(bench_dp "$T/loss-$peer.dnsperf" sent)" "$(bench_dp "$T/loss-$peer.dnsperf" completed)" \
        "$(bench_dp "$T/loss-$peer.dnsperf" lost)" "$p50" "$p90" "$p99" "$pmax" "$up" \
        "$(bench_dp_rcodes "$T/loss-$peer.dnsperf" | sed 's/ ([0-9.]*%)//g')" \
        "$(stb_nft_packets "$NS" "$TABLE" "tcp dport 853 numgen")" "$(stb_nft_packets "$NS" "$TABLE" "tcp sport 853 numgen")" \
        "$(grep -c 'hedging' "$T/loss-$peer.log" || true)" >>"$TSV"
    stb_nft_del "$NS" "$TABLE"
    sed -i '/^> /d' "$T/loss-$peer.dnsperf"
    stb_stop "$BENCH_PID" 50
    stb_log "(c) $peer: $(tail -n 1 "$TSV")"
done
ELAPSED=$(($(date +%s) - START))
LOAD_END=$(bench_loadavg)

rm -rf "$(dirname "$OUT")/resilience-configs"
mkdir -p "$(dirname "$OUT")/resilience-configs"
cp "$T"/bh1-* "$T/upstream-127.0.0.2.conf" "$(dirname "$OUT")/resilience-configs/" 2>/dev/null || true
rm -f "$(dirname "$OUT")"/resilience-configs/*.log

# --- report ----------------------------------------------------------------------------------------------
fmt() { awk -v v="$1" -v d="${2:-1}" 'BEGIN { if (v ~ /^[0-9.]+$/) printf "%.*f", d, v; else print v }'; }
# bh_stats PEER: "answered total median max" over every round (an unanswered query sorts
# after every answer: median "no answer" when over half were, max "timeout" when any was).
bh_stats() {
    awk -F'\t' -v p="$1" '
        $1 == "bh" && $2 == p { n++; ok = ($5 == "ok"); a += ok; v[n] = ok ? $6 + 0 : 1e9 }
        END {
            if (n == 0) { print "0 0 - -"; exit }
            for (i = 2; i <= n; i++) { t = v[i]; for (j = i - 1; j >= 1 && v[j] > t; j--) v[j + 1] = v[j]; v[j + 1] = t }
            m = n % 2 ? v[(n + 1) / 2] : (v[n / 2] + v[n / 2 + 1]) / 2
            printf "%d %d %s %s\n", a, n, (m >= 1e9 ? "no-answer" : sprintf("%.1f", m)), (v[n] >= 1e9 ? "timeout" : sprintf("%.1f", v[n]))
        }' "$TSV"
}
# RTT: stubborn's warm-up queries 2..5 (the first opens the connection), median over rounds.
RTT=$(awk -F'\t' '$1 == "bhwarm" && $2 == "stubborn" { split($4, w, " "); for (i = 2; i <= 5; i++) print w[i] }' "$TSV" | bench_median)
LIMIT=$(awk -v r="$RTT" 'BEGIN { if (r ~ /^[0-9.]+$/) printf "%.1f", 2 * r + 150; else print 150 }')

{
    echo "### Results ($(date -u '+%Y-%m-%d %H:%M UTC'); ${ELAPSED} s)"
    echo
    echo "Machine: $(bench_machine); load average $LOAD_START at the start, $LOAD_END at the end."
    echo "Versions: $(for p in "${PEERS[@]}"; do printf '%s; ' "$(bench_peer_version "$p")"; done)upstreams $(bench_peer_version unbound); $(kdig -V 2>&1 | head -n 1); $(dnsperf -h 2>&1 | sed -n 's/^Version /dnsperf /p')."
    echo
    echo "Load before each scenario:"
    echo
    printf '%s' "$BENCH_LOAD_NOTES"
    echo
    echo "#### (a) Healthy: $HEALTHY_NAMES fresh names, \`dnsperf -n 1 -c 1 -q 50 -Q 1000 -t 5\`"
    echo
    echo "| resolver | client queries | answered | upstream queries (.2 + .3) | extra upstream queries | % extra | p50 / p99 ms | hedges logged |"
    echo "|---|---|---|---|---|---|---|---|"
    while IFS=$'\t' read -r _ peer sent u2 u3 done lost p50 p99 hedges; do
        extra=$((u2 + u3 - done))
        echo "| $peer | $sent | $done | $((u2 + u3)) ($u2 + $u3) | $extra | $(awk -v e="$extra" -v n="$done" 'BEGIN { printf "%.2f%%", n ? 100 * e / n : 0 }') | $p50 / $p99 | $([[ $peer == stubborn ]] && echo "$hedges" || echo "n/a") |"
    done < <(awk -F'\t' '$1 == "healthy"' "$TSV")
    echo
    echo "#### (b) Mid-stream blackhole of 127.0.0.2 (both directions), .3 healthy: the next $NEXT fresh queries, $ROUNDS starts per resolver"
    echo
    echo "Latency: kdig's own (ms); \`timeout\` = no answer within kdig's 2 s. Warm-up: the 5 queries before the fault and the upstream they reached (.2/.3)."
    echo
    IFS=' ' read -r _ _ smed smax <<<"$(bh_stats stubborn)"
    echo "| resolver | answered | median ms | max ms | max vs stubborn | warm-up reached .2/.3 (each start) |"
    echo "|---|---|---|---|---|---|"
    for peer in "${PEERS[@]}"; do
        IFS=' ' read -r a n m mx <<<"$(bh_stats "$peer")"
        wu=$(awk -F'\t' -v p="$peer" '$1 == "bhwarm" && $2 == p { printf "%s%s/%s", (k++ ? ", " : ""), $5, $6 }' "$TSV")
        echo "| $peer | $a/$n | ${m/no-answer/no answer} | $mx | $(bench_ratio "$mx" "$smax") | $wu |"
    done
    echo
    echo "Each query's latency (ms, in order), per start:"
    echo
    echo '```'
    for peer in "${PEERS[@]}"; do
        for ((round = 1; round <= ROUNDS; round++)); do
            printf '%-8s %d: %s\n' "$peer" "$round" "$(awk -F'\t' -v p="$peer" -v r="$round" '$1 == "bh" && $2 == p && $3 == r { printf "%s ", ($5 == "ok" ? $6 : $5) }' "$TSV")"
        done
    done
    echo '```'
    echo
    if [[ -s $T/bh-stubborn-log.txt ]]; then
        echo "stubborn's log (connection, hedge and health lines):"
        echo
        echo '```'
        cat "$T/bh-stubborn-log.txt"
        echo '```'
        echo
    fi
    echo "#### (c) 5% random loss both ways on tcp/853: $LOSS_NAMES fresh names, \`dnsperf -n 1 -c 1 -q 50 -Q 500 -t 5\`"
    echo
    sp99=$(awk -F'\t' '$1 == "loss" && $2 == "stubborn" { print $8 }' "$TSV")
    echo "| resolver | sent | answered | lost | rcodes | p50 ms | p90 ms | p99 ms | max ms | p99 vs stubborn | upstream queries | dropped to/from 853 |"
    echo "|---|---|---|---|---|---|---|---|---|---|---|---|"
    while IFS=$'\t' read -r _ peer sent done lost p50 p90 p99 pmax up rc dout din _; do
        echo "| $peer | $sent | $done | $lost | $rc | $p50 | $p90 | $p99 | $pmax | $(bench_ratio "$p99" "$sp99") | $up | $dout / $din |"
    done < <(awk -F'\t' '$1 == "loss"' "$TSV")
    echo
    echo "nft counters after each resolver's loss run:"
    echo
    echo '```'
    cat "$T/loss-counters.txt"
    echo '```'
    echo
    if [[ " ${PEERS[*]} " == *" stubborn "* ]]; then
        echo "#### Targets (issue 4), stubborn, this run"
        echo
        IFS=$'\t' read -r _ _ _ u2 u3 done _ <<<"$(awk -F'\t' '$1 == "healthy" && $2 == "stubborn"' "$TSV")"
        pct=$(awk -v e=$((u2 + u3 - done)) -v n="$done" 'BEGIN { printf "%.2f", n ? 100 * e / n : 0 }')
        echo "- healthy run: < 1% hedged: $((u2 + u3 - done)) extra upstream queries for $done = ${pct}% → **$(awk -v p="$pct" 'BEGIN { print (p < 1) ? "met" : "not met" }')**"
        over=$(awk -F'\t' -v lim="$LIMIT" '$1 == "bh" && $2 == "stubborn" && ($5 != "ok" || $6 + 0 > lim) { n++ } END { print n + 0 }' "$TSV")
        echo "- blackhole: each of the next $NEXT answers ≤ 2 × RTT + 150 ms = $LIMIT ms (RTT $RTT ms): max $smax ms over $ROUNDS starts, $over over → **$([[ $over == 0 ]] && echo met || echo "not met")**"
        IFS=$'\t' read -r _ _ _ _ lost _ _ p99 _ <<<"$(awk -F'\t' '$1 == "loss" && $2 == "stubborn"' "$TSV")"
        echo "- 5% loss: 0 lost: $lost → **$([[ $lost == 0 ]] && echo met || echo "not met")**; p99 ≤ 300 ms: $p99 ms → **$(awk -v p="$p99" 'BEGIN { print (p <= 300) ? "met" : "not met" }')**"
        echo
    fi
} >"$OUT"
cat "$OUT"
