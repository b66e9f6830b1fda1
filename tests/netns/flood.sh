#!/usr/bin/env bash
# tests/netns/flood.sh — hostile local clients against the running release binary (issue 14,
# part 3; the network-namespace tier). Root only; run by .ci/run through run-all.sh, or by
# hand: `sudo bash tests/netns/flood.sh` (docs/soak.md has the full-size command).
#
# One private namespace (only `lo`): unbound serves DNS over TLS on 127.0.0.2:853 (the test
# zone, every name under flood.test answers A 192.0.2.1, no query log); stubborn listens on
# 127.0.0.1:53 with it as its pinned upstream, max_tcp_clients = 128, tcp_idle_timeout_ms =
# 2000, and its metrics on 127.0.0.1:9153.
#
#  1. The cache is filled first (12 000 fresh names, more than its 10 000 entries), so the
#     baseline is a daemon in steady state. Baseline: VmRSS, open descriptors
#     (/proc/PID/fd), threads; a well-behaved client (dnsperf, 200 queries/s, 4 in 5 cache
#     hits, 1 in 5 a fresh name, -t 2) for 10 s: answered, latency p50/p90/p99/max.
#  2. The flood, both at once (tests/netns/hostile_client.py):
#     - FLOOD_DATAGRAMS UDP datagrams (default 1 000 000) at FLOOD_RATE datagrams/s (default
#       10 000; see below): random bytes and mutated real queries (bit flips, truncation,
#       absurd counts, QR set, compression loops, long names, odd opcodes, EDNS versions
#       and options, two OPTs, ...), from 16 source addresses, FLOOD_PROCS processes,
#       answers never read;
#     - FLOOD_STREAMS garbage TCP connections (default 10 000) at FLOOD_STREAM_RATE
#       streams/s (default 100, so they last as long as the datagrams): bad lengths, frames
#       shorter than a header, cut frames, zero-length frames, random bytes, framed
#       mutated queries, 3 000 pipelined queries on a 2 KiB receive buffer never read;
#       closed with FIN or RST; then 2 × max_tcp_clients connections held at once.
#     The well-behaved client runs throughout in 5 s rounds (a bounded number). The
#     datagrams the kernel drops at stubborn's UDP sockets (their receive buffers full:
#     the drops column of /proc/PID/net/udp, over the sockets in stubborn's fd table bound
#     to port 53) are counted over the flood and reported on their own.
#  3. After the flood and a settle (≤ 30 s, until the figures are back): the daemon is
#     alive, every round of the well-behaved client was answered, at least
#     FLOOD_MIN_ANSWERED_PCT % (default 99) of its queries during the flood and all of them
#     after; open descriptors ≤ baseline + 2 (the upstream connection and its spare may be
#     renewed); VmRSS ≤ baseline × 1.25 + 4 MiB (the allocator may keep freed pages, the
#     cache is full either way); threads == baseline; a TCP query is answered (no client
#     slot leaked); at most 40 lines at warn or error in stubborn's log (no line per hostile
#     datagram); stubborn exits 0 on SIGTERM.
#
# The rates. Uncapped, the generators go as fast as the machine lets them: 7 700-11 000
# datagrams/s on a busy 2-CPU CI machine (the flood took 90-130 s), 100 000-300 000/s on an
# idle one (3-10 s). Past what stubborn reads, the datagrams queue in, then overflow, the
# kernel's receive buffers of its sockets, which the well-behaved client shares; there a
# datagram is dropped before stubborn sees it, whoever sent it, so the well-behaved client's
# share of that loss measures the machine's speed, not stubborn's fairness: runs of the same
# test got 98.70%, 99.60% and 100% answered (uncapped on an idle 2-CPU machine: 180 000/s
# sent, 12% of the flood dropped by the kernel, 98.97% answered). So the flood is capped at
# 10 000 datagrams/s: the rate the 99% gate was set at (the busy runs above, which reach it
# or come close; where a machine cannot, the flood is slower, as before), a flood of about
# 100 s everywhere (20 rounds, 20 000 well-behaved queries, so one loss is 0.005%), 50 times
# the well-behaved client's rate with fresh names that go upstream, and far below what
# stubborn reads (over 150 000/s), so the kernel should drop nothing and what the gate sees
# is stubborn's doing. The kernel's drops are measured all the same and shown beside the
# gate. The streams are capped at 100/s, so that the TCP part lasts as long as the UDP part
# (about 80/s on the busy machine). FLOOD_RATE=0 / FLOOD_STREAM_RATE=0 lift the caps (a
# stress run by hand; the 99% gate is not meant for it).
#
# Environment: STUBBORN_BIN (default target/release/stubborn), FLOOD_DATAGRAMS,
# FLOOD_STREAMS, FLOOD_PROCS (default 2), FLOOD_RATE, FLOOD_STREAM_RATE,
# FLOOD_MIN_ANSWERED_PCT, CI (true: never skip), STB_KEEP_TMP=1 (keep logs). Closing line:
# "flood: N passed, M failed".

