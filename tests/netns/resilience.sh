#!/usr/bin/env bash
# tests/netns/resilience.sh — stubborn keeps answering when an established upstream
# connection goes silent or the upstream path loses packets (issue 4, item 8, the
# network-namespace tier). Root only; run by .ci/run through run-all.sh, or by hand:
# `sudo bash tests/netns/resilience.sh`.
#
# One private namespace: two unbound processes serve the same local data (q1.test ..
# q2000.test, so every query below is a fresh name, never a cache hit) over DNS-over-TLS,
# one on 127.0.0.2:853 and one on 127.0.0.3:853, each logging every query it receives
# (log-queries), so the upstream query count per address is known. stubborn listens on
# 127.0.0.1:53 with both as pinned upstreams (.2 first: the race makes .2 the primary and .3
# the warm spare); `[hedging]` and `[health]` are the defaults, written out. Faults are
# nftables rules (lib.sh's stb_nft_table) with counters.
#
#  1. Mid-stream blackhole: three queries establish the primary (.2) and the spare (.3);
#     then every packet from or to 127.0.0.2 is dropped, in the `output` and the `input`
#     hooks, while .3 stays healthy. Each of the next 20 fresh queries (q101..q120, one
#     after another, `dig +tries=1 +time=2`) must be answered NOERROR with its address.
#     Printed: each query's latency, the nft counters, the queries each upstream received,
#     stubborn's hedge / dead / close log lines.
#  2. 5% random loss on the upstream path, both directions (`numgen random mod 100 < 5
#     drop` on tcp dport 853 to .2/.3 and on tcp sport 853 from them; `tc netem` is not
#     available on these machines), on a freshly started stubborn: 1000 fresh names
#     (q1001..q2000) through dnsperf (`-n 1`: each once; `-Q 500 -q 50`; `-t 5`, above
#     stubborn's query_timeout_ms of 4000, so stubborn's own answers, SERVFAIL included,
#     are counted rather than dnsperf giving up first; dnsperf never retries). Every query
#     must be answered: "Queries lost: 0", 1000 × NOERROR. Printed: p50/p90/p99/max latency,
#     the nft counters (packets seen and dropped per direction), upstream queries, hedges.
#
# Environment: STUBBORN_BIN (default target/release/stubborn), CI (true: never skip),
# STB_KEEP_TMP=1 (keep configs and logs). Closing line: "resilience: N passed, M failed";
# exit 0 only if M is 0; 77 when it cannot run (CI=true makes that a failure).

. "$(dirname "$0")/lib.sh"
NAME=resilience
STB_NAME=$NAME

stb_preflight openssl unbound unbound-checkconf dig kdig nft ss base64 dnsperf awk
NS=$(stb_ns_name resil)
stb_ns_create "$NS"
stb_log "namespace $NS, temp dir $STB_TMP"
T=$STB_TMP
TABLE=stb_resilience

# --- setup: PKI, two unbound upstreams, sanity checks --------------------------------------
stb_make_pki "$T" || stb_fatal "$NAME" "openssl could not make the certificates and pins" "$T/openssl.log"
PIN=$STB_PIN
declare -A UPSTREAM_LOG=()
for ip in 127.0.0.2 127.0.0.3; do
    STB_UPSTREAM_QNAMES=2000 stb_unbound_upstream_conf "$T/unbound-$ip.conf" "$T" "$ip@853"
    stb_start_unbound "$NS" "$T/unbound-$ip.conf" "$T/unbound-$ip.log" "$ip@853"
    UPSTREAM_LOG[$ip]=$T/unbound-$ip.log
done
for ip in 127.0.0.2 127.0.0.3; do
    stb_retry 30 stb_exec "$NS" kdig @"$ip" -p 853 +tls +tls-pin="$PIN" +time=2 +retry=0 +short a.test ||
        stb_fatal "$NAME" "kdig gets no DoT answer from unbound at $ip:853" "${UPSTREAM_LOG[$ip]}"
    stb_expect_eq "unbound answers DoT on $ip:853 (kdig, pinned): q1000.test" 198.18.3.232 \
        "$(stb_exec "$NS" kdig @"$ip" -p 853 +tls +tls-pin="$PIN" +time=2 +retry=0 +short q1000.test)"
done
[[ -x $STUBBORN_BIN ]] || stb_fatal "$NAME" \
    "stubborn binary not found or not executable: $STUBBORN_BIN (build it with 'cargo build --release', or set STUBBORN_BIN)"

# --- helpers ---------------------------------------------------------------------------------
# upstream_queries IP [FROM TO]: queries that upstream has logged so far (one "info: ... IN"
# line each); with FROM TO only those for qFROM.test..qTO.test. (Counting by name matters:
# segments a blackholed connection still held are delivered once the blackhole is lifted.)
upstream_queries() {
    awk -v from="${2:-}" -v to="${3:-}" '
        / IN$/ {
            if (from == "") { n++; next }
            name = $(NF - 2)
            if (name ~ /^q[0-9]+\.test\.$/) { q = substr(name, 2) + 0; if (q >= from && q <= to) n++ }
        }
        END { print n + 0 }' "${UPSTREAM_LOG[$1]}"
}
# qaddr N: qN.test's address in the upstream data (see stb_unbound_upstream_conf).
qaddr() { if (($1 <= 254)); then echo "198.51.100.$1"; else echo "198.18.$(($1 / 256)).$(($1 % 256))"; fi; }

