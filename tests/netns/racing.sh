#!/usr/bin/env bash
# tests/netns/racing.sh — stubborn's happy-eyeballs racer against real packet faults (issue 3,
# item 8). Root only; run by .ci/run through run-all.sh, or by hand:
# `sudo bash tests/netns/racing.sh`.
#
# One private namespace: one unbound serves local data over DNS-over-TLS on 127.0.0.2:853
# and 127.0.0.3:853 and plain DNS (UDP+TCP) on 127.0.0.2:53 and 127.0.0.3:53; stubborn listens
# on 127.0.0.1:53; dig is the client. Faults are nftables rules in an `output` hook chain
# (on loopback every packet passes `output`), in a table deleted after each case.
#
#  1. 127.0.0.2:853 silently drops SYNs (`drop`), 127.0.0.3 is healthy:
#     a. two upstreams, .2 listed first: the answer comes in < 1500 ms (far below the 5 s
#        attempt timeout), the .2 attempt ends timeout/cancelled, the .3 attempt is ready;
#     b. the order swapped (.3 first): the answer comes at once (< the 250 ms attempt
#        delay) and .3 wins;
#     c. one upstream with both addresses (.2 first): as in a.
#  2. 127.0.0.2:853 answers SYNs with a TCP RST (`reject with tcp reset`), .2 listed first:
#     the .2 attempt logs outcome=rst, .3 wins, and the answer comes before the attempt
#     delay would have started .3.
#  3. The Azure case: one resolver, 127.0.0.2, whose 853 drops and whose 53 answers, with
#     nft counters on 127.0.0.2 tcp/udp dport 53:
#     a. mode = "opportunistic": answers through a transport=plain connection (< 1500 ms);
#        the tcp/53 counter is > 0 (so the counter does count);
#     b. mode = "strict": SERVFAIL (UDP and TCP clients), the race gives up, no
#        transport=plain attempt exists, and both counters show zero packets.
#
# Environment: STUBBORN_BIN (default target/release/stubborn), CI (true: never skip),
# STB_KEEP_TMP=1 (keep configs and logs). Closing line: "racing: N passed, M failed";
# exit 0 only if M is 0; 77 when it cannot run (CI=true makes that a failure).

. "$(dirname "$0")/lib.sh"
NAME=racing
STB_NAME=$NAME

stb_preflight openssl unbound unbound-checkconf dig kdig nft ss base64
NS=$(stb_ns_name racing)
stb_ns_create "$NS"
stb_log "namespace $NS, temp dir $STB_TMP"
T=$STB_TMP
TABLE=stb_racing
ATTEMPT_DELAY_MS=250

# --- setup: PKI, unbound, sanity checks --------------------------------------------------
stb_make_pki "$T" || stb_fatal "$NAME" "openssl could not make the certificates and pins" "$T/openssl.log"
PIN=$STB_PIN
IFACES=(127.0.0.2@853 127.0.0.3@853 127.0.0.2@53 127.0.0.3@53)
stb_unbound_upstream_conf "$T/unbound.conf" "$T" "${IFACES[@]}"
stb_start_unbound "$NS" "$T/unbound.conf" "$T/unbound.log" "${IFACES[@]}"
stb_pass "unbound listens on ${IFACES[*]}"
[[ -x $STUBBORN_BIN ]] || stb_fatal "$NAME" \
    "stubborn binary not found or not executable: $STUBBORN_BIN (build it with 'cargo build --release', or set STUBBORN_BIN)"

for ip in 127.0.0.2 127.0.0.3; do
    if ! stb_retry 30 stb_exec "$NS" kdig @"$ip" -p 853 +tls +tls-pin="$PIN" +time=2 +retry=0 +short a.test; then
        stb_fatal "$NAME" "kdig gets no DoT answer from unbound at $ip:853" "$T/unbound.log"
    fi
    stb_expect_eq "unbound answers DoT on $ip:853 (kdig, pinned)" 192.0.2.1 \
        "$(stb_exec "$NS" kdig @"$ip" -p 853 +tls +tls-pin="$PIN" +time=2 +retry=0 +short a.test)"
    stb_expect_eq "unbound answers plain DNS on $ip:53 (dig)" 192.0.2.1 \
        "$(stb_exec "$NS" dig @"$ip" +time=2 +tries=1 +short a.test)"
