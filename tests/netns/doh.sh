#!/usr/bin/env bash
# tests/netns/doh.sh — DNS over HTTPS (RFC 8484, HTTP/2) as the way out of a network that
# blocks DNS over TLS. Root only; run by .ci/run through run-all.sh, or by hand:
# `sudo bash tests/netns/doh.sh`.
#
# Two namespaces joined by a veth: the client (stubborn on 127.0.0.1:53, strict, CA +
# tls_name, `https_port = 443`; dig and kdig as clients) and the server (unbound on
# 10.53.0.2, local data only, DoT on 853 and DoH on 443 with one certificate). Counters sit
# in the client's `output` hook (what stubborn sent: SYNs to 853 and 443, anything to 53);
# the censor sits in the server's `input` hook (the network in between).
#
#  0. unbound answers DoT (kdig +tls) and DoH (kdig +https) with the test CA; an unbound
#     built without libnghttp2 is a failure under CI=true, a loud skip otherwise.
#  A. Nothing blocked, fresh daemon: dig and kdig are answered over DoT; the race is won by
#     transport=tls, no transport=https attempt is made and no SYN goes to 443.
#  B. The censor drops SYNs to 853 (silently) and everything to 53. A fresh daemon answers
#     dig and kdig (right records) over DoH: an attempt transport=https outcome=ready,
#     "race won" transport=https, the query log says via=...:443/https; the race (started
#     at start-up, before dig asks) and dig's first answer each take < 2000 ms (a sanity
#     bound: expected attempt delay + handshakes; the figures are printed); 20 more
#     queries all succeed; zero packets to port 53 (strict never sends clear text). A
#     background DoT re-race (1 s after the win) has its SYN dropped and gives up (attempt
#     timeout 800 ms); DoH stays in use.
#  C. The 853 drop is removed: the next re-race (2 s after the first: 1 s, then doubling)
#     replaces the DoH connection by DoT within 10 s ("a better transport works again"
#     from=https to=tls), and new queries are answered via .../tls; the replaced DoH
#     connection is closed at the switch (well before idle_timeout_ms, 10 s).
#
# Environment: STUBBORN_BIN (default target/release/stubborn), CI (true: never skip),
# STB_KEEP_TMP=1. Closing line: "doh: N passed, M failed"; exit 77 when it cannot run.

. "$(dirname "$0")/lib.sh"
NAME=doh
STB_NAME=$NAME

stb_preflight openssl unbound unbound-checkconf dig kdig nft ss base64 awk
# Debian's unbound is built --with-libnghttp2; without it there is no DoH server to test.
unbound -V 2>&1 | grep -q 'with-libnghttp2' ||
    stb_unavailable "unbound is built without libnghttp2: it cannot serve DNS over HTTPS ($(unbound -V 2>&1 | head -n 1))"
CL=$(stb_ns_name client)
SRV=$(stb_ns_name server)
stb_ns_create "$CL"
stb_ns_create "$SRV"
T=$STB_TMP
SERVER=10.53.0.2
ATTEMPT_DELAY_MS=250
stb_log "namespaces $CL and $SRV, temp dir $T"

# --- the link; quickack on its routes as on lo (unbound sets no TCP_NODELAY, and a delayed
# ACK would add ~40 ms to first answers, blurring the latency figure) ----------------------
ip link add cl0 netns "$CL" type veth peer name srv0 netns "$SRV"
ip -n "$CL" addr add 10.53.0.1/24 dev cl0
ip -n "$SRV" addr add "$SERVER/24" dev srv0
ip -n "$CL" link set cl0 up
ip -n "$SRV" link set srv0 up
ip -n "$CL" route replace 10.53.0.0/24 dev cl0 src 10.53.0.1 quickack 1
ip -n "$SRV" route replace 10.53.0.0/24 dev srv0 src "$SERVER" quickack 1

