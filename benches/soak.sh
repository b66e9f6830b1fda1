#!/usr/bin/env bash
# benches/soak.sh — a soak with faults (issue 14, part 4): a steady mixed load against
# stubborn and two upstreams for SOAK_SECONDS (default 30 min) while faults rotate; the
# daemon's descriptors, VmRSS and threads are sampled every 10 s and must end where they
# were at SOAK_BASELINE_AT. Unlike the other benchmarks it asserts: the exit status is 0 only
# if no query was lost, SERVFAIL came only in windows where every upstream was unreachable,
# and the samples stayed flat. `.ci/run` runs a 2-minute version (docs/soak.md).
#
# Root only: everything runs in a private network namespace (only `lo`), made and removed
# through tests/netns/lib.sh. No packet leaves it.
#
# Upstreams (unbound, the test zone; every name under flood.test answers A 192.0.2.1; no
# query log):
#   u2           127.0.0.2:853, DNS over TLS, strict, pinned (the primary)
#   resolv.conf  a `resolv_conf` upstream (opportunistic) reading T/resolv.conf, which names
#                127.0.0.3; a second unbound serves TLS on :853 and plain DNS on :53 on
#                127.0.0.3 and 127.0.0.4, so rewriting the file moves the upstream.
# stubborn: 127.0.0.1:53, metrics on 127.0.0.1:9153, every other key at its default.
#
# Load: the cache is first filled with 12 000 fresh names (more than its 10 000 entries), so
# memory is in steady state from the start. Then one dnsperf for the whole run: SOAK_RATE
# queries/s (default 2000; `-Q`, `-q 500`, `-c 4`, `-t 15`: above query_timeout_ms, so
# stubborn's own answers are counted, SERVFAIL included); 9 in 10 queries are for 53 names
# always cached, 1 in 10 a name not asked before (the list repeats after 300 s, when those
# answers are long gone from the cache).
#
# Windows: a healthy one until SOAK_BASELINE_AT + 5 s, then faults in this order, each for
# a window of SOAK_WINDOW_MIN..SOAK_WINDOW_MAX s (default 30..60, drawn with SOAK_SEED),
# applied for the first two thirds and lifted for the last third; the run ends with at
# least 20 s healthy:
#   rst            every packet to 127.0.0.2:853 answered with a TCP reset (nft reject)
#   sighup         a SIGHUP reload every 3 s
#   pin-mismatch   u2 restarted with another key (its pin no longer matches), then restored
#   resolv-rewrite T/resolv.conf rewritten (atomic rename) between 127.0.0.3 and .4 every
#                  third of the window
#   blackhole      every packet from or to 127.0.0.2 dropped (mid-stream, both hooks)
#   restart        u2 stopped and started again
#   syn-drop       every SYN to any upstream address dropped (established connections live)
#   loss5          5% of upstream packets dropped each way (numgen random mod 100 < 5)
#   suspend        faked (a real suspend cannot be faked on a live process: see
#                  docs/soak.md): stubborn and dnsperf are frozen (SIGSTOP) for
#                  SOAK_FREEZE s (default 8) while every upstream connection stubborn had
#                  is silently blackholed (by its port, as a NAT box forgetting it would),
#                  then thawed (SIGCONT); new connections work. No boot-time jump tells
#                  stubborn a suspend happened, so it learns that its connections are dead
#                  from its health policy (dead_after_silence_ms, 2 s), and SIGSTOP, unlike
#                  a suspend, lets the monotonic clock run: cache misses held through the
#                  freeze or sent before the deaths are noticed may get SERVFAIL (allowed: at
#                  most the misses of dead_after_silence_ms + query_timeout_ms, 6 s)
#   all-down       every packet from or to every upstream address dropped: the only window
#                  where SERVFAIL is allowed otherwise (cache misses; hits are still served)
# SERVFAIL per window comes from stubborn's metrics (stubborn_queries_total), read at each
# window's edges, with the namespace's UDP receive-buffer drops (/proc/net/snmp).
#
# Environment: STUBBORN_BIN (default target/release/stubborn), SOAK_SECONDS (default 1800),
# SOAK_RATE, SOAK_WINDOW_MIN / SOAK_WINDOW_MAX, SOAK_BASELINE_AT (default 300, or 30 when
# SOAK_SECONDS < 600), SOAK_FREEZE, SOAK_SEED (default 14), SOAK_FAULTS (the rotation, the
# names above separated by spaces; default all of them in that order), SOAK_OUT (report, default
# target/bench/soak.md; soak.csv and soak.svg next to it), SOAK_SERVFAIL_GATE (default 1; 0:
# SERVFAIL while an upstream was reachable is reported but does not fail the run),
# STB_KEEP_TMP=1.
# Closing line: "soak: ... ok" or "soak: ... FAILED (reasons)"; exit 0 only if ok, 1 on a
# failure, 77 when it cannot run (CI=true makes that a failure).