done

# --- helpers -------------------------------------------------------------------------------
RACING_TOML="[racing]
attempt_delay_ms = $ATTEMPT_DELAY_MS
attempt_timeout_ms = 5000
plain_fallback_delay_ms = 500
max_concurrent_attempts = 4
race_timeout_ms = 10000"

# upstream_toml NAME MODE IP...: one [[upstream]] table; strict ones are pinned.
upstream_toml() {
    local name=$1 mode=$2 addrs
    shift 2
    addrs=$(printf '"%s", ' "$@")
    printf '\n[[upstream]]\nname = "%s"\naddresses = [%s]\nmode = "%s"\n' "$name" "${addrs%, }" "$mode"
    if [[ $mode == strict ]]; then
        printf 'tls_name = "dns.test"\npins = ["key-fp:SHA256:%s"]\n' "$PIN"
    fi
}

# write_config FILE UPSTREAM_TOML...
write_config() {
    local file=$1
    shift
    {
        printf '[server]\nlisten = ["127.0.0.1:53"]\n\n%s\n' "$RACING_TOML"
        printf '%s\n' "$@"
    } >"$file"
}

# attempt_lines LOG IP PORT: the "connection attempt" lines for IP:PORT.
attempt_lines() { grep 'connection attempt' "$1" | grep -F "ip=$2 " | grep -F "port=$3 " || true; }
# has_attempt LOG IP PORT OUTCOME_REGEX [TRANSPORT]: is there such an attempt line?
has_attempt() {
    attempt_lines "$1" "$2" "$3" | grep -E "outcome=($4)( |$)" | grep -qF "transport=${5:-tls}"
}
show_log() { # LOG: the race lines, for the human reading CI output
    echo "---- stubborn: race log ($(basename "$1")) ----"
    grep -E 'connection attempt|race won|race gave up|CLEAR TEXT' "$1" | sed 's/^[^ ]* *//' || true
    echo "----"
}
ms_below() { [[ -n $1 && $1 -lt $2 ]]; } # MS LIMIT

# query_ok CASE DIG_OUT LIMIT_MS WHAT: NOERROR, a.test's address, Query time < LIMIT_MS.
query_ok() {
    local case=$1 out=$2 limit=$3 what=$4 status rdata ms
    status=$(stb_dig_status "$out")
    rdata=$(stb_dig_rdata "$out")
    ms=$(stb_dig_msec "$out")
    stb_expect_eq "$case: dig a.test gets NOERROR" NOERROR "$status"
    stb_expect_eq "$case: the answer is 192.0.2.1" 192.0.2.1 "$rdata"
    if ms_below "$ms" "$limit"; then
        stb_pass "$case: answered in ${ms} ms (< $limit ms: $what)"
    else
        stb_fail "$case: answer time '${ms:-none}' ms, want < $limit ms ($what)"
    fi
}

# --- 1. silently dropped 853 on .2 -------------------------------------------------------------
drop_case() { # CASE CONFIG_TOML... (config upstreams); echoes nothing, counts checks
    local case=$1
    shift
    stb_log "case $case"
    write_config "$T/$case.toml" "$@"
    stb_start_stubborn "$NS" "$T/$case.toml" "$T/$case.log"
    stb_dig "$NS" "$T/$case.dig" 127.0.0.1 +time=8 +tries=1 a.test A
    cat "$T/$case.dig" | grep -E 'status:|^a\.test|Query time' || true
}

stb_nft_table "$NS" "$TABLE" "ip daddr 127.0.0.2 tcp dport 853 counter drop" ||
    stb_fatal "$NAME" "nft could not add the drop rule"
echo "---- nft (case 1): $(stb_nft_rules "$NS" "$TABLE" | tr '\n' ' ') ----"