. "$(dirname "$0")/lib.sh"
. "$STB_REPO_ROOT/benches/lib.sh"
NAME=flood
STB_NAME=$NAME

DATAGRAMS=${FLOOD_DATAGRAMS:-1000000}
STREAMS=${FLOOD_STREAMS:-10000}
PROCS=${FLOOD_PROCS:-2}
RATE=${FLOOD_RATE:-10000}
STREAM_RATE=${FLOOD_STREAM_RATE:-100}
MIN_PCT=${FLOOD_MIN_ANSWERED_PCT:-99}
TCP_LIMIT=128
DEADLINE=400 # the generators' own bound, in seconds
[[ $DATAGRAMS =~ ^[0-9]{1,8}$ && $STREAMS =~ ^[0-9]{1,6}$ && $PROCS =~ ^[1-8]$ &&
    $RATE =~ ^[0-9]{1,7}$ && $STREAM_RATE =~ ^[0-9]{1,5}$ ]] || {
    echo "FLOOD_DATAGRAMS (0..99999999), FLOOD_STREAMS (0..999999), FLOOD_PROCS (1..8)," \
        "FLOOD_RATE (0..9999999, 0: no cap), FLOOD_STREAM_RATE (0..99999, 0: no cap)" >&2
    exit 1
}
# The caps must let the counts go out well within the generators' deadline.
((RATE == 0 || DATAGRAMS / RATE <= 300)) && ((STREAM_RATE == 0 || STREAMS / STREAM_RATE <= 300)) || {
    echo "at FLOOD_RATE/FLOOD_STREAM_RATE the flood would last over 300 s; raise the rate or lower the count" >&2
    exit 1
}

stb_preflight openssl unbound unbound-checkconf kdig dnsperf python3 curl ss awk
[[ -x $STUBBORN_BIN ]] || stb_fatal "$NAME" "stubborn binary not found: $STUBBORN_BIN (cargo build --release)"
NS=$(stb_ns_name flood)
stb_ns_create "$NS"
T=$STB_TMP
stb_log "namespace $NS, temp dir $T"

# --- setup -------------------------------------------------------------------------------------
stb_make_pki "$T" || stb_fatal "$NAME" "openssl could not make the certificates" "$T/openssl.log"
STB_UPSTREAM_LOG_QUERIES=no STB_UPSTREAM_FLOOD_ZONE=flood.test \
    stb_unbound_upstream_conf "$T/unbound.conf" "$T" 127.0.0.2@853
stb_start_unbound "$NS" "$T/unbound.conf" "$T/unbound.log" 127.0.0.2@853
stb_retry 30 stb_exec "$NS" kdig @127.0.0.2 -p 853 +tls +tls-pin="$STB_PIN" +time=2 +retry=0 +short a.test ||
    stb_fatal "$NAME" "unbound does not answer DoT on 127.0.0.2:853" "$T/unbound.log"
cat >"$T/stubborn.toml" <<EOF
[server]
listen = ["127.0.0.1:53"]
query_timeout_ms = 2000
tcp_idle_timeout_ms = 2000
max_tcp_clients = $TCP_LIMIT

[metrics]
listen = "127.0.0.1:9153"