. "$(dirname "$0")/../tests/netns/lib.sh"
. "$(dirname "$0")/lib.sh"
STB_NAME=soak

SECONDS_TOTAL=${SOAK_SECONDS:-1800}
RATE=${SOAK_RATE:-2000}
WMIN=${SOAK_WINDOW_MIN:-30}
WMAX=${SOAK_WINDOW_MAX:-60}
FREEZE=${SOAK_FREEZE:-8}
SEED=${SOAK_SEED:-14}
SERVFAIL_GATE=${SOAK_SERVFAIL_GATE:-1}
if [[ -z ${SOAK_BASELINE_AT:-} ]]; then
    BASELINE_AT=300
    ((SECONDS_TOTAL >= 600)) || BASELINE_AT=30
else
    BASELINE_AT=$SOAK_BASELINE_AT
fi
OUT=${SOAK_OUT:-$STB_REPO_ROOT/target/bench/soak.md}
CSV=${OUT%.md}.csv
SVG=${OUT%.md}.svg
for v in SECONDS_TOTAL RATE WMIN WMAX FREEZE SEED BASELINE_AT; do
    [[ ${!v} =~ ^[0-9]{1,6}$ ]] || {
        echo "soak: $v must be a whole number, got '${!v}'" >&2
        exit 1
    }
done
((WMIN >= 6 && WMAX >= WMIN && FREEZE >= 1 && FREEZE < WMIN && SECONDS_TOTAL >= BASELINE_AT + 30)) || {
    echo "soak: need 6 <= SOAK_WINDOW_MIN <= SOAK_WINDOW_MAX, 1 <= SOAK_FREEZE < SOAK_WINDOW_MIN, SOAK_SECONDS >= SOAK_BASELINE_AT + 30" >&2
    exit 1
}

stb_preflight openssl unbound unbound-checkconf kdig dnsperf nft ss curl awk python3
[[ -x $STUBBORN_BIN ]] || stb_fatal "$STB_NAME" "stubborn binary not found: $STUBBORN_BIN (cargo build --release --locked)"
mkdir -p "$(dirname "$OUT")"
NS=$(stb_ns_name soak)
stb_ns_create "$NS"
T=$STB_TMP
TABLE=stb_soak
stb_log "namespace $NS, temp dir $T, report $OUT"
LOAD_START=$(bench_loadavg)

# --- upstreams ----------------------------------------------------------------------------------
mkdir -p "$T/other"
stb_make_pki "$T" || stb_fatal "$STB_NAME" "openssl failed" "$T/openssl.log"
PIN=$STB_PIN
stb_make_pki "$T/other" || stb_fatal "$STB_NAME" "openssl failed (the other key)" "$T/other/openssl.log"
upconf() { # FILE PKI_DIR IP@PORT...
    STB_UPSTREAM_LOG_QUERIES=no STB_UPSTREAM_FLOOD_ZONE=flood.test stb_unbound_upstream_conf "$@"
}
upconf "$T/u2.conf" "$T" 127.0.0.2@853
upconf "$T/u2-other.conf" "$T/other" 127.0.0.2@853
upconf "$T/u3.conf" "$T" 127.0.0.3@853 127.0.0.3@53 127.0.0.4@853 127.0.0.4@53
start_u2() { # CONF
    stb_start_unbound "$NS" "$1" "$T/u2.log" 127.0.0.2@853
    U2_PID=$STB_UNBOUND_PID
}
start_u2 "$T/u2.conf"
stb_start_unbound "$NS" "$T/u3.conf" "$T/u3.log" 127.0.0.3@853 127.0.0.3@53 127.0.0.4@853 127.0.0.4@53
for ip in 127.0.0.2 127.0.0.3 127.0.0.4; do
    stb_retry 30 stb_exec "$NS" kdig @"$ip" -p 853 +tls +tls-pin="$PIN" +time=2 +retry=0 +short a.test ||
        stb_fatal "$STB_NAME" "unbound does not answer DoT on $ip" "$T/u2.log" "$T/u3.log"