# 1a: two upstreams, the dropping one first.
drop_case 1a "$(upstream_toml first strict 127.0.0.2)" "$(upstream_toml second strict 127.0.0.3)"
query_ok 1a "$T/1a.dig" 1500 "the dropped .2 did not make us wait for its 5 s attempt timeout"
stb_check "1a: log: the 127.0.0.2:853 attempt ends timeout or cancelled" \
    has_attempt "$T/1a.log" 127.0.0.2 853 'timeout|cancelled'
stb_check "1a: log: the 127.0.0.3:853 attempt is ready" has_attempt "$T/1a.log" 127.0.0.3 853 ready
stb_check "1a: log: the race is won by 127.0.0.3" \
    grep -qE 'race won.* ip=127\.0\.0\.3 port=853' "$T/1a.log"
stb_dig "$NS" "$T/1a-second.dig" 127.0.0.1 +time=2 +tries=1 q1.test A
stb_expect_eq "1a: a second query (q1.test) is answered on the same connection" 198.51.100.1 \
    "$(stb_dig_rdata "$T/1a-second.dig")"
show_log "$T/1a.log"
stb_stop_stubborn 1a

# 1b: the order swapped: the healthy one first.
drop_case 1b "$(upstream_toml first strict 127.0.0.3)" "$(upstream_toml second strict 127.0.0.2)"
query_ok 1b "$T/1b.dig" "$ATTEMPT_DELAY_MS" "the healthy .3 is first: no attempt delay is paid"
stb_check "1b: log: the 127.0.0.3:853 attempt is ready" has_attempt "$T/1b.log" 127.0.0.3 853 ready
stb_check "1b: log: the race is won by 127.0.0.3" \
    grep -qE 'race won.* ip=127\.0\.0\.3 port=853' "$T/1b.log"
show_log "$T/1b.log"
stb_stop_stubborn 1b

# 1c: one upstream, both addresses, the dropping one first.
drop_case 1c "$(upstream_toml both strict 127.0.0.2 127.0.0.3)"
query_ok 1c "$T/1c.dig" 1500 "one upstream, two addresses: the dropped first address is raced past"
stb_check "1c: log: the 127.0.0.2:853 attempt ends timeout or cancelled" \
    has_attempt "$T/1c.log" 127.0.0.2 853 'timeout|cancelled'
stb_check "1c: log: the 127.0.0.3:853 attempt is ready" has_attempt "$T/1c.log" 127.0.0.3 853 ready
show_log "$T/1c.log"
stb_stop_stubborn 1c
echo "---- nft (case 1, end): $(stb_nft_rules "$NS" "$TABLE" | tr '\n' ' ') ----"
stb_nft_del "$NS" "$TABLE"

# --- 2. RST on .2:853 ---------------------------------------------------------------------------
stb_nft_table "$NS" "$TABLE" "ip daddr 127.0.0.2 tcp dport 853 counter reject with tcp reset" ||
    stb_fatal "$NAME" "nft could not add the reset rule"
drop_case 2 "$(upstream_toml first strict 127.0.0.2)" "$(upstream_toml second strict 127.0.0.3)"
query_ok 2 "$T/2.dig" "$ATTEMPT_DELAY_MS" "an RST starts the next attempt at once, not after the delay"
stb_check "2: log: the 127.0.0.2:853 attempt ends outcome=rst" has_attempt "$T/2.log" 127.0.0.2 853 rst
stb_check "2: log: the 127.0.0.3:853 attempt is ready" has_attempt "$T/2.log" 127.0.0.3 853 ready
show_log "$T/2.log"
stb_stop_stubborn 2
echo "---- nft (case 2, end): $(stb_nft_rules "$NS" "$TABLE" | tr '\n' ' ') ----"
stb_nft_del "$NS" "$TABLE"