[[upstream]]
name = "u2"
addresses = ["127.0.0.2"]
tls_name = "dns.test"
pins = ["key-fp:SHA256:$STB_PIN"]
EOF
stb_start_stubborn "$NS" "$T/stubborn.toml" "$T/stubborn.log"
PID=$STUBBORN_PID

fds() { ls "/proc/$PID/fd" 2>/dev/null | wc -l; }
threads() { awk '/^Threads:/ { print $2 }' "/proc/$PID/status" 2>/dev/null; }
rss() { bench_rss_kib "$PID" 2>/dev/null; }
# udp_drops: datagrams the kernel dropped at stubborn's UDP sockets on port 53 (their receive
# buffers full), summed; the sockets are found by inode in stubborn's fd table.
udp_drops() {
    local inodes
    inodes=$(find "/proc/$PID/fd" -lname 'socket:*' -printf '%l\n' 2>/dev/null | tr -dc '0-9\n')
    awk -v inodes="$inodes" 'BEGIN { n = split(inodes, a, "\n"); for (i = 1; i <= n; i++) if (a[i] != "") ours[a[i]] = 1 }
        NR > 1 && $2 ~ /:0035$/ && ($10 in ours) { d += $NF } END { print d + 0 }' "/proc/$PID/net/udp" 2>/dev/null
}
metric() { # the sum of the samples of the metric lines matching REGEX
    stb_exec "$NS" curl -s --max-time 2 http://127.0.0.1:9153/metrics 2>/dev/null |
        awk -v re="$1" '$0 ~ re { s += $NF } END { print s + 0 }'
}

# good TAG SECONDS: the well-behaved client for SECONDS (fresh names unique to TAG).
good() {
    local tag=$1 secs=$2
    awk -v tag="$tag" 'BEGIN { for (i = 1; i <= 3000; i++) {
        if (i % 5 == 0) print "g" i "." tag ".flood.test A"
        else if (i % 5 == 1) print "a.test A"
        else if (i % 5 == 2) print "q" (i % 50 + 1) ".test A"
        else if (i % 5 == 3) print "txt.test TXT"
        else print "aaaa.test AAAA" } }' >"$T/good-$tag.queries"
    stb_exec "$NS" dnsperf -s 127.0.0.1 -p 53 -d "$T/good-$tag.queries" -l "$secs" -Q 200 -q 20 -t 2 -c 1 -v \
        >"$T/good-$tag.dnsperf" 2>&1 || true
}
# summary FILE...: "sent completed lost p50 p90 p99 max" over dnsperf outputs.
summary() {
    local f x sent=0 done=0 lost=0
    for f in "$@"; do
        x=$(bench_dp "$f" sent) && sent=$((sent + ${x:-0}))
        x=$(bench_dp "$f" completed) && done=$((done + ${x:-0}))
        x=$(bench_dp "$f" lost) && lost=$((lost + ${x:-0}))
    done
    cat "$@" >"$T/summary.tmp"
    read -r p50 p90 p99 max _ <<<"$(bench_dp_percentiles "$T/summary.tmp")"
    echo "$sent $done $lost $p50 $p90 $p99 $max"
}

# --- 1. steady state and baseline ------------------------------------------------------------------
stb_log "filling the cache (12 000 fresh names)"
for ((i = 1; i <= 12000; i++)); do echo "fill$i.flood.test A"; done >"$T/fill.queries"
stb_exec "$NS" dnsperf -s 127.0.0.1 -d "$T/fill.queries" -n 1 -Q 3000 -q 200 -t 5 >"$T/fill.dnsperf" 2>&1 || true
echo "---- cache fill: $(bench_dp "$T/fill.dnsperf" completed)/12000 answered, $(metric '^stubborn_cache_entries') entries cached ----"
stb_log "baseline: the well-behaved client for 10 s"
good before 10
sleep 2
BASE_FDS=$(fds) BASE_RSS=$(rss) BASE_THREADS=$(threads)
read -r b_sent b_done b_lost b50 b90 b99 bmax <<<"$(summary "$T/good-before.dnsperf")"
echo "---- baseline: VmRSS $BASE_RSS KiB, $BASE_FDS descriptors, $BASE_THREADS threads ----"
echo "---- well-behaved client before the flood: $b_done/$b_sent answered, $b_lost lost; latency ms p50 $b50, p90 $b90, p99 $b99, max $bmax ----"
stb_expect_eq "before the flood: the well-behaved client lost no query" 0 "$b_lost"