done
set_resolv() { # IP: the file is replaced by a rename, as resolvconf and NetworkManager do
    printf '# written by benches/soak.sh\nnameserver %s\n' "$1" >"$T/resolv.conf.new"
    mv "$T/resolv.conf.new" "$T/resolv.conf"
}
set_resolv 127.0.0.3

# --- stubborn -----------------------------------------------------------------------------------
cat >"$T/stubborn.toml" <<EOF
[server]
listen = ["127.0.0.1:53"]

[metrics]
listen = "127.0.0.1:9153"

[[upstream]]
name = "u2"
addresses = ["127.0.0.2"]
tls_name = "dns.test"
pins = ["key-fp:SHA256:$PIN"]

[[upstream]]
name = "resolv.conf"
resolv_conf = "$T/resolv.conf"
EOF
RUST_LOG=info,hickory_proto=warn stb_start_stubborn "$NS" "$T/stubborn.toml" "$T/stubborn.log"
PID=$STUBBORN_PID
scrape() { stb_exec "$NS" curl -s --max-time 3 http://127.0.0.1:9153/metrics 2>/dev/null || true; }
# answers RCODE|all: client queries answered so far (both transports).
answers() {
    scrape | awk -v rc="$1" '/^stubborn_queries_total\{/ { if (rc == "all" || index($0, "rcode=\"" rc "\"")) s += $NF } END { print s + 0 }'
}
fds() { ls "/proc/$PID/fd" 2>/dev/null | wc -l; }
# udp_drops: datagrams the namespace's kernel dropped for want of receive buffer (stubborn's
# sockets or dnsperf's): the UDP RcvbufErrors counter of /proc/net/snmp.
udp_drops() {
    stb_exec "$NS" cat /proc/net/snmp | awk '/^Udp:/ { if (!h) { for (i = 2; i <= NF; i++) c[$i] = i; h = 1 } else print $c["RcvbufErrors"] }'
}
# stubborn_drops: those of them at stubborn's own listening sockets (port 53, the drops
# column of /proc/net/udp), so a drop is told from one at dnsperf's sockets.
stubborn_drops() {
    stb_exec "$NS" cat /proc/net/udp /proc/net/udp6 | awk '$2 ~ /:0035$/ { s += $NF } END { print s + 0 }'
}
threads() { awk '/^Threads:/ { print $2 }' "/proc/$PID/status" 2>/dev/null; }

stb_log "filling the cache (12 000 fresh names)"
for ((i = 1; i <= 12000; i++)); do echo "fill$i.flood.test A"; done >"$T/fill.queries"
stb_exec "$NS" dnsperf -s 127.0.0.1 -d "$T/fill.queries" -n 1 -Q 3000 -q 200 -t 5 >"$T/fill.dnsperf" 2>&1 || true
FILL="$(bench_dp "$T/fill.dnsperf" completed)/12000 answered, $(bench_dp "$T/fill.dnsperf" lost) lost"
stb_log "cache fill: $FILL"

# --- the load -----------------------------------------------------------------------------------
LOOP=$((SECONDS_TOTAL < 300 ? SECONDS_TOTAL : 300))
awk -v n=$((RATE * LOOP)) 'BEGIN { for (i = 1; i <= n; i++) {
    if (i % 10 == 0) print "s" i ".flood.test A"
    else { k = i % 53; if (k == 0) print "a.test A"; else if (k == 1) print "aaaa.test AAAA"; else if (k == 2) print "txt.test TXT"; else print "q" (k - 2) ".test A" } } }' >"$T/load.queries"
