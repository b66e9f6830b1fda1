#!/usr/bin/env bash
# benches/doh.sh — stubborn's DNS over HTTPS (RFC 8484, HTTP/2) against its DNS over TLS and
# against dnsdist's outgoing DoH, all to the same real upstream: cache-miss throughput and
# CPU per miss, and the first answer from a fresh start when 853 is blocked. A benchmark,
# not a test: it asserts nothing, it measures and prints a Markdown report.
#
# Root only: everything runs in a private network namespace (only `lo`), made and removed
# through tests/netns/lib.sh. No packet leaves it.
#
# Upstream: one unbound (BENCH_UPSTREAM_THREADS threads, default 8; no query log) serving
# local data only, over DoT on 127.0.0.2:853 and DoH on 127.0.0.2:443 (`https-port: 443`,
# `http-endpoint: "/dns-query"`, the same certificate for dns.test): q1..q50.test, and every
# name under flood.test answered A 192.0.2.1 (bench_start_doh_upstream in benches/lib.sh).
#
# Forwarders (each freshly started for every measurement, alone):
#   stubborn  127.0.0.1:53    one pinned strict upstream 127.0.0.2 with tls_port 853 (the
#                             default) and https_port = 443: DoT is raced first, DoH one
#                             attempt delay (250 ms, the default) later. The SAME config in
#                             both stubborn variants; only the network differs:
#     stubborn-dot            853 open: DoT wins the race (nothing is sent to 443);
#     stubborn-doh            nft drops SYNs to 127.0.0.2:853 (no reject): DoH wins, and
#                             the background DoT re-races go unanswered.
#   dnsdist   127.0.0.1:5303  newServer 127.0.0.2:443, tls="openssl", subjectName dns.test,
#                             dohPath /dns-query, caStore = the test CA, one outgoing DoH
#                             worker thread; no packet cache (its default). If this dnsdist
#                             lacks outgoing DoH (`dnsdist --version` without
#                             outgoing-dns-over-https), it forwards over DoT instead and the
#                             report labels its row DoT and says so.
# Cores (with 2 or more CPUs): each forwarder runs under `taskset -c BENCH_FWD_CPU` (default
# 0; stubborn then sees one CPU, so it serves on one thread); unbound (every thread), dnsperf
# and the first-answer client under `taskset -c BENCH_UPSTREAM_CPU` (default 1). The
# forwarder's core is its own; the upstream and the load generator share the other.
#
# Phases (the load average is waited on and recorded before each; see benches/lib.sh):
#  1. miss: BENCH_ROUNDS rounds (default 5); in each, every variant in turn, freshly
#     started, warmed with one query (which makes its upstream connection), then
#     BENCH_NAMES distinct names (default 300000, u1..uN.flood.test) once each:
#     `dnsperf -c 16 -T 2 -q BENCH_OUTSTANDING -n 1 -l BENCH_SECONDS -t 5` (defaults 100
#     and 10 s: bounded by count and time). Every query is a cache miss (each name once; a
#     fresh start). Measured: QPS, mean latency, lost, the forwarder's CPU µs per answered
#     query (utime+stime of all its threads from /proc/PID/stat around the run), how busy
#     its core was, the upstream's CPU µs per query, and nft counters of the packets to
#     :853 and :443 (which transport really carried the run).
#  2. rate: the same at an equal offered load for every forwarder, BENCH_RATE_ROUNDS rounds
#     (default 3) of `dnsperf ... -Q BENCH_RATE -l BENCH_RATE_SECONDS` (defaults 25000/s,
#     below every forwarder's maximum here, and 5 s): CPU per query at the same rate, so
#     that neither forwarder's figure gains from batching under a heavier load.
#  3. first: BENCH_STARTS fresh starts (default 5) of stubborn with 853 open and with SYNs
#     to 853 dropped, alternating. A small client (python3, on the upstream's core) waits
#     before stubborn is spawned and from the spawn on sends q1.test over UDP every 0.5 ms
#     until the port is open (no ICMP port unreachable within 2 ms), then waits for that
#     query's answer (≤ 10 s). Reported: spawn → first answer, and first query → first
#     answer (stubborn races before any query at start, so the two differ by the start-up
#     only), and the transport that won (stubborn's "race won" log line).
#
# Environment: STUBBORN_BIN (default target/release/stubborn), BENCH_STUBBORN_LABEL (how the
# report names that binary, e.g. the commit it was built from; default: the repository's
# last commit touching src/ and Cargo.*), BENCH_ROUNDS, BENCH_NAMES,
# BENCH_SECONDS, BENCH_OUTSTANDING, BENCH_RATE, BENCH_RATE_ROUNDS, BENCH_RATE_SECONDS,
# BENCH_STARTS (see above), BENCH_VARIANTS (default "stubborn-dot stubborn-doh dnsdist"),
# BENCH_PHASES (default "miss rate first"),
# BENCH_STUBBORN_TOML (TOML put between stubborn's [server] and [[upstream]], e.g. a
# [cache] table; default none: the default cache), BENCH_FWD_CPU / BENCH_UPSTREAM_CPU,
# BENCH_UPSTREAM_THREADS (default 8), BENCH_LOAD_MAX / BENCH_QUIET_WAIT (the wait for a
# quiet machine: default 0.7 and 900 s), BENCH_OUT (report, default target/bench/doh.md;
# raw data next to it as doh.tsv, doh.rate.tsv and doh.first.tsv, configs in doh-configs/).
# Exit status: 0 when the report was written; 1 on a setup failure; 77 when it cannot run.