# --- unbound: DoT on 853 and DoH on 443 ----------------------------------------------------
stb_make_pki "$T" || stb_fatal "$NAME" "openssl could not make the certificates and pins" "$T/openssl.log"
stb_unbound_upstream_conf "$T/unbound.conf" "$T" "$SERVER@853" "$SERVER@443"
# DoH settings after tls-port; the client's address may ask (10.53.0.1).
sed -i "s|^    tls-port: 853\$|&\n    https-port: 443\n    http-endpoint: \"/dns-query\"\n    http-notls-downstream: no|" "$T/unbound.conf"
sed -i 's|^    access-control: 127.0.0.0/8 allow|&\n    access-control: 10.53.0.0/24 allow|' "$T/unbound.conf"
grep -q 'https-port: 443' "$T/unbound.conf" || stb_fatal "$NAME" "could not add the DoH settings to unbound.conf"
stb_start_unbound "$SRV" "$T/unbound.conf" "$T/unbound.log" "$SERVER@853"
stb_wait_listening "$SRV" "$STB_UNBOUND_PID" tcp 443 "$SERVER" ||
    stb_fatal "$NAME" "unbound is not listening on $SERVER:443 (tcp) after 5 s" "$T/unbound.log"

TLS_ARGS=(+tls-ca="$T/ca.pem" +tls-hostname=dns.test +time=3 +retry=0 +short)
stb_retry 30 stb_exec "$CL" kdig @"$SERVER" -p 853 +tls "${TLS_ARGS[@]}" a.test ||
    stb_fatal "$NAME" "kdig gets no DoT answer from unbound at $SERVER:853" "$T/unbound.log"
stb_expect_eq "0: unbound answers DoT on $SERVER:853 (kdig +tls, test CA)" 192.0.2.1 \
    "$(stb_exec "$CL" kdig @"$SERVER" -p 853 +tls "${TLS_ARGS[@]}" a.test 2>&1)"
doh_direct=$(stb_exec "$CL" kdig @"$SERVER" -p 443 +https "${TLS_ARGS[@]}" a.test 2>&1 || true)
[[ $doh_direct == 192.0.2.1 ]] ||
    stb_fatal "$NAME" "unbound does not answer DNS over HTTPS on $SERVER:443 (kdig +https said: $doh_direct)" "$T/unbound.log"
stb_pass "0: unbound answers DoH on $SERVER:443 (kdig +https, HTTP/2, test CA)"

cat >"$T/stubborn.toml" <<EOF
[server]
listen = ["127.0.0.1:53"]

[log]
queries = true

[racing]
attempt_delay_ms = $ATTEMPT_DELAY_MS
# Short, so that the first background re-race against the dropped 853 gives up (and the
# next one is the one to find 853 open) within the test's few seconds.
attempt_timeout_ms = 800

[[upstream]]
name = "doh"
addresses = ["$SERVER"]
mode = "strict"
tls_name = "dns.test"
ca_file = "$T/ca.pem"
https_port = 443
EOF

# --- helpers --------------------------------------------------------------------------------
COUNT=stb_doh_count # client output: what stubborn sent
CENSOR=stb_doh_censor # server input: the network
count_table() {
    stb_nft_table "$CL" "$COUNT" \
        "ip daddr $SERVER tcp dport 853 tcp flags & (syn | ack) == syn counter" \
        "ip daddr $SERVER tcp dport 443 tcp flags & (syn | ack) == syn counter" \
        "ip daddr $SERVER udp dport 53 counter" \
        "ip daddr $SERVER tcp dport 53 counter" || stb_fatal "$NAME" "nft could not add the counters"
}
pk() { stb_nft_packets "$CL" "$COUNT" "$1"; } # MATCH: a counter's packets
show_counters() { echo "---- nft counters ($1): $(stb_nft_rules "$CL" "$COUNT" | tr '\n' ' ') ----"; }
show_log() { # LOG: the race lines, for the human reading CI output
    echo "---- stubborn: race log ($(basename "$1")) ----"
    grep -E 'connection attempt|race won|race gave up|better transport|HTTPS won' "$1" | sed 's/^[^ ]* *//' || true
    echo "----"
}
# attempt LOG TRANSPORT OUTCOME_REGEX: a "connection attempt" line of that kind?
attempt() { grep 'connection attempt' "$1" | grep -F "transport=$2 " | grep -qE "outcome=($3)( |$)"; }
won() { grep 'race won' "$1" | grep -qF "transport=$2"; } # LOG TRANSPORT
# ask TOOL NAME [ARGS...]: the first answer's address from stubborn (dig or kdig, one try).
ask() {
    local tool=$1 name=$2
    shift 2
    stb_exec "$CL" "$tool" @127.0.0.1 "$@" +short "$name" A 2>/dev/null | head -n 1 || true
}
# qtest TOOL N ARGS...: ask qN.test, expect 198.51.100.N.
qtest() { [[ $(ask "$1" "q$2.test" "${@:3}") == "198.51.100.$2" ]]; }
DIG=(+time=5 +tries=1)
KDIG=(+time=5 +retry=0)
# via LOG NAME: the query log's via= for NAME (last line).
via() { grep 'stubborn::query' "$1" | grep -F "name=$2. " | sed -n 's/.* via=\([^ ]*\).*/\1/p' | tail -n 1; }