# --- 2. the flood ------------------------------------------------------------------------------------
stb_log "flood: $DATAGRAMS datagrams ($PROCS processes, cap $RATE/s) and $STREAMS TCP streams (cap $STREAM_RATE/s), at once"
HOSTILE=$STB_LIB_DIR/hostile_client.py
DROPS0=$(udp_drops)
stb_spawn "$NS" "$T/udp-flood.log" python3 "$HOSTILE" udp 127.0.0.1:53 "$DATAGRAMS" --procs "$PROCS" \
    --rate "$RATE" --deadline "$DEADLINE"
UDP_PID=$STB_LAST_PID
stb_spawn "$NS" "$T/tcp-flood.log" python3 "$HOSTILE" tcp 127.0.0.1:53 "$STREAMS" --limit "$TCP_LIMIT" \
    --rate "$STREAM_RATE" --deadline "$DEADLINE"
TCP_PID=$STB_LAST_PID
T0=$(date +%s)
rounds=0 silent=0 peak_rss=$BASE_RSS peak_fds=$BASE_FDS peak_threads=$BASE_THREADS
during=()
# Bounded: at most 90 rounds of 5 s (the generators' own deadline is 400 s).
while ((rounds < 90)) && { stb_alive "$UDP_PID" || stb_alive "$TCP_PID"; }; do
    rounds=$((rounds + 1))
    good "during$rounds" 5
    during+=("$T/good-during$rounds.dnsperf")
    c=$(bench_dp "$T/good-during$rounds.dnsperf" completed)
    [[ ${c:-0} -gt 0 ]] || silent=$((silent + 1))
    stb_alive "$PID" || break
    r=$(rss) f=$(fds) th=$(threads)
    ((${r:-0} > peak_rss)) && peak_rss=$r
    ((${f:-0} > peak_fds)) && peak_fds=$f
    ((${th:-0} > peak_threads)) && peak_threads=$th
    stb_log "round $rounds: well-behaved client $c/$(bench_dp "$T/good-during$rounds.dnsperf" sent) answered; VmRSS $r KiB, $f fds, $th threads"
done
FLOOD_SECS=$(($(date +%s) - T0))
DROPS=$(($(udp_drops) - DROPS0))
udp_rc=0 tcp_rc=0
wait "$UDP_PID" 2>/dev/null || udp_rc=$?
wait "$TCP_PID" 2>/dev/null || tcp_rc=$?
cat "$T/udp-flood.log" "$T/tcp-flood.log"
stb_check "stubborn is alive after the flood" stb_alive "$PID"
stb_alive "$PID" || stb_fatal "$NAME" "stubborn died during the flood" "$T/stubborn.log"
stb_expect_eq "the UDP generator sent all $DATAGRAMS datagrams" 0 "$udp_rc"
stb_expect_eq "the TCP generator made all $STREAMS streams and the flood got answers" 0 "$tcp_rc"

read -r d_sent d_done d_lost d50 d90 d99 dmax <<<"$(summary "${during[@]}")"
pct=$(awk -v d="$d_done" -v s="$d_sent" 'BEGIN { printf "%.2f", s ? 100 * d / s : 0 }')
echo "---- well-behaved client during the flood ($rounds rounds of 5 s, ${FLOOD_SECS} s): $d_done/$d_sent answered ($pct%), $d_lost lost; latency ms p50 $d50, p90 $d90, p99 $d99, max $dmax ----"
echo "---- peaks during the flood: VmRSS $peak_rss KiB, $peak_fds descriptors, $peak_threads threads ----"
# Reported, not judged: which client's datagrams the kernel dropped cannot be told apart. At
# the capped rate there should be none; some mean stubborn did not keep up with the flood
# (or the machine starved it), and the well-behaved client's losses may include them.
echo "---- kernel drops at stubborn's UDP sockets during the flood (receive buffers full): $DROPS datagrams ($(awk -v d="$DROPS" -v n="$DATAGRAMS" 'BEGIN { printf "%.3f", n ? 100 * d / n : 0 }')% of the flood) ----"
stb_expect_eq "every round of the well-behaved client got answers" 0 "$silent"
if awk -v p="$pct" -v m="$MIN_PCT" 'BEGIN { exit !(p >= m) }'; then
    stb_pass "during the flood the well-behaved client got $pct% answered (>= $MIN_PCT%)"