. "$(dirname "$0")/../tests/netns/lib.sh"
. "$(dirname "$0")/lib.sh"
STB_NAME=bench-doh

ROUNDS=${BENCH_ROUNDS:-5}
NAMES=${BENCH_NAMES:-300000}
RUN_SECONDS=${BENCH_SECONDS:-10}
OUTSTANDING=${BENCH_OUTSTANDING:-100}
RATE=${BENCH_RATE:-25000}
RATE_ROUNDS=${BENCH_RATE_ROUNDS:-3}
RATE_SECONDS=${BENCH_RATE_SECONDS:-5}
STARTS=${BENCH_STARTS:-5}
PHASES=" ${BENCH_PHASES:-miss rate first} "
read -r -a VARIANTS <<<"${BENCH_VARIANTS:-stubborn-dot stubborn-doh dnsdist}"
FWD_CPU=${BENCH_FWD_CPU:-0}
UP_CPU=${BENCH_UPSTREAM_CPU:-1}
FIRST_DEADLINE=10 # s: the first-answer client gives up after this
OUT=${BENCH_OUT:-$STB_REPO_ROOT/target/bench/doh.md}
TSV=${OUT%.md}.tsv
RTSV=${OUT%.md}.rate.tsv
FTSV=${OUT%.md}.first.tsv
for v in ROUNDS NAMES RUN_SECONDS OUTSTANDING RATE RATE_ROUNDS RATE_SECONDS STARTS FWD_CPU UP_CPU; do
    [[ ${!v} =~ ^[0-9]+$ ]] || {
        echo "$v must be a non-negative integer (got '${!v}')" >&2
        exit 1
    }
done
((ROUNDS >= 1 && ROUNDS <= 10 && NAMES >= 1 && NAMES <= 2000000 && RUN_SECONDS >= 1 && RUN_SECONDS <= 60 &&
    OUTSTANDING >= 1 && OUTSTANDING <= 9999 && RATE >= 1 && RATE <= 1000000 && RATE_ROUNDS >= 1 && RATE_ROUNDS <= 10 &&
    RATE_SECONDS >= 1 && RATE_SECONDS <= 60 && STARTS >= 1 && STARTS <= 20)) || {
    echo "bounds: BENCH_ROUNDS and BENCH_RATE_ROUNDS 1..10, BENCH_NAMES 1..2000000, BENCH_SECONDS and BENCH_RATE_SECONDS 1..60, BENCH_OUTSTANDING 1..9999, BENCH_RATE 1..1000000, BENCH_STARTS 1..20" >&2
    exit 1
}
for v in "${VARIANTS[@]}"; do
    case $v in stubborn-dot | stubborn-doh | dnsdist) ;; *)
        echo "unknown variant '$v' (stubborn-dot, stubborn-doh, dnsdist)" >&2
        exit 1
        ;;
    esac
done

stb_preflight openssl unbound unbound-checkconf kdig dnsperf nft ss awk getconf taskset python3
[[ -x $STUBBORN_BIN ]] || stb_fatal "$STB_NAME" "stubborn binary not found: $STUBBORN_BIN (cargo build --release --locked)"
# dnsdist is optional: without it the report says so and compares stubborn with itself.
DNSDIST_NOTE=""
DNSDIST_TRANSPORT=doh
if [[ " ${VARIANTS[*]} " == *" dnsdist "* ]]; then
    if ! command -v dnsdist >/dev/null; then
        DNSDIST_NOTE="dnsdist is not installed: no dnsdist row."
        read -r -a VARIANTS <<<"$(printf '%s ' "${VARIANTS[@]}" | sed 's/\<dnsdist\> //')"
    elif ! dnsdist --version 2>/dev/null | grep -q 'outgoing-dns-over-https'; then
        DNSDIST_TRANSPORT=dot
        DNSDIST_NOTE="This dnsdist build has no outgoing DoH (\`dnsdist --version\` lists no outgoing-dns-over-https): dnsdist is measured forwarding over **DoT** instead, so its row is not a DoH figure."
    fi