# -b 4096: a 4 MiB receive buffer for dnsperf's sockets. With its default (the kernel's
# 208 KiB), up to 500 answers arriving at once (the SERVFAILs a failed race releases) can
# overflow dnsperf's own buffer, a query lost on the client's side that stubborn answered.
DNSPERF=(dnsperf -s 127.0.0.1 -p 53 -d "$T/load.queries" -l "$SECONDS_TOTAL" -Q "$RATE" -q 500 -c 4 -t 15 -b 4096)
stb_spawn "$NS" "$T/load.dnsperf" "${DNSPERF[@]}"
DP_PID=$STB_LAST_PID
T0=$(date +%s)
now() { echo $(($(date +%s) - T0)); }

# The sampler: every 10 s "t,fds,rss_kib,threads" (bounded by the run's length).
echo "t_s,fds,rss_kib,threads" >"$CSV"
(
    for ((k = 0; k <= SECONDS_TOTAL / 10 + 30; k++)); do
        t=$(($(date +%s) - T0))
        ((t <= SECONDS_TOTAL + 20)) || break
        kill -0 "$PID" 2>/dev/null || break
        echo "$t,$(fds),$(bench_rss_kib "$PID" 2>/dev/null),$(threads)" >>"$CSV"
        sleep $((10 - ($(date +%s) - T0) % 10))
    done
) &
STB_PIDS+=("$!")

# --- faults ---------------------------------------------------------------------------------------
ALL_UP="127.0.0.2, 127.0.0.3, 127.0.0.4"
fault_apply() { # NAME HOLD_SECONDS: apply the fault, keep it HOLD seconds (some act during the hold)
    local f=$1 hold=$2 end i ports
    end=$(($(date +%s) + hold))
    case $f in
    rst) stb_nft_table "$NS" "$TABLE" "ip daddr 127.0.0.2 tcp dport 853 counter reject with tcp reset" ;;
    blackhole)
        stb_nft_table "$NS" "$TABLE" "ip daddr 127.0.0.2 counter drop" "ip saddr 127.0.0.2 counter drop" \
            "input: ip daddr 127.0.0.2 counter drop" "input: ip saddr 127.0.0.2 counter drop"
        ;;
    syn-drop) stb_nft_table "$NS" "$TABLE" "ip daddr { $ALL_UP } tcp flags & (syn | ack) == syn counter drop" ;;
    loss5)
        stb_nft_table "$NS" "$TABLE" \
            "ip daddr { $ALL_UP } tcp dport { 53, 853 } numgen random mod 100 < 5 counter drop" \
            "ip saddr { $ALL_UP } tcp sport { 53, 853 } numgen random mod 100 < 5 counter drop"
        ;;
    all-down)
        stb_nft_table "$NS" "$TABLE" "ip daddr { $ALL_UP } counter drop" "ip saddr { $ALL_UP } counter drop" \
            "input: ip daddr { $ALL_UP } counter drop" "input: ip saddr { $ALL_UP } counter drop"
        ;;
    restart)
        stb_stop "$U2_PID" 50
        start_u2 "$T/u2.conf"
        ;;
    pin-mismatch)
        stb_stop "$U2_PID" 50
        start_u2 "$T/u2-other.conf"
        ;;
    sighup)
        for ((i = 0; i < hold / 3 + 1 && $(date +%s) < end; i++)); do
            kill -HUP "$PID"
            sleep 3
        done
        ;;
    resolv-rewrite)
        set_resolv 127.0.0.4
        sleep $((hold / 2))
        set_resolv 127.0.0.3
        sleep 1
        set_resolv 127.0.0.4
        ;;
    suspend)
        # Every upstream connection stubborn has now (its local ports), silently dead.
        ports=$(stb_exec "$NS" ss -Htn state established '( dport = :853 or dport = :53 )' |
            awk '{ n = split($3, a, ":"); print a[n] }' | sort -un | paste -sd, -)
        if [[ -n $ports ]]; then
            stb_nft_table "$NS" "$TABLE" "tcp sport { $ports } counter drop" "tcp dport { $ports } counter drop" \
                "input: tcp sport { $ports } counter drop" "input: tcp dport { $ports } counter drop"
        fi
        kill -STOP "$PID" "$DP_PID"
        sleep "$FREEZE"
        kill -CONT "$PID"
        kill -CONT "$DP_PID"
        echo "froze ${FREEZE}s; blackholed the connections on local ports ${ports:-none}" >>"$T/suspend-notes.txt"
        ;;
    esac
    while (($(date +%s) < end)); do sleep 1; done
}
fault_lift() { # NAME
    case $1 in
    pin-mismatch)
        stb_stop "$U2_PID" 50
        start_u2 "$T/u2.conf"
        ;;
    resolv-rewrite) set_resolv 127.0.0.3 ;;
    esac
    if [[ " ${STB_NFT_TABLES[*]} " == *" $TABLE "* ]]; then
        stb_nft_rules "$NS" "$TABLE" | sed "s/^/    /" >>"$T/window-$WIN-nft.txt"
        stb_nft_del "$NS" "$TABLE"
    fi
}

