#!/usr/bin/env bash
# benches/racing.sh — cold-start latency of stubborn, unbound (as a DoT forwarder) and stubby
# against the same DoT upstreams under the same packet faults (issue 3, item 9). A benchmark,
# not a test: it asserts nothing, it measures and prints a Markdown report.
#
# Root only: everything runs in a private network namespace (only `lo`), made and removed
# here through tests/netns/lib.sh. No packet leaves it.
#
# Upstreams: one unbound serving local data over DoT on 127.0.0.2:853 and 127.0.0.3:853 and
# plain DNS on 127.0.0.2:53 and 127.0.0.3:53 (certificate for dns.test from a test CA).
# Scenarios (nft rules in the namespace's `output` hook):
#   a         healthy: upstreams .2 then .3
#   b         .2:853 silently drops SYNs (listed first), .3 healthy
#   c         .2:853 answers SYNs with a TCP RST (listed first), .3 healthy
#   d         the Azure case: one resolver .2 whose 853 drops and whose 53 answers;
#             opportunistic where the resolver can be (stubborn, stubby), DoT-only for unbound
#   d-strict  the same fault, strict (TLS only, authenticated) — the zero-cleartext check
# Counters on tcp/udp dport 53 of both upstream addresses count cleartext packets in every run.
#
# For each scenario and each resolver, one at a time, freshly started (cold: no upstream
# connection yet): query q1.test (the first answer), then q2..q21.test one after another.
# Resolvers: stubborn on 127.0.0.1:53, unbound on 127.0.0.1:5300, stubby on 127.0.0.1:5301.
# The client is kdig over UDP; the latency is kdig's own measurement ("From ... in X ms":
# send to receive, 0.1 ms resolution). The wall time around the whole kdig process
# (date +%s%N, includes `ip netns exec` + kdig start-up) is kept in the raw TSV.
#
# Environment: STUBBORN_BIN (default target/release/stubborn), BENCH_PEERS (default
# "stubborn unbound stubby"), BENCH_SCENARIOS (default "a b c d d-strict"), BENCH_ROUNDS
# (cold starts per resolver in a, b, c: default 3, since unbound picks among its servers at
# random), BENCH_ROUNDS_D (the same for d, d-strict: default 1), BENCH_OUT (report file, default
# target/bench/racing.md; the raw data goes next to it as racing.tsv).
# Exit status: 0 when the report was written; 1 on a setup failure; 77 when it cannot run.

. "$(dirname "$0")/../tests/netns/lib.sh"
. "$(dirname "$0")/lib.sh"
STB_NAME=bench-racing

PEERS=(${BENCH_PEERS:-stubborn unbound stubby})
SCENARIOS=(${BENCH_SCENARIOS:-a b c d d-strict})
ROUNDS=${BENCH_ROUNDS:-3}
ROUNDS_D=${BENCH_ROUNDS_D:-1}
NEXT=20
FIRST_TIMEOUT=6 # s: longer than stubborn's and stubby's 5 s attempt/request timeouts
NEXT_TIMEOUT=2  # s
OUT=${BENCH_OUT:-$STB_REPO_ROOT/target/bench/racing.md}
TSV=${OUT%.md}.tsv
[[ $ROUNDS =~ ^[1-9][0-9]?$ && $ROUNDS_D =~ ^[1-9][0-9]?$ ]] || {
    echo "BENCH_ROUNDS and BENCH_ROUNDS_D must be 1..99" >&2
    exit 1
}

tools=(openssl unbound unbound-checkconf kdig nft ss awk)
for p in "${PEERS[@]}"; do
    case $p in
    stubborn | unbound) ;;
    stubby) tools+=(stubby) ;;
    *)
        echo "unknown peer '$p'" >&2
        exit 1
        ;;
    esac