fi
# Cores: the forwarder on one, the upstream and the load generator on another.
PIN_FWD=()
PIN_UP=()
PIN_NOTE="not pinned (fewer than 2 usable CPUs, or BENCH_FWD_CPU = BENCH_UPSTREAM_CPU)"
if (($(nproc) >= 2 && FWD_CPU != UP_CPU)) && taskset -c "$FWD_CPU" true 2>/dev/null && taskset -c "$UP_CPU" true 2>/dev/null; then
    PIN_FWD=(taskset -c "$FWD_CPU")
    PIN_UP=(taskset -c "$UP_CPU")
    PIN_NOTE="forwarder on CPU $FWD_CPU; upstream unbound (all threads), dnsperf and the first-answer client on CPU $UP_CPU"
fi
mkdir -p "$(dirname "$OUT")"
NS=$(stb_ns_name doh)
stb_ns_create "$NS"
T=$STB_TMP
TABLE=stb_doh
stb_log "namespace $NS, temp dir $T, report $OUT; $PIN_NOTE"
START=$(date +%s)
LOAD_START=$(bench_loadavg)

# --- upstream ----------------------------------------------------------------------------------
bench_start_doh_upstream "$NS" "$T"
if ((${#PIN_UP[@]})); then
    taskset -a -p -c "$UP_CPU" "$UPSTREAM_PID" >/dev/null || stb_fatal "$STB_NAME" "taskset on the upstream failed"
fi
got=$(stb_exec "$NS" kdig @127.0.0.2 -p 443 +https=/dns-query +tls-pin="$PIN" +time=2 +retry=0 +short u7.flood.test)
[[ $got == 192.0.2.1 ]] || stb_fatal "$STB_NAME" "upstream DoH: u7.flood.test answered '$got', want 192.0.2.1" "$T/upstream.log"

# --- forwarder configs ---------------------------------------------------------------------------
STUBBORN_CONF=$T/doh-stubborn.toml
bench_conf_stubborn "$STUBBORN_CONF" strict "$PIN" "${BENCH_STUBBORN_TOML:-}" 127.0.0.2
printf 'https_port = 443\nhttps_path = "/dns-query"\n' >>"$STUBBORN_CONF"
DNSDIST_CONF=$(bench_conf_file "$T" dnsdist doh)
bench_conf_dnsdist "$DNSDIST_CONF" "$T" "$DNSDIST_TRANSPORT" 127.0.0.2
if [[ " ${VARIANTS[*]} " == *" dnsdist "* ]]; then
    dnsdist --check-config -C "$DNSDIST_CONF" >"$T/dnsdist-check.log" 2>&1 ||
        stb_fatal "$STB_NAME" "dnsdist rejects $DNSDIST_CONF" "$T/dnsdist-check.log"
fi
for ((n = 1; n <= NAMES; n++)); do echo "u$n.flood.test A"; done >"$T/miss.queries"

variant_label() {
    case $1 in
    stubborn-dot) echo "stubborn, DoT (853 open)" ;;
    stubborn-doh) echo "stubborn, DoH (SYNs to 853 dropped)" ;;
    dnsdist) [[ $DNSDIST_TRANSPORT == doh ]] && echo "dnsdist, DoH" || echo "dnsdist, **DoT** (no outgoing DoH in this build)" ;;
    esac
}
variant_port() { [[ $1 == dnsdist ]] && bench_port dnsdist || bench_port stubborn; }

# nft_rules DROP853: counters of the packets to 127.0.0.2:853 and :443 (all of them, first),
# then, with DROP853 = 1, a rule dropping the SYNs to 853 (no reject: a silent network).
nft_rules() {
    printf '%s\n' "ip daddr 127.0.0.2 tcp dport 853 counter" "ip daddr 127.0.0.2 tcp dport 443 counter"
    if [[ $1 == 1 ]]; then
        echo "ip daddr 127.0.0.2 tcp dport 853 tcp flags & (fin|syn|rst|ack) == syn counter drop"
    fi
}

# nft_counts: "PKTS853 PKTS443 DROPPED853" from one listing of the table (SYNs are
# retransmitted in the background, so two listings could disagree).
nft_counts() {
    stb_nft_rules "$NS" "$TABLE" | awk '
        function pk(   i) { for (i = 1; i < NF; i++) if ($i == "packets") return $(i + 1); return 0 }
        / drop/ { d = pk(); next }
        /dport 853 counter/ { a = pk() }
        /dport 443 counter/ { b = pk() }
        END { print a + 0, b + 0, d + 0 }'
}