write_config() { # FILE
    cat >"$1" <<EOF
[server]
listen = ["127.0.0.1:53"]
query_timeout_ms = 4000

[hedging]
enabled = true
floor_ms = 50
cap_ms = 1000
spare = true

[health]
dead_after_unanswered = 3
dead_after_silence_ms = 2000

[[upstream]]
name = "u2"
addresses = ["127.0.0.2"]
tls_name = "dns.test"
pins = ["key-fp:SHA256:$PIN"]

[[upstream]]
name = "u3"
addresses = ["127.0.0.3"]
tls_name = "dns.test"
pins = ["key-fp:SHA256:$PIN"]
EOF
}

# start CASE: a fresh stubborn (hedging lines are debug: enable them for the pool), three
# warm-up queries, then wait (≤ 5 s) until the primary (.2) and the warm spare (.3) are up.
start() {
    local case=$1 n i
    write_config "$T/$case.toml"
    RUST_LOG=info,hickory_proto=warn,stubborn::upstream::pool=debug \
        stb_start_stubborn "$NS" "$T/$case.toml" "$T/$case.log"
    for n in 1 2 3; do
        stb_dig "$NS" "$T/$case-warm$n.dig" 127.0.0.1 +tries=1 +time=2 a.test A
    done
    for ((i = 0; i < 50; i++)); do
        grep -q 'warm spare up' "$T/$case.log" && break
        sleep 0.1
    done
    stb_expect_eq "$case: warm-up query answered" 192.0.2.1 "$(stb_dig_rdata "$T/$case-warm1.dig")"
    stb_check "$case: log: the primary race is won by 127.0.0.2" \
        grep -qE 'race won.* ip=127\.0\.0\.2 port=853' "$T/$case.log"
    stb_check "$case: log: the warm spare is up on 127.0.0.3" \
        grep -qE 'warm spare up.* ip=127\.0\.0\.3 port=853' "$T/$case.log"
}

# show_log CASE: stubborn's lines about connections, hedges and failures.
show_log() {
    echo "---- stubborn ($1): connection / hedge / health log lines ----"
    grep -E 'race won|warm spare up|hedging|declared dead|connection closed|connection lost|promoting|gave up' \
        "$T/$1.log" | sed 's/^[^ ]* *//' | cut -c1-220 | head -n 60 || true
    echo "---- counts: hedging=$(grep -c 'hedging' "$T/$1.log" || true)" \
        "declared-dead=$(grep -c 'declared dead' "$T/$1.log" || true)" \
        "closed=$(grep -c 'upstream connection closed' "$T/$1.log" || true) ----"
}

# --- 1. mid-stream blackhole of 127.0.0.2 --------------------------------------------------------
stb_log "case 1: mid-stream blackhole of 127.0.0.2 (both directions), .3 healthy"
start blackhole
# The pre-fault RTT through stubborn (a fresh name, answered over the established .2).
stb_dig "$NS" "$T/blackhole-rtt.dig" 127.0.0.1 +tries=1 +time=2 q100.test A
echo "---- before the fault: q100.test answered in $(stb_dig_msec "$T/blackhole-rtt.dig") ms (dig) by 127.0.0.$((2 + $(upstream_queries 127.0.0.3 100 100))) ----"
stb_nft_table "$NS" "$TABLE" \
    "ip daddr 127.0.0.2 counter drop" "ip saddr 127.0.0.2 counter drop" \
    "input: ip daddr 127.0.0.2 counter drop" "input: ip saddr 127.0.0.2 counter drop" ||
    stb_fatal "$NAME" "nft could not add the blackhole rules"
answered=0
lat=()
for ((n = 101; n <= 120; n++)); do
    out=$T/blackhole-q$n.dig
    stb_dig "$NS" "$out" 127.0.0.1 +tries=1 +time=2 "q$n.test" A
    status=$(stb_dig_status "$out")
    rdata=$(stb_dig_rdata "$out")
    ms=$(stb_dig_msec "$out")
    lat+=("${ms:-timeout}")
    if [[ $status == NOERROR && $rdata == "$(qaddr "$n")" ]]; then
        answered=$((answered + 1))
        stb_pass "blackhole: q$n.test answered NOERROR $rdata in ${ms} ms"
    else
        stb_fail "blackhole: q$n.test: status '${status:-none}', answer '${rdata:-none}' (want NOERROR $(qaddr "$n")), ${ms:-no} ms"
    fi