done
stb_preflight "${tools[@]}"
[[ " ${PEERS[*]} " != *" stubborn "* || -x $STUBBORN_BIN ]] ||
    stb_fatal "$STB_NAME" "stubborn binary not found: $STUBBORN_BIN (cargo build --release --locked)"
mkdir -p "$(dirname "$OUT")"
NS=$(stb_ns_name bench)
stb_ns_create "$NS"
T=$STB_TMP
TABLE=stb_bench
stb_log "namespace $NS, temp dir $T, report $OUT"
START=$(date +%s)
LOAD_START=$(cut -d' ' -f1-3 /proc/loadavg)

# --- upstream --------------------------------------------------------------------------
stb_make_pki "$T" || stb_fatal "$STB_NAME" "openssl failed" "$T/openssl.log"
PIN=$STB_PIN
IFACES=(127.0.0.2@853 127.0.0.3@853 127.0.0.2@53 127.0.0.3@53)
stb_unbound_upstream_conf "$T/upstream.conf" "$T" "${IFACES[@]}"
stb_start_unbound "$NS" "$T/upstream.conf" "$T/upstream.log" "${IFACES[@]}"
for ip in 127.0.0.2 127.0.0.3; do
    stb_retry 30 stb_exec "$NS" kdig @"$ip" -p 853 +tls +tls-pin="$PIN" +time=2 +retry=0 +short a.test ||
        stb_fatal "$STB_NAME" "upstream unbound does not answer DoT on $ip" "$T/upstream.log"
done

# --- scenarios ---------------------------------------------------------------------------
# scenario_rules SCEN: the nft rules (fault first, then the cleartext counters).
scenario_rules() {
    local fault="ip daddr 127.0.0.2 tcp dport 853 counter"
    case $1 in
    b | d | d-strict) fault+=" drop" ;;
    c) fault+=" reject with tcp reset" ;;
    esac
    printf '%s\n' "$fault" \
        "ip daddr { 127.0.0.2, 127.0.0.3 } tcp dport 53 counter" \
        "ip daddr { 127.0.0.2, 127.0.0.3 } udp dport 53 counter"
}
scenario_ips() { case $1 in d | d-strict) echo 127.0.0.2 ;; *) echo 127.0.0.2 127.0.0.3 ;; esac }
# One upstream in (d): no choice between servers, so repeats add little but time (a resolver
# that cannot answer spends 6 + 20×2 s per start).
rounds_for() { case $1 in d | d-strict) echo "$ROUNDS_D" ;; *) echo "$ROUNDS" ;; esac }
scenario_mode() { [[ $1 == d ]] && echo opportunistic || echo strict; }
scenario_title() {
    case $1 in
    a) echo "(a) healthy, .2 then .3" ;;
    b) echo "(b) .2:853 drops SYNs (listed first), .3 healthy" ;;
    c) echo "(c) .2:853 sends RST (listed first), .3 healthy" ;;
    d) echo "(d) Azure: only .2, 853 drops, 53 answers; opportunistic" ;;
    d-strict) echo "(d-strict) as (d), strict (TLS only, authenticated)" ;;
    esac
}

# --- peer configs (benches/lib.sh) ---------------------------------------------------------
RACING_TOML='[racing]
attempt_delay_ms = 250
attempt_timeout_ms = 5000
plain_fallback_delay_ms = 500
max_concurrent_attempts = 4
race_timeout_ms = 10000'
peer_port() { bench_port "$1"; }
# Opportunistic as in the Azure story: a network-provided resolver, no authentication data
# (stubby's GETDNS_AUTHENTICATION_NONE).
config_stubborn() { # SCEN FILE
    # shellcheck disable=SC2046 # the addresses split into words
    bench_conf_stubborn "$2" "$(scenario_mode "$1")" "$PIN" "$RACING_TOML" $(scenario_ips "$1")
}
# unbound: a DoT forwarder, CA + name authentication (unbound has no pins), one thread.
# shellcheck disable=SC2046
config_unbound() { bench_conf_unbound "$2" "$T" 1 $(scenario_ips "$1"); }
# shellcheck disable=SC2046
config_stubby() { bench_conf_stubby "$2" "$T" "$(scenario_mode "$1")" "$PIN" $(scenario_ips "$1"); }
peer_cmd() { bench_peer_cmd "$@"; } # PEER CONFIG -> the command line, one word per line
peer_version() { bench_peer_version "$@"; }