# start_fwd VARIANT LOG: start the variant's forwarder on its core and wait (≤ 10 s) for its
# listener. Sets FWD_PID.
start_fwd() {
    local variant=$1 log=$2 proto=both
    if [[ $variant == dnsdist ]]; then
        stb_spawn "$NS" "$log" "${PIN_FWD[@]}" dnsdist --supervised --disable-syslog -C "$DNSDIST_CONF"
        proto=udp
    else
        stb_spawn "$NS" "$log" "${PIN_FWD[@]}" "$STUBBORN_BIN" --config "$STUBBORN_CONF"
    fi
    FWD_PID=$STB_LAST_PID
    stb_wait_listening "$NS" "$FWD_PID" "$proto" "$(variant_port "$variant")" 127.0.0.1 100 ||
        stb_fatal "$STB_NAME" "$variant did not come up" "$log"
}

# stubborn_winners LOG: the transports that won stubborn's races, in order ("https, https").
stubborn_winners() { grep -o 'race won .* transport=[a-z]*' "$1" 2>/dev/null | sed 's/.*transport=//' | paste -sd, | sed 's/,/, /g'; }

# CPU µs per query from two tick counts (per_query T0 T1 N).
per_query() { awk -v t=$(($2 - $1)) -v hz="$BENCH_CLK_TCK" -v n="$3" 'BEGIN { printf "%.2f", (n > 0 ? t * 1e6 / hz / n : 0) }'; }

# measure_miss KIND VARIANT ROUND DNSPERF_LOAD...: one fresh start, one warm-up query, one
# dnsperf run over the miss names; appends "variant round qps avg_ms completed lost cpu_us
# upstream_cpu_us busy_pct upstream_threads pkts853 pkts443 dropped853 rcodes winners" to
# $TSV (KIND max) or $RTSV (KIND rate).
measure_miss() {
    local kind=$1 variant=$2 round=$3 port log out w c0 c1 u0 u1 n cpu ucpu busy rt p853 p443 d853 winners drop=0 file=$TSV
    local -a rules=()
    shift 3
    [[ $kind == rate ]] && file=$RTSV
    port=$(variant_port "$variant")
    log=$T/$kind-$variant-$round.log
    out=$T/$kind-$variant-$round.dnsperf
    [[ $variant == stubborn-doh ]] && drop=1
    mapfile -t rules < <(nft_rules "$drop")
    stb_nft_table "$NS" "$TABLE" "${rules[@]}" || stb_fatal "$STB_NAME" "nft failed"
    start_fwd "$variant" "$log"
    read -r w _ <<<"$(bench_query "$NS" "$port" "warm$round.flood.test" 6 192.0.2.1)"
    [[ $w == ok ]] || stb_fatal "$STB_NAME" "$variant round $round: the warm-up query got '$w'" "$log"
    bench_task_ticks "$UPSTREAM_PID" >"$T/upstream-threads.0"
    c0=$(bench_cpu_ticks "$FWD_PID")
    u0=$(bench_cpu_ticks "$UPSTREAM_PID")
    stb_exec "$NS" "${PIN_UP[@]}" dnsperf -s 127.0.0.1 -p "$port" -d "$T/miss.queries" "$@" >"$out" 2>&1 || true
    c1=$(bench_cpu_ticks "$FWD_PID")
    u1=$(bench_cpu_ticks "$UPSTREAM_PID")
    bench_task_ticks "$UPSTREAM_PID" >"$T/upstream-threads.1"
    grep -q '^Statistics:' "$out" || stb_fatal "$STB_NAME" "dnsperf gave no statistics ($variant round $round)" "$out" "$log"
    n=$(bench_dp "$out" completed)
    rt=$(bench_dp "$out" runtime_s)
    cpu=$(per_query "$c0" "$c1" "$n")
    ucpu=$(per_query "$u0" "$u1" "$n")
    busy=$(awk -v t=$((c1 - c0)) -v hz="$BENCH_CLK_TCK" -v s="$rt" 'BEGIN { printf "%.0f", (s > 0 ? t / hz / s * 100 : 0) }')
    read -r p853 p443 d853 <<<"$(nft_counts)"
    stb_stop "$FWD_PID" 50
    stb_nft_del "$NS" "$TABLE"
    winners=-
    [[ $variant == stubborn-* ]] && winners=$(stubborn_winners "$log")
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$variant" "$round" "$(bench_dp "$out" qps)" \
        "$(bench_dp "$out" avg_ms)" "$n" "$(bench_dp "$out" lost)" "$cpu" "$ucpu" "$busy" \
        "$(bench_busy_threads "$T/upstream-threads.0" "$T/upstream-threads.1")" "$p853" "$p443" "$d853" \
        "$(bench_dp_rcodes "$out")" "${winners:-none}" >>"$file"
    stb_log "$kind $variant round $round: $(bench_dp "$out" qps) qps, mean $(bench_dp "$out" avg_ms) ms, lost $(bench_dp "$out" lost), ${cpu} µs CPU/query (core ${busy}% busy; upstream ${ucpu}); packets :853 $p853 (dropped $d853), :443 $p443; races won: ${winners:-none}"
}