FAULTS=(${SOAK_FAULTS:-rst sighup pin-mismatch resolv-rewrite blackhole restart syn-drop loss5 suspend all-down})
for f in "${FAULTS[@]}"; do
    case $f in rst | sighup | pin-mismatch | resolv-rewrite | blackhole | restart | syn-drop | loss5 | suspend | all-down) ;;
    *) stb_fatal "$STB_NAME" "SOAK_FAULTS: unknown fault '$f'" ;;
    esac
done
RANDOM=$SEED
: >"$T/windows.tsv" # n fault start end allowed answered servfail udp_drops stubborn_drops
WIN=0
record_window() { # FAULT START ALLOWED A0 S0 D0 SD0
    local a1 s1 d1 sd1
    a1=$(answers all)
    s1=$(answers SERVFAIL)
    d1=$(udp_drops)
    sd1=$(stubborn_drops)
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$WIN" "$1" "$2" "$(now)" "$3" $((a1 - $4)) $((s1 - $5)) $((d1 - $6)) $((sd1 - $7)) >>"$T/windows.tsv"
    stb_log "window $WIN ($1, ${2}s..$(now)s): $((a1 - $4)) answered, $((s1 - $5)) SERVFAIL, $((d1 - $6)) UDP receive-buffer drops ($((sd1 - $7)) at stubborn's sockets)"
}