# --- 3. the Azure case: 853 dropped, 53 open, one resolver --------------------------------------
AZURE_RULES=(
    "ip daddr 127.0.0.2 tcp dport 853 counter drop"
    "ip daddr 127.0.0.2 tcp dport 53 counter"
    "ip daddr 127.0.0.2 udp dport 53 counter"
)
# 3a: opportunistic answers in clear text.
stb_nft_table "$NS" "$TABLE" "${AZURE_RULES[@]}" || stb_fatal "$NAME" "nft could not add the case 3 rules"
drop_case 3a "$(upstream_toml azure opportunistic 127.0.0.2)"
query_ok 3a "$T/3a.dig" 1500 "plain DNS joins after plain_fallback_delay_ms (500)"
stb_check "3a: log: a transport=plain attempt to 127.0.0.2:53 is ready" \
    has_attempt "$T/3a.log" 127.0.0.2 53 ready plain
stb_check "3a: log: the 127.0.0.2:853 TLS attempt did not win (timeout/cancelled)" \
    has_attempt "$T/3a.log" 127.0.0.2 853 'timeout|cancelled'
stb_check "3a: log: the clear-text use is logged at WARN" grep -q 'WARN.*CLEAR TEXT' "$T/3a.log"
show_log "$T/3a.log"
stb_stop_stubborn 3a
tcp53=$(stb_nft_packets "$NS" "$TABLE" "tcp dport 53")
echo "---- nft counters (3a, opportunistic) ----"
stb_nft_rules "$NS" "$TABLE"
echo "----"
if [[ $tcp53 =~ ^[0-9]+$ ]] && ((tcp53 > 0)); then
    stb_pass "3a: the tcp/53 counter saw the clear-text packets ($tcp53): the counter works"
else
    stb_fail "3a: the tcp/53 counter shows '$tcp53' packets; opportunistic must have used tcp/53"
fi

# 3b: strict never sends a clear-text packet. A fresh table: counters from zero.
stb_nft_table "$NS" "$TABLE" "${AZURE_RULES[@]}" || stb_fatal "$NAME" "nft could not add the case 3 rules"
drop_case 3b "$(upstream_toml azure strict 127.0.0.2)"
stb_expect_eq "3b: strict, dig (UDP) a.test: SERVFAIL" SERVFAIL "$(stb_dig_status "$T/3b.dig")"
stb_dig "$NS" "$T/3b-tcp.dig" 127.0.0.1 +tcp +time=8 +tries=1 q2.test A
stb_expect_eq "3b: strict, dig +tcp q2.test: SERVFAIL" SERVFAIL "$(stb_dig_status "$T/3b-tcp.dig")"
# Let every race end (attempt timeout 5 s: no SYN to .2:853 left pending, a "race gave up"
# line logged) before stopping stubborn and reading the counters: nothing may follow.
syn_pending() { [[ -n $(stb_exec "$NS" ss -Htn state syn-sent dst 127.0.0.2 2>/dev/null) ]]; }
for ((i = 0; i < 100; i++)); do
    if grep -q 'race gave up' "$T/3b.log" && ! syn_pending; then break; fi
    sleep 0.1
done
stb_check "3b: log: the races gave up" grep -q 'race gave up' "$T/3b.log"
if grep 'connection attempt' "$T/3b.log" | grep -q 'transport=plain'; then
    stb_fail "3b: strict made a transport=plain attempt"
else
    stb_pass "3b: strict made no transport=plain attempt"
fi
show_log "$T/3b.log"
stb_stop_stubborn 3b
echo "---- nft counters (3b, strict: no packet may reach 127.0.0.2:53) ----"
stb_nft_rules "$NS" "$TABLE"
echo "----"
stb_expect_eq "3b: strict: packets to 127.0.0.2 tcp dport 53" 0 "$(stb_nft_packets "$NS" "$TABLE" "tcp dport 53")"
stb_expect_eq "3b: strict: packets to 127.0.0.2 udp dport 53" 0 "$(stb_nft_packets "$NS" "$TABLE" "udp dport 53")"
drop853=$(stb_nft_packets "$NS" "$TABLE" "tcp dport 853")
if [[ $drop853 =~ ^[0-9]+$ ]] && ((drop853 > 0)); then
    stb_pass "3b: strict did try TLS: $drop853 SYNs dropped on 127.0.0.2:853"
else
    stb_fail "3b: the tcp/853 drop counter shows '$drop853': strict should have tried TLS"
fi
stb_nft_del "$NS" "$TABLE"

stb_summary "$NAME"