# The first-answer client: see phase 3 above. Prints "STATUS FIRST_PROBE_NS SEND_NS ANSWER_NS
# PROBES" (CLOCK_REALTIME ns, as `date +%s%N`).
cat >"$T/first_answer.py" <<'PY'
import os, socket, struct, sys, time

port, name, expect, go, ready, deadline = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4], sys.argv[5], float(sys.argv[6])
want = socket.inet_aton(expect)

def query(qid):
    q = struct.pack(">HHHHHH", qid, 0x0100, 1, 0, 0, 0)
    for label in name.rstrip(".").split("."):
        q += bytes([len(label)]) + label.encode()
    return q + b"\x00" + struct.pack(">HH", 1, 1)

open(ready, "w").close()
limit = time.monotonic() + 5
while not os.path.exists(go):
    if time.monotonic() > limit:
        print("no-go - - - 0")
        sys.exit(1)
    time.sleep(0.0002)
start = time.monotonic()
first = time.time_ns()
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.connect(("127.0.0.1", port))
qid, probes, sent = 0, 0, "-"
while time.monotonic() - start < deadline:
    qid = qid % 65535 + 1
    probes += 1
    try:
        sent = time.time_ns()
        s.send(query(qid))
        s.settimeout(0.002)
        data = s.recv(4096)
    except ConnectionRefusedError:  # ICMP port unreachable: not listening yet
        time.sleep(0.0005)
        continue
    except socket.timeout:  # taken in: wait for this query's answer
        s.settimeout(max(0.001, deadline - (time.monotonic() - start)))
        try:
            data = s.recv(4096)
        except (socket.timeout, OSError):
            print("timeout", first, sent, "-", probes)
            sys.exit(0)
    answered = time.time_ns()
    rid, flags = struct.unpack(">HH", data[:4])
    rcode = flags & 0xF
    status = "ok" if rid == qid and rcode == 0 and want in data[12:] else "rcode%d" % rcode
    print(status, first, sent, answered, probes)
    sys.exit(0)
print("timeout", first, sent, "-", probes)
PY

# measure_first CASE START: CASE open | dropped. Appends "case start status spawn_to_answer_ms
# query_to_answer_ms spawn_to_listen_ms probes winners pkts853 dropped853" to $FTSV.
measure_first() {
    local fcase=$1 i=$2 log cout cpid t_spawn k line status first sent answered probes drop=0 winners p853 d853=0
    local -a rules=()
    [[ $fcase == dropped ]] && drop=1
    log=$T/first-$fcase-$i.log
    cout=$T/first-$fcase-$i.out
    rm -f "$T/go" "$T/ready"
    mapfile -t rules < <(nft_rules "$drop")
    stb_nft_table "$NS" "$TABLE" "${rules[@]}" || stb_fatal "$STB_NAME" "nft failed"
    stb_spawn "$NS" "$cout" "${PIN_UP[@]}" python3 "$T/first_answer.py" 53 q1.test 198.51.100.1 "$T/go" "$T/ready" "$FIRST_DEADLINE"
    cpid=$STB_LAST_PID
    k=0
    while [[ ! -e $T/ready ]] && ((k < 100)); do
        sleep 0.05
        k=$((k + 1))
    done
    [[ -e $T/ready ]] || stb_fatal "$STB_NAME" "the first-answer client did not start" "$cout"
    t_spawn=$(date +%s%N)
    touch "$T/go"
    stb_spawn "$NS" "$log" "${PIN_FWD[@]}" "$STUBBORN_BIN" --config "$STUBBORN_CONF"
    FWD_PID=$STB_LAST_PID
    k=0
    while stb_alive "$cpid" && ((k < (FIRST_DEADLINE + 5) * 10)); do
        sleep 0.1
        k=$((k + 1))
    done
    stb_stop "$cpid" 10
    line=$(head -n 1 "$cout")
    read -r status first sent answered probes <<<"$line"
    sleep 0.5 # the log line of the race the answer came from, and any other still running
    winners=$(stubborn_winners "$log")
    stb_stop "$FWD_PID" 50
    read -r p853 _ d853 <<<"$(nft_counts)"
    stb_nft_del "$NS" "$TABLE"
    local s2a=- q2a=- s2l=-
    if [[ $answered =~ ^[0-9]+$ ]]; then
        s2a=$(awk -v a="$answered" -v b="$t_spawn" 'BEGIN { printf "%.1f", (a - b) / 1e6 }')
        q2a=$(awk -v a="$answered" -v b="$sent" 'BEGIN { printf "%.1f", (a - b) / 1e6 }')
    fi
    [[ $sent =~ ^[0-9]+$ ]] && s2l=$(awk -v a="$sent" -v b="$t_spawn" 'BEGIN { printf "%.1f", (a - b) / 1e6 }')
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$fcase" "$i" "${status:-none}" "$s2a" "$q2a" "$s2l" \
        "${probes:--}" "${winners:-none}" "$p853" "$d853" >>"$FTSV"
    stb_log "first $fcase start $i: ${status:-none}; spawn → answer $s2a ms, query → answer $q2a ms (first query $s2l ms after spawn, $probes probes); races won: ${winners:-none}"
}