# healthy until the baseline sample is taken
a0=$(answers all) s0=$(answers SERVFAIL) d0=$(udp_drops) sd0=$(stubborn_drops)
while (($(now) < BASELINE_AT + 5)); do sleep 1; done
record_window healthy 0 no "$a0" "$s0" "$d0" "$sd0"
k=0
while :; do
    w=$((WMIN + RANDOM % (WMAX - WMIN + 1)))
    (($(now) + w + 20 <= SECONDS_TOTAL)) || break
    stb_alive "$PID" || break
    f=${FAULTS[k % ${#FAULTS[@]}]}
    k=$((k + 1))
    WIN=$((WIN + 1))
    start=$(now)
    a0=$(answers all) s0=$(answers SERVFAIL) d0=$(udp_drops) sd0=$(stubborn_drops)
    hold=$((w * 2 / 3))
    stb_log "window $WIN: $f for ${hold}s, then ${w}s in all"
    fault_apply "$f" "$hold"
    fault_lift "$f"
    while (($(now) < start + w)); do sleep 1; done
    allowed=no
    [[ $f == all-down ]] && allowed=yes
    # See the header: without a boot-time jump stubborn notices dead connections by silence.
    [[ $f == suspend ]] && allowed=freeze
    record_window "$f" "$start" "$allowed" "$a0" "$s0" "$d0" "$sd0"
done
WIN=$((WIN + 1))
start=$(now)
a0=$(answers all) s0=$(answers SERVFAIL) d0=$(udp_drops) sd0=$(stubborn_drops)
while (($(now) < SECONDS_TOTAL - 1)) && stb_alive "$PID"; do sleep 1; done
record_window healthy "$start" no "$a0" "$s0" "$d0" "$sd0"
END_SAMPLE="$(now),$(fds),$(bench_rss_kib "$PID" 2>/dev/null),$(threads)"

# dnsperf ends by itself at SECONDS_TOTAL and waits ≤ 15 s for the last answers.
for ((i = 0; i < 400; i++)); do
    stb_alive "$DP_PID" || break
    sleep 0.1
done
stb_alive "$DP_PID" && kill -INT "$DP_PID"
dp_rc=0
wait "$DP_PID" 2>/dev/null || dp_rc=$?
ALIVE=yes
stb_alive "$PID" || ALIVE=no
LOAD_END=$(bench_loadavg)

# --- verdict --------------------------------------------------------------------------------------
SENT=$(bench_dp "$T/load.dnsperf" sent)
DONE=$(bench_dp "$T/load.dnsperf" completed)
LOST=$(bench_dp "$T/load.dnsperf" lost)
# baseline: the sample nearest SOAK_BASELINE_AT; end: the last sample before the load stopped
BASE=$(awk -F, -v b="$BASELINE_AT" 'NR > 1 { d = $1 - b; if (d < 0) d = -d; if (best == "" || d < bd) { best = $0; bd = d } } END { print best }' "$CSV")
END=$(awk -F, -v e=$((SECONDS_TOTAL - 2)) 'NR > 1 && $1 <= e { last = $0 } END { print last }' "$CSV")
[[ -n $END ]] || END=$END_SAMPLE
failures=()
[[ $ALIVE == yes ]] || failures+=("stubborn died")
[[ $SENT =~ ^[0-9]+$ ]] || failures+=("dnsperf gave no statistics (exit $dp_rc)")
[[ $LOST == 0 ]] || failures+=("$LOST queries lost")
bad_sf=$(awk -F'\t' '$5 == "no" { s += $7 } END { print s + 0 }' "$T/windows.tsv")
if ((bad_sf > 0)); then
    if [[ $SERVFAIL_GATE == 1 ]]; then
        failures+=("$bad_sf SERVFAIL while an upstream was reachable")
    else
        stb_log "$bad_sf SERVFAIL while an upstream was reachable (reported only: SOAK_SERVFAIL_GATE=0)"
    fi
fi
# A freeze's SERVFAIL: at most the cache misses (1 in 10) of 6 s (2 s of silence + 4 s).
FREEZE_CAP=$((RATE * 6 / 10))
bad_freeze=$(awk -F'\t' -v cap="$FREEZE_CAP" '$5 == "freeze" && $7 > cap { n++ } END { print n + 0 }' "$T/windows.tsv")
((bad_freeze == 0)) || failures+=("$bad_freeze suspend windows with more than $FREEZE_CAP SERVFAIL")
# within 10% of the baseline, rounded up to a whole descriptor / thread / KiB
flat() { # NAME COLUMN
    local b e tol
    b=$(cut -d, -f"$2" <<<"$BASE")
    e=$(cut -d, -f"$2" <<<"$END")
    tol=$(((b + 9) / 10))
    if [[ -z $b || -z $e ]] || ((e > b + tol || e < b - tol)); then
        failures+=("$1 $b -> $e (more than 10%)")
        echo "$1: $b -> $e (±$tol allowed): NOT flat"
    else
        echo "$1: $b -> $e (±$tol allowed): flat"
    fi
}
FLAT_LINES=$(
    flat fds 2
    flat rss_kib 3
    flat threads 4
)
grep -q 'NOT flat' <<<"$FLAT_LINES" && failures+=("$(grep 'NOT flat' <<<"$FLAT_LINES" | cut -d: -f1 | paste -sd, -) not flat")

# --- the plot -------------------------------------------------------------------------------------
python3 - "$CSV" "$T/windows.tsv" "$SVG" "$BASELINE_AT" <<'PY'
import sys
csv_path, win_path, svg_path, base_at = sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4])
rows = [l.strip().split(",") for l in open(csv_path)][1:]
rows = [[float(x) for x in r] for r in rows if len(r) == 4 and all(r)]
wins = [l.rstrip("\n").split("\t") for l in open(win_path) if l.strip()]
W, H, left, right, ph, gap, top = 900, 560, 70, 20, 140, 40, 30
tmax = max([r[0] for r in rows] + [float(w[3]) for w in wins] + [1])
x = lambda t: left + (W - left - right) * t / tmax
out = ['<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" font-family="sans-serif" font-size="11">' % (W, H),
       '<rect width="100%" height="100%" fill="white"/>',
       '<text x="%d" y="18" font-size="13">stubborn soak: samples every 10 s; shaded: fault windows (red: all upstreams down)</text>' % left]
panels = [("open descriptors", 1, 1), ("VmRSS (MiB)", 2, 1 / 1024), ("threads", 3, 1)]
for i, (name, col, scale) in enumerate(panels):
    y0 = top + i * (ph + gap)
    vals = [r[col] * scale for r in rows] or [0]
    lo, hi = 0, max(vals) * 1.2 or 1
    y = lambda v: y0 + ph - ph * (v - lo) / (hi - lo)
    for w in wins:
        if w[1] != "healthy":
            colr = "#f4b4b4" if w[4] == "yes" else "#e4e4f4"
            out.append('<rect x="%.1f" y="%d" width="%.1f" height="%d" fill="%s"/>' % (x(float(w[2])), y0, max(1, x(float(w[3])) - x(float(w[2]))), ph, colr))
            if i == 0:
                out.append('<text x="%.1f" y="%d" font-size="8" transform="rotate(-90 %.1f %d)">%s</text>' % (x(float(w[2])) + 9, y0 + ph - 2, x(float(w[2])) + 9, y0 + ph - 2, w[1]))
    out.append('<line x1="%.1f" y1="%d" x2="%.1f" y2="%d" stroke="#888" stroke-dasharray="4,3"/>' % (x(base_at), y0, x(base_at), y0 + ph))
    out.append('<rect x="%d" y="%d" width="%d" height="%d" fill="none" stroke="black"/>' % (left, y0, W - left - right, ph))
    out.append('<text x="%d" y="%d">%s</text>' % (left, y0 - 4, name))
    for v in (lo, hi / 2, hi):
        out.append('<text x="%d" y="%.1f" text-anchor="end">%s</text>' % (left - 4, y(v) + 4, ("%.1f" % v) if scale != 1 else "%d" % v))
    pts = " ".join("%.1f,%.1f" % (x(r[0]), y(r[col] * scale)) for r in rows)
    out.append('<polyline points="%s" fill="none" stroke="#1f5fbf" stroke-width="1.5"/>' % pts)
yb = top + 3 * (ph + gap) - gap + 16
for t in range(0, int(tmax) + 1, max(10, int(tmax / 10) // 10 * 10 or 10)):
    out.append('<text x="%.1f" y="%d" text-anchor="middle">%ds</text>' % (x(t), yb, t))
out.append("</svg>")
open(svg_path, "w").write("\n".join(out) + "\n")
PY

# --- the report -----------------------------------------------------------------------------------
VERDICT=ok
((${#failures[@]} == 0)) || VERDICT="FAILED ($(printf '%s; ' "${failures[@]}" | sed 's/; $//'))"
{
    echo "### Soak ($(date -u '+%Y-%m-%d %H:%M UTC'), ${SECONDS_TOTAL} s): $VERDICT"
    echo
    echo "Command: \`SOAK_SECONDS=$SECONDS_TOTAL SOAK_FAULTS=\"${FAULTS[*]}\" SOAK_RATE=$RATE SOAK_WINDOW_MIN=$WMIN SOAK_WINDOW_MAX=$WMAX SOAK_FREEZE=$FREEZE SOAK_SEED=$SEED bash benches/soak.sh\`"
    echo
    echo "Machine: $(bench_machine); load average $LOAD_START at the start, $LOAD_END at the end."
    echo "Binary: \`$STUBBORN_BIN\`."
    echo "Versions: $(bench_stubborn_version); upstreams $(bench_peer_version unbound); $(dnsperf -h 2>&1 | sed -n 's/^Version /dnsperf /p')."
    echo
    echo "Cache fill before the load: $FILL."
    echo
    echo "Load: \`${DNSPERF[*]//$T\//}\` — sent $SENT, answered $DONE, **lost $LOST**; $(bench_dp "$T/load.dnsperf" qps) queries/s;"
    echo "latency avg $(bench_dp "$T/load.dnsperf" avg_ms) ms, max $(bench_dp "$T/load.dnsperf" max_ms) ms; rcodes: $(bench_dp_rcodes "$T/load.dnsperf")."
    echo
    echo "Samples (every 10 s, [$(basename "$CSV")]($(basename "$CSV")), plot [$(basename "$SVG")]($(basename "$SVG"))); baseline = the sample nearest ${BASELINE_AT} s ($(cut -d, -f1 <<<"$BASE") s), end = the last before the load stopped ($(cut -d, -f1 <<<"$END") s):"
    echo
    echo '```'
    echo "$FLAT_LINES"
    echo "peak: fds $(awk -F, 'NR > 1 && $2 > m { m = $2 } END { print m }' "$CSV"), rss_kib $(awk -F, 'NR > 1 && $3 > m { m = $3 } END { print m }' "$CSV"), threads $(awk -F, 'NR > 1 && $4 > m { m = $4 } END { print m }' "$CSV")"
    echo '```'
    echo
    echo "Windows (answers and SERVFAIL from stubborn's metrics at each window's edges; the fault holds for the first two thirds):"
    echo
    echo "SERVFAIL allowed: \`yes\` while every upstream is unreachable; \`freeze\`: up to $FREEZE_CAP, the cache misses of 6 s (no boot-time"
    echo "jump tells stubborn of the faked suspend: it notices its dead connections after 2 s of silence, and SIGSTOP lets the monotonic clock run)."
    echo "UDP drops: datagrams the namespace's kernel dropped for want of receive buffer (/proc/net/snmp RcvbufErrors), stubborn's or dnsperf's;"
    echo "of them at stubborn's: those at its listening sockets (the drops column of /proc/net/udp, port 53)."
    echo
    echo "| # | fault | from s | to s | SERVFAIL allowed | answered | SERVFAIL | UDP drops | of them at stubborn's |"
    echo "|---|---|---|---|---|---|---|---|---|"
    awk -F'\t' '{ printf "| %s | %s | %s | %s | %s | %s | %s%s | %s | %s |\n", $1, $2, $3, $4, $5, $6, $7, ($5 == "no" && $7 > 0) ? " **(not allowed)**" : "", $8, $9 }' "$T/windows.tsv"
    echo
    if [[ -s $T/suspend-notes.txt ]]; then
        echo "Faked suspends: $(paste -sd';' "$T/suspend-notes.txt")."
        echo
    fi
    echo "stubborn's log: $(wc -l <"$T/stubborn.log") lines, $(grep -c ' WARN ' "$T/stubborn.log" || true) at warn, $(grep -c ' ERROR ' "$T/stubborn.log" || true) at error. Most frequent warn lines:"
    echo
    echo '```'
    grep -E ' (WARN|ERROR) ' "$T/stubborn.log" | sed 's/^[^ ]* *//; s/[0-9]\{1,\}/N/g' | cut -c1-160 | sort | uniq -c | sort -rn | head -n 12 || true
    echo '```'
} >"$OUT"
cat "$OUT"
stb_stop "$PID" 50
echo "soak: ${SECONDS_TOTAL} s, $SENT queries sent, $LOST lost, $bad_sf SERVFAIL while an upstream was reachable; $(sed 's/ (.*//' <<<"$FLAT_LINES" | paste -sd, - | sed 's/,/, /g'): $VERDICT"
[[ $VERDICT == ok ]]