done
echo "---- blackhole: answered $answered/20; latencies ms (dig, q101..q120): ${lat[*]} ----"
echo "---- blackhole: max $(printf '%s\n' "${lat[@]}" | sort -n | tail -n 1) ms ----"
echo "---- nft counters (blackhole of 127.0.0.2) ----"
stb_nft_rules "$NS" "$TABLE"
echo "----"
d2=$(upstream_queries 127.0.0.2 101 120)
d3=$(upstream_queries 127.0.0.3 101 120)
echo "---- upstream queries received during the blackhole: 127.0.0.2: $d2, 127.0.0.3: $d3 ----"
stb_expect_eq "blackhole: 127.0.0.2 received no query (the blackhole holds)" 0 "$d2"
if ((d3 >= 20)); then
    stb_pass "blackhole: 127.0.0.3 received the 20 queries ($d3)"
else
    stb_fail "blackhole: 127.0.0.3 received $d3 queries, want >= 20"
fi
show_log blackhole
stb_nft_del "$NS" "$TABLE"
stb_stop_stubborn blackhole

# --- 2. 5% random loss on the upstream path -----------------------------------------------------
stb_log "case 2: 5% random loss both ways on tcp/853 to and from .2 and .3, 1000 fresh names"
start loss
for ((n = 1001; n <= 2000; n++)); do echo "q$n.test A"; done >"$T/loss.queries"
stb_nft_table "$NS" "$TABLE" \
    "ip daddr { 127.0.0.2, 127.0.0.3 } tcp dport 853 counter" \
    "ip daddr { 127.0.0.2, 127.0.0.3 } tcp dport 853 numgen random mod 100 < 5 counter drop" \
    "ip saddr { 127.0.0.2, 127.0.0.3 } tcp sport 853 counter" \
    "ip saddr { 127.0.0.2, 127.0.0.3 } tcp sport 853 numgen random mod 100 < 5 counter drop" ||
    stb_fatal "$NAME" "nft could not add the loss rules"
DNSPERF=(dnsperf -s 127.0.0.1 -p 53 -d "$T/loss.queries" -n 1 -l 60 -t 5 -c 1 -q 50 -Q 500 -v)
echo "---- ${DNSPERF[*]} ----"
stb_exec "$NS" "${DNSPERF[@]}" >"$T/loss.dnsperf" 2>&1 || true
sed -n '/^Statistics:/,$p' "$T/loss.dnsperf"
sent=$(sed -n 's/^ *Queries sent: *\([0-9]*\).*/\1/p' "$T/loss.dnsperf")
completed=$(sed -n 's/^ *Queries completed: *\([0-9]*\).*/\1/p' "$T/loss.dnsperf")
lost=$(sed -n 's/^ *Queries lost: *\([0-9]*\).*/\1/p' "$T/loss.dnsperf")
noerror=$(grep -c '^> NOERROR ' "$T/loss.dnsperf" || true)
stb_expect_eq "loss: dnsperf sent 1000 queries" 1000 "${sent:-none}"
stb_expect_eq "loss: Queries lost: 0" 0 "${lost:-none}"
stb_expect_eq "loss: Queries completed: 1000" 1000 "${completed:-none}"
stb_expect_eq "loss: every answer NOERROR (dnsperf -v lines)" 1000 "$noerror"
others=$(grep '^> ' "$T/loss.dnsperf" | grep -v '^> NOERROR ' | awk '{print $2}' | sort | uniq -c | tr '\n' ' ' || true)
[[ -z $others ]] || echo "---- loss: other rcodes: $others ----"
echo "---- loss: latency ms (dnsperf, per query): $(awk '/^> / { print $NF * 1000 }' "$T/loss.dnsperf" | sort -n |
    awk '{ a[NR] = $1 } END { if (NR) printf "p50 %.2f, p90 %.2f, p99 %.2f, max %.2f (n=%d)", a[int((NR + 1) * 0.5)], a[int(NR * 0.9 + 0.5)], a[int(NR * 0.99 + 0.5)], a[NR], NR }') ----"
echo "---- nft counters (5% loss each way on tcp/853) ----"
stb_nft_rules "$NS" "$TABLE"
echo "----"
drop_out=$(stb_nft_packets "$NS" "$TABLE" "tcp dport 853 numgen")
drop_in=$(stb_nft_packets "$NS" "$TABLE" "tcp sport 853 numgen")
if [[ $drop_out =~ ^[0-9]+$ && $drop_in =~ ^[0-9]+$ ]] && ((drop_out > 0 && drop_in > 0)); then
    stb_pass "loss: the loss rules dropped packets both ways (to 853: $drop_out, from 853: $drop_in)"
else
    stb_fail "loss: the loss rules' drop counters are '$drop_out'/'$drop_in'; the fault did not bite"
fi
d2=$(upstream_queries 127.0.0.2 1001 2000)
d3=$(upstream_queries 127.0.0.3 1001 2000)
echo "---- upstream queries for q1001..q2000: 127.0.0.2: $d2, 127.0.0.3: $d3, total $((d2 + d3)) for 1000 client queries ($((d2 + d3 - 1000)) extra: hedges) ----"
show_log loss
stb_nft_del "$NS" "$TABLE"
stb_stop_stubborn loss

stb_summary "$NAME"