: >"$TSV"
: >"$RTSV"
: >"$FTSV"
MAX_LOAD=(-c 16 -T 2 -q "$OUTSTANDING" -n 1 -l "$RUN_SECONDS" -t 5)
RATE_LOAD=(-c 16 -T 2 -q "$OUTSTANDING" -Q "$RATE" -n 1 -l "$RATE_SECONDS" -t 5)
if [[ $PHASES == *" miss "* ]]; then
    bench_wait_quiet "the miss runs"
    for ((round = 1; round <= ROUNDS; round++)); do
        for v in "${VARIANTS[@]}"; do
            measure_miss max "$v" "$round" "${MAX_LOAD[@]}"
        done
    done
fi
if [[ $PHASES == *" rate "* ]]; then
    bench_wait_quiet "the fixed-rate miss runs"
    for ((round = 1; round <= RATE_ROUNDS; round++)); do
        for v in "${VARIANTS[@]}"; do
            measure_miss rate "$v" "$round" "${RATE_LOAD[@]}"
        done
    done
fi
if [[ $PHASES == *" first "* ]]; then
    bench_wait_quiet "the first-answer starts"
    for ((i = 1; i <= STARTS; i++)); do
        for fcase in open dropped; do
            measure_first "$fcase" "$i"
        done
    done
fi
ELAPSED=$(($(date +%s) - START))
LOAD_END=$(bench_loadavg)

CONFDIR=$(dirname "$OUT")/doh-configs
rm -rf "$CONFDIR"
mkdir -p "$CONFDIR"
cp "$STUBBORN_CONF" "$DNSDIST_CONF" "$T/upstream.conf" "$CONFDIR/" 2>/dev/null || true
sed -i '/local-data: "q[0-9]*\.test/d' "$CONFDIR/upstream.conf" 2>/dev/null || true

# --- report -------------------------------------------------------------------------------------
# The miss helpers read $MTSV (the table being written) with $MROUNDS rounds.
col() { awk -F'\t' -v v="$1" -v c="$2" '$1 == v { print $c }' "$MTSV"; }
med() { col "$1" "$2" | bench_median; }
each() { col "$1" "$2" | awk -v d="${3:-0}" '{ printf "%s%.*f", (NR > 1 ? ", " : ""), d, $1 }'; }
fmt() { awk -v v="$1" -v d="${2:-0}" 'BEGIN { if (v ~ /^[0-9.]+$/) printf "%.*f", d, v; else print v }'; }
sum() { col "$1" "$2" | awk '{ s += $1 } END { print s + 0 }'; }
# per_core CPU_US: queries one fully used core answers at that CPU cost.
per_core() { awk -v c="$1" 'BEGIN { if (c ~ /^[0-9.]+$/ && c > 0) printf "%.0f", 1e6 / c; else print "-" }'; }
# round_ratio A B COLUMN: A's value over B's, round by round.
round_ratio() {
    local r sep=""
    for ((r = 1; r <= MROUNDS; r++)); do
        printf '%s%s' "$sep" "$(bench_ratio "$(awk -F'\t' -v v="$1" -v r="$r" -v c="$3" '$1 == v && $2 == r { print $c }' "$MTSV")" \
            "$(awk -F'\t' -v v="$2" -v r="$r" -v c="$3" '$1 == v && $2 == r { print $c }' "$MTSV")")"
        sep=", "
    done
}
has() { [[ " ${VARIANTS[*]} " == *" $1 "* ]]; }
fcol() { awk -F'\t' -v k="$1" -v c="$2" '$1 == k && $4 != "-" { print $c }' "$FTSV"; }
# mmm CASE COLUMN: "min / median / max" of a first-answer column over the answered starts.
mmm() {
    fcol "$1" "$2" | sort -g | awk '{ a[NR] = $1 } END {
        if (NR == 0) { print "no answer"; exit }
        m = (NR % 2 ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2)
        printf "%.1f / %.1f / %.1f", a[1], m, a[NR] }'
}
fmed() { fcol "$1" "$2" | bench_median; }