# --- A. nothing blocked: DoT, nothing to 443 ------------------------------------------------
stb_log "A: nothing blocked"
count_table
RUST_LOG=info,hickory_proto=error stb_start_stubborn "$CL" "$T/stubborn.toml" "$T/a.log"
stb_dig "$CL" "$T/a.dig" 127.0.0.1 "${DIG[@]}" a.test A
stb_expect_eq "A: dig a.test through stubborn: NOERROR" NOERROR "$(stb_dig_status "$T/a.dig")"
stb_expect_eq "A: dig a.test: 192.0.2.1" 192.0.2.1 "$(stb_dig_rdata "$T/a.dig")"
stb_check "A: kdig q1.test (UDP) is answered 198.51.100.1" qtest kdig 1 "${KDIG[@]}"
stb_check "A: kdig +tcp q2.test is answered 198.51.100.2" qtest kdig 2 "${KDIG[@]}" +tcp
stb_check "A: dig +tcp q3.test is answered 198.51.100.3" qtest dig 3 "${DIG[@]}" +tcp
# Long enough past the attempt delay that a DoH attempt, had one started, would show.
sleep 1
show_counters A
show_log "$T/a.log"
syn853=$(pk "dport 853")
stb_check "A: SYNs to $SERVER:853 were sent ($syn853)" test "${syn853//[!0-9]/}" -gt 0
stb_expect_eq "A: SYNs to $SERVER:443 (DoT works: nothing may touch 443)" 0 "$(pk "dport 443")"
stb_expect_eq "A: packets to $SERVER udp/53" 0 "$(pk "udp dport 53")"
stb_expect_eq "A: packets to $SERVER tcp/53" 0 "$(pk "tcp dport 53")"
stb_check "A: log: the race is won by transport=tls" won "$T/a.log" tls
stb_check "A: log: no transport=https attempt was made" bash -c "! grep 'connection attempt' '$T/a.log' | grep -qF transport=https"
stb_expect_eq "A: query log: a.test came via DoT" "doh@$SERVER:853/tls" "$(via "$T/a.log" a.test)"
stb_stop_stubborn A

# --- B. the censor: SYNs to 853 dropped, 53 dropped -------------------------------------------
stb_log "B: 853 SYNs and all of 53 dropped"
stb_nft_table "$SRV" "$CENSOR" \
    "input: tcp dport 853 tcp flags & (syn | ack) == syn counter drop" \
    "input: udp dport 53 counter drop" \
    "input: tcp dport 53 counter drop" || stb_fatal "$NAME" "nft could not add the censor"