else
    stb_fail "during the flood the well-behaved client got only $pct% answered (< $MIN_PCT%; the kernel dropped $DROPS datagrams at stubborn's sockets)"
fi

# --- 3. afterwards -------------------------------------------------------------------------------------
RSS_MAX=$((BASE_RSS * 5 / 4 + 4096))
FDS_MAX=$((BASE_FDS + 2))
for ((i = 0; i < 30; i++)); do
    (($(fds) <= FDS_MAX && $(rss) <= RSS_MAX && $(threads) == BASE_THREADS)) && break
    sleep 1
done
SETTLE=$i
good after 5
A_FDS=$(fds) A_RSS=$(rss) A_THREADS=$(threads)
read -r a_sent a_done a_lost a50 a90 a99 amax <<<"$(summary "$T/good-after.dnsperf")"
echo "---- after a ${SETTLE} s settle: VmRSS $A_RSS KiB (baseline $BASE_RSS), $A_FDS descriptors (baseline $BASE_FDS), $A_THREADS threads (baseline $BASE_THREADS) ----"
echo "---- well-behaved client after the flood: $a_done/$a_sent answered, $a_lost lost; latency ms p50 $a50, p90 $a90, p99 $a99, max $amax ----"
stb_expect_eq "after the flood: the well-behaved client lost no query" 0 "$a_lost"
if ((A_FDS <= FDS_MAX)); then
    stb_pass "descriptors back to baseline: $A_FDS <= $BASE_FDS + 2"
else
    stb_fail "descriptors did not return: $A_FDS > $BASE_FDS + 2"
fi
if ((A_RSS <= RSS_MAX)); then
    stb_pass "VmRSS back to baseline: $A_RSS KiB <= $BASE_RSS × 1.25 + 4096 = $RSS_MAX KiB"
else
    stb_fail "VmRSS did not return: $A_RSS KiB > $BASE_RSS × 1.25 + 4096 = $RSS_MAX KiB"
fi
stb_expect_eq "threads back to baseline" "$BASE_THREADS" "$A_THREADS"
stb_expect_eq "a TCP query is answered after the flood (no client slot leaked)" 192.0.2.1 \
    "$(stb_exec "$NS" kdig @127.0.0.1 +tcp +time=2 +retry=0 +short a.test 2>&1)"
echo "---- stubborn's answers by rcode (metrics): $(stb_exec "$NS" curl -s --max-time 2 http://127.0.0.1:9153/metrics |
    sed -n 's/^stubborn_queries_total{transport="\([a-z]*\)",rcode="\([A-Z]*\)"} \([0-9]*\)$/\1 \2 \3/p' | tr '\n' ';') ----"
WARNS=$(grep -cE ' (WARN|ERROR) ' "$T/stubborn.log" || true)
echo "---- stubborn's log: $(wc -l <"$T/stubborn.log") lines, $WARNS at warn or error; the most frequent: ----"
grep -E ' (WARN|ERROR) ' "$T/stubborn.log" | sed 's/^[^ ]* *//; s/[0-9]\{1,\}/N/g' | cut -c1-160 | sort | uniq -c | sort -rn | head -n 10 || true
# Warnings about client input are rate-limited (the first and every power of two); a line
# per hostile datagram would let any client fill the disk or the journal.
if ((WARNS <= 40)); then
    stb_pass "the log does not grow with the flood: $WARNS lines at warn or error (<= 40)"
else
    stb_fail "the log grows with the flood: $WARNS lines at warn or error (> 40)"
fi
stb_stop_stubborn "after the flood"
stb_summary "$NAME"