# miss_section KIND: the table, transport check and ratios of the max or rate runs.
miss_section() {
    local kind=$1 v p wn r ok percore="QPS per core"
    MTSV=$TSV MROUNDS=$ROUNDS
    if [[ $kind == rate ]]; then
        MTSV=$RTSV MROUNDS=$RATE_ROUNDS percore="10⁶ ÷ CPU µs/query"
    fi
    echo
    echo "CPU µs/query: the forwarder's utime+stime (all threads) over the answered queries. Core busy: that CPU time over the run's length. QPS per core: 10⁶ ÷ CPU µs/query, the rate one fully used core would carry at that cost per query (a floor where the core was not saturated: the cost per query falls as the load rises and more work is done per wake-up; at an equal rate it is only the inverse of the cost). Packets: all packets to the upstream's :853 / :443 during the start, warm-up and run (the dropped SYNs to 853 in brackets)."
    echo
    echo "| forwarder | QPS (median) | QPS each round | CPU µs/query (median) | CPU µs/query each round | core busy % | $percore | mean latency ms | lost (all rounds) | upstream CPU µs/query | upstream threads serving | packets :853 / :443 (round 1) | stubborn's races won (round 1) |"
    echo "|---|---|---|---|---|---|---|---|---|---|---|---|---|"
    for v in "${VARIANTS[@]}"; do
        p=$(awk -F'\t' -v v="$v" '$1 == v && $2 == 1 { printf "%s%s / %s", $11, ($13 > 0 ? " (" $13 " dropped)" : ""), $12 }' "$MTSV")
        wn=$(awk -F'\t' -v v="$v" '$1 == v && $2 == 1 { print $15 }' "$MTSV")
        echo "| $(variant_label "$v") | $(fmt "$(med "$v" 3)") | $(each "$v" 3) | $(fmt "$(med "$v" 7)" 1) | $(each "$v" 7 1) | $(each "$v" 9) | $(per_core "$(med "$v" 7)") | $(fmt "$(med "$v" 4)" 3) | $(sum "$v" 6) | $(fmt "$(med "$v" 8)" 1) | $(each "$v" 10) | $p | $wn |"
    done
    echo
    if has stubborn-dot; then
        echo "Transport check, all rounds: stubborn-dot sent $(sum stubborn-dot 12) packets to :443 (0: DoH never used) and won its races over $(col stubborn-dot 15 | tr -d ' ' | tr ',' '\n' | sort | uniq -c | awk '{ printf "%s%s %s", (n++ ? ", " : ""), $2, $1 }')."
    fi
    if has stubborn-doh; then
        echo "stubborn-doh sent $(awk -F'\t' '$1 == "stubborn-doh" { s += $11 - $13 } END { print s + 0 }' "$MTSV") packets to :853 besides the $(sum stubborn-doh 13) dropped SYNs (0: DoT never carried a query) and won its races over $(col stubborn-doh 15 | tr -d ' ' | tr ',' '\n' | sort | uniq -c | awk '{ printf "%s%s %s", (n++ ? ", " : ""), $2, $1 }')."
    fi
    echo
    echo "Ratios (medians; each round in brackets):"
    echo
    if has stubborn-doh && has stubborn-dot; then
        r=$(bench_ratio "$(med stubborn-doh 7)" "$(med stubborn-dot 7)")
        ok=$(awk -v a="$(med stubborn-doh 7)" -v b="$(med stubborn-dot 7)" 'BEGIN { print (b > 0 && a / b <= 1.3) ? "met" : "not met" }')
        echo "- stubborn CPU per miss, DoH ÷ DoT: **$r** ($(round_ratio stubborn-doh stubborn-dot 7)); target ≤ 1.3 → **$ok**"
        [[ $kind == rate ]] || echo "- stubborn QPS, DoH ÷ DoT: $(bench_ratio "$(med stubborn-doh 3)" "$(med stubborn-dot 3)") ($(round_ratio stubborn-doh stubborn-dot 3))"
    fi
    if has stubborn-doh && has dnsdist; then
        [[ $kind == rate ]] || echo "- stubborn DoH ÷ $(variant_label dnsdist | sed 's/\*//g'), measured QPS (each on one core): **$(bench_ratio "$(med stubborn-doh 3)" "$(med dnsdist 3)")** ($(round_ratio stubborn-doh dnsdist 3))"
        if [[ $kind == rate ]]; then
            echo "- CPU per miss at the same rate, $(variant_label dnsdist | sed 's/\*//g') ÷ stubborn DoH: **$(bench_ratio "$(med dnsdist 7)" "$(med stubborn-doh 7)")** ($(round_ratio dnsdist stubborn-doh 7))"
        else
            echo "- stubborn DoH ÷ $(variant_label dnsdist | sed 's/\*//g'), QPS per core (10⁶ ÷ CPU µs/query, i.e. dnsdist's CPU per query ÷ stubborn's): **$(bench_ratio "$(med dnsdist 7)" "$(med stubborn-doh 7)")** ($(round_ratio dnsdist stubborn-doh 7))"
        fi
    fi
    echo
}