count_table
RUST_LOG=info,hickory_proto=error stb_start_stubborn "$CL" "$T/stubborn.toml" "$T/b.log"
stb_dig "$CL" "$T/b.dig" 127.0.0.1 "${DIG[@]}" a.test A
b_ready=$(date +%s%N)
first_ms=$(stb_dig_msec "$T/b.dig")
stb_log "B: first answer with 853 dropped: $(stb_dig_status "$T/b.dig") in ${first_ms:-?} ms"
stb_expect_eq "B: dig a.test through stubborn: NOERROR" NOERROR "$(stb_dig_status "$T/b.dig")"
stb_expect_eq "B: dig a.test: 192.0.2.1" 192.0.2.1 "$(stb_dig_rdata "$T/b.dig")"
stb_check "B: first answer in ${first_ms:-?} ms (< 2000: attempt delay $ATTEMPT_DELAY_MS + handshakes)" \
    test "${first_ms:-99999}" -lt 2000
stb_expect_eq "B: kdig txt.test is answered" '"hello"' \
    "$(stb_exec "$CL" kdig @127.0.0.1 "${KDIG[@]}" +short txt.test TXT 2>/dev/null || true)"
stb_check "B: kdig +tcp q4.test is answered 198.51.100.4" qtest kdig 4 "${KDIG[@]}" +tcp
ok=0
for ((n = 10; n < 30; n++)); do # 20 more, alternating dig and kdig, UDP and TCP
    case $((n % 4)) in
    0) qtest dig "$n" "${DIG[@]}" && ok=$((ok + 1)) ;;
    1) qtest kdig "$n" "${KDIG[@]}" && ok=$((ok + 1)) ;;
    2) qtest dig "$n" "${DIG[@]}" +tcp && ok=$((ok + 1)) ;;
    3) qtest kdig "$n" "${KDIG[@]}" +tcp && ok=$((ok + 1)) ;;
    esac
done
stb_log "B: 20 further queries over DoH: $ok answered"
stb_expect_eq "B: 20 further queries (dig/kdig, UDP/TCP) all answered" 20 "$ok"
show_counters B
echo "---- nft censor ($SRV input): $(stb_nft_rules "$SRV" "$CENSOR" | tr '\n' ' ') ----"
stb_check "B: log: a transport=https attempt to $SERVER:443 is ready" attempt "$T/b.log" https ready
stb_check "B: log: the race is won by transport=https" won "$T/b.log" https
stb_check "B: log: a transport=tls attempt was made first and did not win (timeout/cancelled)" \
    attempt "$T/b.log" tls 'timeout|cancelled'
stb_expect_eq "B: query log: a.test came via DoH" "doh@$SERVER:443/https" "$(via "$T/b.log" a.test)"
syn853=$(pk "dport 853")
syn443=$(pk "dport 443")
stb_check "B: stubborn tried DoT: $syn853 SYNs to 853 (dropped)" test "${syn853//[!0-9]/}" -gt 0
stb_check "B: stubborn used DoH: $syn443 SYNs to 443" test "${syn443//[!0-9]/}" -gt 0
stb_expect_eq "B: strict: packets to $SERVER udp/53" 0 "$(pk "udp dport 53")"
stb_expect_eq "B: strict: packets to $SERVER tcp/53" 0 "$(pk "tcp dport 53")"
# The figure a cold start pays: stubborn races at start (pre-warm), so dig's time above may
# hide part of it; the race's own time_to_win_ms is the whole wait (853 silent, 443 after
# the attempt delay).
win_ms=$(grep 'race won' "$T/b.log" | grep -F transport=https | sed -n 's/.*time_to_win_ms=\([0-9]*\).*/\1/p' | head -n 1)
stb_check "B: the DoH race was won in ${win_ms:-?} ms (< 2000; attempt delay $ATTEMPT_DELAY_MS)" \
    test "${win_ms:-99999}" -lt 2000
# DoT gets its head start: the DoH candidate joins only one attempt delay after it.
stb_check "B: DoH joined no sooner than the attempt delay after DoT (won at ${win_ms:-?} ms)" \
    test "${win_ms:-0}" -ge "$ATTEMPT_DELAY_MS"