# --- measurement ------------------------------------------------------------------------------
# query PORT NAME TIMEOUT EXPECT: one kdig over UDP (benches/lib.sh's bench_query).
query() { bench_query "$NS" "$@"; }

# run_one SCEN PEER ROUND: one cold start, 1 + NEXT queries, counters; appends to $TSV.
run_one() {
    local scen=$1 peer=$2 round=$3 port conf log pid n r rules=() cmd=() tcp53 udp53 win
    port=$(peer_port "$peer")
    case $peer in # stubby reads YAML only from a *.yml file
    stubborn) conf=$T/$scen-$peer-$round.toml ;;
    unbound) conf=$T/$scen-$peer-$round.conf ;;
    stubby) conf=$T/$scen-$peer-$round.yml ;;
    esac
    log=$T/$scen-$peer-$round.log
    mapfile -t rules < <(scenario_rules "$scen")
    stb_nft_table "$NS" "$TABLE" "${rules[@]}" || stb_fatal "$STB_NAME" "nft failed for scenario $scen"
    "config_$peer" "$scen" "$conf"
    mapfile -t cmd < <(peer_cmd "$peer" "$conf")
    stb_spawn "$NS" "$log" "${cmd[@]}"
    pid=$STB_LAST_PID
    local proto=udp
    if [[ $peer == stubborn ]]; then proto=both; fi
    stb_wait_listening "$NS" "$pid" "$proto" "$port" 127.0.0.1 100 ||
        stb_fatal "$STB_NAME" "$peer did not come up on 127.0.0.1:$port (${cmd[*]})" "$log"
    for ((n = 1; n <= NEXT + 1; n++)); do
        if ((n == 1)); then
            r=$(query "$port" q1.test "$FIRST_TIMEOUT" 198.51.100.1)
        else
            r=$(query "$port" "q$n.test" "$NEXT_TIMEOUT" "198.51.100.$n")
        fi
        printf '%s\t%s\t%s\t%s\t%s\n' "$scen" "$peer" "$round" "$n" "${r// /$'\t'}" >>"$TSV"
    done
    stb_stop "$pid" 50
    tcp53=$(stb_nft_packets "$NS" "$TABLE" "tcp dport 53")
    udp53=$(stb_nft_packets "$NS" "$TABLE" "udp dport 53")
    printf '%s\t%s\t%s\t%s\t%s\n' "$scen" "$peer" "$round" "$tcp53" "$udp53" >>"$TSV.counters"
    if [[ $scen == d-strict && $round == 1 ]]; then
        {
            echo "$peer, strict, round 1 — nft counters after it stopped:"
            stb_nft_rules "$NS" "$TABLE" | sed 's/^/    /'
        } >>"$T/strict-counters.txt"
    fi
    if [[ $peer == stubborn ]]; then
        win=$(grep -m1 -E 'race won|race gave up' "$log" | sed 's/^.*\(race won\|race gave up\)/\1/' || true)
        printf '%s\t%s\t%s\n' "$scen" "$round" "${win:-none}" >>"$TSV.races"
    fi
    stb_nft_del "$NS" "$TABLE"
    stb_log "$scen $peer round $round: first: $(awk -F'\t' -v s="$scen" -v p="$peer" -v r="$round" \
        '$1 == s && $2 == p && $3 == r && $4 == 1 { print $5, $6 " ms" }' "$TSV"); cleartext tcp/udp :53 packets: $tcp53/$udp53"
}