{
    echo "### Results ($(date -u '+%Y-%m-%d %H:%M UTC'); ${ELAPSED} s)"
    echo
    echo "Machine: $(bench_machine); load average $LOAD_START at the start, $LOAD_END at the end."
    echo "Cores: $PIN_NOTE."
    echo "Versions: ${BENCH_STUBBORN_LABEL:+stubborn }${BENCH_STUBBORN_LABEL:-$(bench_peer_version stubborn)} ($STUBBORN_BIN); $(bench_peer_version unbound) (upstream, $((${BENCH_UPSTREAM_THREADS:-8})) threads); $(bench_peer_version dnsdist); $(dnsperf -h 2>&1 | sed -n 's/^Version /dnsperf /p')."
    [[ -z $DNSDIST_NOTE ]] || printf '\n%s\n' "$DNSDIST_NOTE"
    echo
    echo "Load before each phase:"
    echo
    printf '%s' "$BENCH_LOAD_NOTES"
    echo
    if [[ $PHASES == *" miss "* ]]; then
        echo "#### Cache misses, as fast as answered: $NAMES distinct names once each, \`dnsperf ${MAX_LOAD[*]}\`, $ROUNDS rounds, each forwarder freshly started and alone"
        miss_section max
    fi
    if [[ $PHASES == *" rate "* ]]; then
        echo "#### Cache misses at an equal rate: \`dnsperf ${RATE_LOAD[*]}\` over the same names, $RATE_ROUNDS rounds, each forwarder freshly started and alone"
        miss_section rate
    fi
    if [[ $PHASES == *" first "* ]]; then
        echo "#### First answer from a fresh start: $STARTS starts each, alternating"
        echo
        echo "Spawn → answer: from just before stubborn is spawned to the answer of the first query (q1.test over UDP) it took in. Query → answer: from sending that query, which the client sends within 0.5 ms of the port opening. stubborn races for a connection at start, before any query."
        echo
        echo "| 853 | answered | spawn → answer ms, min / median / max | each start | query → answer ms, min / median / max | first query after spawn ms (median) | races won (each start) | SYNs to 853 dropped (all starts) |"
        echo "|---|---|---|---|---|---|---|---|"
        for fcase in open dropped; do
            ans=$(awk -F'\t' -v k="$fcase" '$1 == k && $3 == "ok" { n++ } $1 == k { t++ } END { printf "%d/%d", n, t }' "$FTSV")
            ea=$(awk -F'\t' -v k="$fcase" '$1 == k { printf "%s%s", (n++ ? ", " : ""), ($3 == "ok" ? $4 : $3) }' "$FTSV")
            wn=$(awk -F'\t' -v k="$fcase" '$1 == k { printf "%s%s", (n++ ? "; " : ""), $8 }' "$FTSV")
            dr=$(awk -F'\t' -v k="$fcase" '$1 == k { s += $10 } END { print s + 0 }' "$FTSV")
            label="open (DoT)"
            [[ $fcase == dropped ]] && label="SYNs dropped (DoH)"
            echo "| $label | $ans | $(mmm "$fcase" 4) | $ea | $(mmm "$fcase" 5) | $(fmt "$(fmed "$fcase" 6)" 1) | $wn | $dr |"
        done
        echo
        echo "- median spawn → answer, 853 dropped ÷ 853 open: $(bench_ratio "$(fmed dropped 4)" "$(fmed open 4)"); the difference, $(awk -v a="$(fmed dropped 4)" -v b="$(fmed open 4)" 'BEGIN { if (a ~ /^[0-9.]+$/ && b ~ /^[0-9.]+$/) printf "%.1f ms", a - b; else print "—" }'), is what a network blocking 853 costs the first query (the attempt delay is $(grep -q attempt_delay_ms "$STUBBORN_CONF" && sed -n 's/^attempt_delay_ms = //p' "$STUBBORN_CONF" || echo "250 ms, the default"))."
        echo
    fi
} >"$OUT"
cat "$OUT"