# Let the first background re-race (1 s after the win) meet the still-dropped 853 and give
# up; DoH must stay in use meanwhile. (B's primary race was won: any "race gave up" is a
# re-race.)
for ((i = 0; i < 50; i++)); do # ≤ 5 s
    grep -q 'race gave up' "$T/b.log" && break
    sleep 0.1
done
rerace_syn=$(stb_nft_packets "$SRV" "$CENSOR" "dport 853")
stb_check "B: log: a background DoT re-race gave up while 853 is dropped" grep -q 'race gave up' "$T/b.log"
stb_check "B: the re-race's SYN was dropped ($rerace_syn SYNs to 853 dropped in all)" \
    test "${rerace_syn//[!0-9]/}" -ge 2
stb_check "B: q5.test still answered while the re-race's SYN is dropped" qtest dig 5 "${DIG[@]}"
stb_expect_eq "B: query log: q5.test came via DoH" "doh@$SERVER:443/https" "$(via "$T/b.log" q5.test)"
stb_check "B: no return to DoT while 853 is dropped" \
    bash -c "! grep -q 'better transport works again' '$T/b.log'"

# --- C. 853 opens again: back to DoT -------------------------------------------------------
stb_log "C: removing the 853 drop ($((($(date +%s%N) - b_ready) / 1000000)) ms after the first DoH answer)"
stb_nft_del "$SRV" "$CENSOR"
opened=$(date +%s%N)
back_ms=""
for ((i = 0; i < 150; i++)); do # ≤ 15 s
    if grep -q 'better transport works again' "$T/b.log"; then
        back_ms=$((($(date +%s%N) - opened) / 1000000))
        break
    fi
    sleep 0.1
done
stb_log "C: back to DoT ${back_ms:-never} ms after 853 opened"
show_log "$T/b.log"
stb_check "C: log: DoH replaced by DoT within 10 s (${back_ms:-never} ms)" test "${back_ms:-99999}" -le 10000
replaced() { grep 'better transport works again' "$T/b.log" | grep -F 'from=https' | grep -qF 'to=tls'; }
stb_check "C: log: the connection is replaced from=https to=tls" replaced
stb_check "C: log: a race after the switch is won by transport=tls" won "$T/b.log" tls
# The replaced DoH connection is closed at the switch, not left to idle out ([connection]
# idle_timeout_ms, 10 s after its last query): gone within 5 s of the switch.
doh_open() { [[ -n $(stb_exec "$CL" ss -Htn state established dst "$SERVER" dport = :443 2>/dev/null) ]]; }
for ((i = 0; i < 50; i++)); do doh_open || break; sleep 0.1; done # ≤ 5 s after the switch
doh_closed_ms=$((($(date +%s%N) - opened) / 1000000))
if doh_open; then
    stb_fail "C: the replaced DoH connection to $SERVER:443 is still open 5 s after the switch to DoT"
else
    stb_pass "C: the replaced DoH connection to $SERVER:443 is closed ($doh_closed_ms ms after 853 opened)"
fi
stb_check "C: dig q40.test is answered" qtest dig 40 "${DIG[@]}"
stb_check "C: kdig q41.test is answered" qtest kdig 41 "${KDIG[@]}"
stb_expect_eq "C: query log: q41.test came via DoT" "doh@$SERVER:853/tls" "$(via "$T/b.log" q41.test)"
show_counters C
stb_expect_eq "C: strict: packets to $SERVER udp/53 (whole run)" 0 "$(pk "udp dport 53")"
stb_expect_eq "C: strict: packets to $SERVER tcp/53 (whole run)" 0 "$(pk "tcp dport 53")"
echo "doh: figures: 853 dropped: race won by DoH in ${win_ms:-?} ms, dig's first answer ${first_ms:-?} ms; back to DoT ${back_ms:-never} ms after 853 opened; old DoH connection closed after ${doh_closed_ms:-?} ms; $ok/20 further queries answered"
if ((STB_FAILED > 0)); then
    echo "---- stubborn's log (B/C) ----"
    tail -n 40 "$T/b.log"
fi
stb_stop_stubborn "B/C"
stb_summary "$NAME"