: >"$TSV"
: >"$TSV.counters"
: >"$TSV.races"
: >"$T/strict-counters.txt"
for scen in "${SCENARIOS[@]}"; do
    for ((round = 1; round <= $(rounds_for "$scen"); round++)); do
        for peer in "${PEERS[@]}"; do
            # unbound has no opportunistic mode: its (d) run is already DoT-only.
            [[ $scen == d-strict && $peer == unbound ]] && continue
            run_one "$scen" "$peer" "$round"
        done
    done
done
ELAPSED=$(($(date +%s) - START))
LOAD_END=$(cut -d' ' -f1-3 /proc/loadavg)
# Keep each scenario's round-1 configs next to the report (paths inside point to the temp
# dir, which is gone by then; the PKI is regenerated on every run).
rm -rf "$(dirname "$OUT")/racing-configs"
mkdir -p "$(dirname "$OUT")/racing-configs"
cp "$T"/*-1.toml "$T"/*-1.conf "$T"/*-1.yml "$(dirname "$OUT")/racing-configs/" 2>/dev/null || true

# --- report ------------------------------------------------------------------------------------
# stats SCEN PEER: "first_med first_all med_next max_next answered total tcp53 udp53"
stats() {
    awk -F'\t' -v s="$1" -v p="$2" -v next_n="$NEXT" '
        function med(a, n,   i, j, t) {   # median of a[1..n], n >= 1
            for (i = 2; i <= n; i++) { t = a[i]; for (j = i - 1; j >= 1 && a[j] > t; j--) a[j + 1] = a[j]; a[j + 1] = t }
            return n % 2 ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2
        }
        FILENAME ~ /counters$/ { if ($1 == s && $2 == p) { tcp += $4; udp += $5 } next }
        $1 != s || $2 != p { next }
        {
            total++
            ok = ($5 == "ok")
            answered += ok
            v = ok ? $6 + 0 : 1e9   # an unanswered query sorts after every answer
            if ($4 == 1) { nf++; f[nf] = v; fl = fl (fl == "" ? "" : ", ") (ok ? sprintf("%.1f", $6) : ($6 == "-" ? $5 : $5 " after " sprintf("%.1f", $6))) }
            else { nn++; x[nn] = v; if (v > mx) mx = v }
        }
        END {
            if (total == 0) { print "- - - - 0 0 - -"; exit }
            fm = med(f, nf); nm = med(x, nn)
            printf "%s|%s|%s|%s|%d|%d|%s|%s\n",
                (fm >= 1e9 ? "no answer" : sprintf("%.1f", fm)), fl,
                (nm >= 1e9 ? "no answer" : sprintf("%.1f", nm)),
                (mx >= 1e9 ? "timeout" : sprintf("%.1f", mx)), answered, total, tcp, udp
        }' "$TSV" "$TSV.counters"
}
# target_line SCEN LIMIT_MS TEXT: stubborn's first answers in SCEN against LIMIT_MS.
target_line() {
    [[ " ${SCENARIOS[*]} " == *" $1 "* ]] || return 0
    awk -F'\t' -v s="$1" -v lim="$2" -v text="$3" '
        $1 == s && $2 == "stubborn" && $4 == 1 {
            n++; v = ($5 == "ok") ? $6 + 0 : -1
            all = all (all == "" ? "" : ", ") (v < 0 ? $5 : sprintf("%.1f", v))
            if (v < 0 || v > lim) bad++
        }
        END { printf "- %s: %s ms → **%s**\n", text, all, (n > 0 && bad == 0) ? "met" : "not met" (n > 0 ? sprintf(" (%d of %d starts over)", bad, n) : "") }' "$TSV"
}
ratio() { # PEER_MS STUBBORN_MS
    awk -v a="$1" -v b="$2" 'BEGIN {
        if (a !~ /^[0-9.]+$/ || b !~ /^[0-9.]+$/) { print "—"; exit }
        if (b + 0 < 0.05) b = 0.05
        r = a / b
        printf (r < 0.1 ? "%.3f×" : r < 10 ? "%.1f×" : "%.0f×"), r }'
}

{
    echo "### Results ($(date -u '+%Y-%m-%d %H:%M UTC'); cold starts per cell: ${ROUNDS} in a–c, ${ROUNDS_D} in d; ${ELAPSED} s)"
    echo
    echo "First answer: median over the cold starts (each start's value in brackets). Next $NEXT:"
    echo "pooled over all starts; an unanswered query counts as slower than any answer, so the"
    echo "median reads \"no answer\" when more than half went unanswered and the max reads"
    echo "\"timeout\" when any did. Timeouts: first query ${FIRST_TIMEOUT} s, the others ${NEXT_TIMEOUT} s."
    echo "Ratios: the peer's value divided by stubborn's (> 1 = slower than stubborn)."
    echo "Cleartext packets: tcp/udp packets to port 53 of the upstreams, summed over the starts."
    echo
    echo "| scenario | resolver | first answer ms (each start) | median next $NEXT ms | max next $NEXT ms | answered | first vs stubborn | median vs stubborn | cleartext pkts tcp/udp |"
    echo "|---|---|---|---|---|---|---|---|---|"
    for scen in "${SCENARIOS[@]}"; do
        IFS='|' read -r sf _ sm _ <<<"$(stats "$scen" stubborn)"
        for peer in "${PEERS[@]}"; do
            if [[ $scen == d-strict && $peer == unbound ]]; then
                echo "| $(scenario_title "$scen") | unbound | see (d): DoT-only there already | | | | | | |"
                continue
            fi
            IFS='|' read -r f fl m mx a tot tcp udp <<<"$(stats "$scen" "$peer")"
            rf=$(ratio "$f" "$sf")
            rm=$(ratio "$m" "$sm")
            echo "| $(scenario_title "$scen") | $peer | $f ($fl) | $m | $mx | $a/$tot | $rf | $rm | $tcp/$udp |"
        done
    done
    echo
    if [[ " ${PEERS[*]} " == *" stubborn "* ]]; then
        echo "Targets (issue 3), stubborn, every cold start counted (the worst decides):"
        echo
        target_line b 300 "one upstream silently dropping 853: first answer ≤ attempt delay + 50 ms = 300 ms"
        target_line c 20 "RST: first answer ≤ 20 ms"
        target_line d 1000 "Azure case, opportunistic: first answer ≤ 1 s"
        if [[ " ${SCENARIOS[*]} " == *" d-strict "* ]]; then
            IFS='|' read -r _ _ _ _ _ _ tcp udp <<<"$(stats d-strict stubborn)"
            met="not met"
            [[ $tcp == 0 && $udp == 0 ]] && met=met
            echo "- strict mode: zero cleartext packets: tcp/udp to :53 = $tcp/$udp → **$met**"
        fi
        echo
        echo "stubborn's own race summary (first line of each start's log):"
        echo
        echo '```'
        awk -F'\t' '{ printf "%-9s round %s: %s\n", $1, $2, $3 }' "$TSV.races"
        echo '```'
        echo
    fi
    if [[ -s $T/strict-counters.txt ]]; then
        echo "Strict mode, nft counters in the namespace after each resolver's first strict run:"
        echo
        echo '```'
        cat "$T/strict-counters.txt"
        echo '```'
        echo
    fi
    echo "Machine: $(nproc) CPUs ($(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -n 1)), kernel $(uname -r), load average $LOAD_START at the start and $LOAD_END at the end (shared machine)."
    echo "Versions: $(for p in "${PEERS[@]}"; do printf '%s; ' "$(peer_version "$p")"; done)upstream $(peer_version unbound), $(kdig -V 2>&1 | head -n 1)."
} >"$OUT"
cat "$OUT"
