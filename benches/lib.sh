# shellcheck shell=bash
# benches/lib.sh — helpers shared by the benchmark scripts in benches/. Source it after
# tests/netns/lib.sh (which owns the namespace, the processes, the nft tables and the
# cleanup):
#
#   . "$(dirname "$0")/../tests/netns/lib.sh"
#   . "$(dirname "$0")/lib.sh"
#
# What it owns: the peer configurations (stubborn, unbound as a DNS-over-TLS forwarder,
# stubby, dnsmasq), the machine facts every report carries, the wait for a quiet machine,
# and the parsing of dnsperf's output. It starts nothing itself and never talks to the
# network.
#
# Ports, fixed so that the peers can run side by side: stubborn 127.0.0.1:53, unbound
# 127.0.0.1:5300, stubby 127.0.0.1:5301, dnsmasq 127.0.0.1:5302, dnsdist 127.0.0.1:5303.

bench_port() {
    case $1 in stubborn) echo 53 ;; unbound) echo 5300 ;; stubby) echo 5301 ;; dnsmasq) echo 5302 ;; dnsdist) echo 5303 ;; esac
}

# bench_conf_file DIR PEER TAG: the config path for PEER (stubby reads YAML only from a
# *.yml file; otherwise it parses the file as JSON).
bench_conf_file() {
    case $2 in
    stubborn) echo "$1/$3-stubborn.toml" ;;
    unbound) echo "$1/$3-unbound.conf" ;;
    stubby) echo "$1/$3-stubby.yml" ;;
    dnsmasq) echo "$1/$3-dnsmasq.args" ;;
    dnsdist) echo "$1/$3-dnsdist.conf" ;;
    esac
}

# bench_conf_stubborn FILE MODE PIN EXTRA_TOML IP...: stubborn on 127.0.0.1:53, one
# [[upstream]] per IP (named u-IP), strict ones pinned with `tls_name = "dns.test"`, the
# opportunistic ones without authentication data (as a resolver from resolv.conf would be).
# EXTRA_TOML (may be empty) goes between [server] and the upstreams.
bench_conf_stubborn() {
    local file=$1 mode=$2 pin=$3 extra=$4 ip
    shift 4
    {
        printf '[server]\nlisten = ["127.0.0.1:53"]\n\n'
        [[ -z $extra ]] || printf '%s\n' "$extra"
        for ip in "$@"; do
            printf '\n[[upstream]]\nname = "u-%s"\naddresses = ["%s"]\nmode = "%s"\n' "$ip" "$ip" "$mode"
            if [[ $mode == strict ]]; then
                printf 'tls_name = "dns.test"\npins = ["key-fp:SHA256:%s"]\n' "$pin"
            fi
        done
    } >"$file"
}

# bench_conf_unbound FILE DIR THREADS IP...: unbound on 127.0.0.1:5300 as a forwarder of "."
# over TLS to each IP@853, authenticated by CA + name (unbound has no SPKI pins): the CA is
# DIR/ca.pem, the name dns.test. THREADS > 1 also sets so-reuseport (one socket per thread).
# Everything else is unbound's packaged default (cache sizes, timeouts, no prefetch).
bench_conf_unbound() {
    local file=$1 dir=$2 threads=$3 ip reuse=no
    shift 3
    ((threads > 1)) && reuse=yes
    {
        cat <<EOF
server:
    verbosity: 1
    num-threads: $threads
    interface: 127.0.0.1@5300
    do-ip6: no
    so-reuseport: $reuse
    do-daemonize: no
    chroot: ""
    username: ""
    directory: "$dir"
    pidfile: ""
    use-syslog: no
    logfile: ""
    access-control: 127.0.0.0/8 allow
    module-config: "iterator"
    do-not-query-localhost: no
    local-zone: "test." nodefault
    tls-cert-bundle: "$dir/ca.pem"
forward-zone:
    name: "."
    forward-tls-upstream: yes
EOF
        for ip in "$@"; do echo "    forward-addr: $ip@853#dns.test"; done
        printf 'remote-control:\n    control-enable: no\n'
    } >"$file"
}

# bench_conf_stubby FILE DIR MODE PIN IP...: stubby on 127.0.0.1:5301, the upstreams in order
# (round_robin_upstreams: 0, as stubborn uses its list). strict: TLS only,
# GETDNS_AUTHENTICATION_REQUIRED, tls_auth_name dns.test + the SPKI pin; opportunistic: TLS,
# UDP, TCP and GETDNS_AUTHENTICATION_NONE.
bench_conf_stubby() {
    local file=$1 dir=$2 mode=$3 pin=$4 ip
    shift 4
    {
        echo "resolution_type: GETDNS_RESOLUTION_STUB"
        if [[ $mode == strict ]]; then
            printf 'dns_transport_list:\n  - GETDNS_TRANSPORT_TLS\n'
            echo "tls_authentication: GETDNS_AUTHENTICATION_REQUIRED"
        else
            printf 'dns_transport_list:\n  - GETDNS_TRANSPORT_TLS\n  - GETDNS_TRANSPORT_UDP\n  - GETDNS_TRANSPORT_TCP\n'
            echo "tls_authentication: GETDNS_AUTHENTICATION_NONE"
        fi
        cat <<EOF
tls_query_padding_blocksize: 128
edns_client_subnet_private: 1
round_robin_upstreams: 0
idle_timeout: 10000
tls_ca_file: "$dir/ca.pem"
appdata_dir: "$dir/stubby-appdata"
listen_addresses:
  - 127.0.0.1@5301
upstream_recursive_servers:
EOF
        for ip in "$@"; do
            echo "  - address_data: $ip"
            if [[ $mode == strict ]]; then
                printf '    tls_auth_name: "dns.test"\n    tls_pubkey_pinset:\n'
                printf '      - digest: "sha256"\n        value: %s\n' "$pin"
            fi
        done
    } >"$file"
}

# bench_conf_dnsmasq FILE SERVER: dnsmasq's command-line options, one per line: a plain-DNS
# forwarder on 127.0.0.1:5302 to SERVER (IP#port) with a 10000-entry cache, in the
# foreground, reading no config file, resolv.conf or hosts file, logging to stderr.
bench_conf_dnsmasq() {
    printf '%s\n' --keep-in-foreground --conf-file=/dev/null --no-resolv --no-hosts \
        "--server=$2" --listen-address=127.0.0.1 --port=5302 --bind-interfaces \
        --cache-size=10000 --pid-file= --user=root --log-facility=- >"$1"
}

# bench_conf_dnsdist FILE DIR TRANSPORT IP: dnsdist on 127.0.0.1:5303 forwarding to one
# backend, IP:443 over DNS over HTTPS (TRANSPORT doh: POST to /dns-query over HTTP/2, one
# outgoing DoH worker thread) or IP:853 over DNS over TLS (dot), authenticated by CA + name
# (DIR/ca.pem, dns.test; dnsdist has no SPKI pins). No packet cache (dnsdist's default), no
# console, no security polling. The backend is forced up (`setUp()`), so that a health
# check cannot take it out of service; its checkName (a.test) answers NOERROR anyway.
bench_conf_dnsdist() {
    local file=$1 dir=$2 transport=$3 ip=$4 backend
    case $transport in
    doh) backend="address=\"$ip:443\", tls=\"openssl\", subjectName=\"dns.test\", dohPath=\"/dns-query\"" ;;
    dot) backend="address=\"$ip:853\", tls=\"openssl\", subjectName=\"dns.test\"" ;;
    *) return 1 ;;
    esac
    {
        echo 'setSecurityPollSuffix("")'
        echo 'setLocal("127.0.0.1:5303")'
        echo 'setACL({"127.0.0.0/8"})'
        [[ $transport != doh ]] || echo 'setOutgoingDoHWorkerThreads(1)'
        echo "backend = newServer({$backend, caStore=\"$dir/ca.pem\", validateCertificates=true, checkName=\"a.test.\"})"
        echo 'backend:setUp()'
    } >"$file"
}

# bench_peer_cmd PEER CONF: the command line, one word per line.
bench_peer_cmd() {
    case $1 in
    stubborn) printf '%s\n' "$STUBBORN_BIN" --config "$2" ;;
    unbound) printf '%s\n' unbound -d -c "$2" ;;
    stubby) printf '%s\n' stubby -C "$2" -v 6 ;;
    dnsmasq) echo dnsmasq && cat "$2" ;;
    dnsdist) printf '%s\n' dnsdist --supervised --disable-syslog -C "$2" ;;
    esac
}

# bench_peer_tools PEER: the commands PEER needs (for stb_preflight).
bench_peer_tools() {
    case $1 in
    stubborn) ;;
    unbound) echo unbound ;;
    stubby) echo stubby ;;
    dnsmasq) echo dnsmasq ;;
    dnsdist) echo dnsdist ;;
    *) return 1 ;;
    esac
}

bench_stubborn_version() {
    echo "stubborn $(git -C "$STB_REPO_ROOT" log -1 --format=%h -- src Cargo.toml Cargo.lock 2>/dev/null || echo '?') (last commit touching src/, Cargo.*; tree at $(git -C "$STB_REPO_ROOT" rev-parse --short HEAD 2>/dev/null || echo '?'))"
}

bench_peer_version() {
    case $1 in
    stubborn) bench_stubborn_version ;;
    unbound) unbound -V 2>/dev/null | sed -n '1s/^Version /unbound /p' ;;
    stubby) stubby -V 2>/dev/null | head -n 1 ;;
    dnsmasq) dnsmasq --version 2>/dev/null | sed -n '1s/^Dnsmasq version \([^ ]*\).*/dnsmasq \1/p' ;;
    dnsdist) dnsdist --version 2>/dev/null | sed -n '1s/^\(dnsdist [^ ]*\).*/\1/p' ;;
    esac
}

# bench_start_dot_upstream NS DIR: the upstream every peer forwards to: unbound
# (BENCH_UPSTREAM_THREADS threads, default 8, sharing one listening socket; no query log) serving the
# test zone and every name under flood.test over DoT on 127.0.0.2:853 and plain DNS on
# 127.0.0.2:53, with a fresh PKI in DIR; waits until it answers DoT. Sets PIN (its key pin)
# and UPSTREAM_PID. Exits through stb_fatal on failure.
# Why 8 threads on 2 cores: each TCP connection is served by whichever thread accepts it,
# and a public DoT service spreads a client's connections over many workers. With 2
# threads, whether a peer's connections shared one was a coin flip per run that moved
# every peer with several connections (unbound's threads, stubborn's serving threads) by
# 12-45% (docs/benchmarks.md, runs L and M); with 8 it happens to 1 run in 8, and the report
# shows how many upstream threads served each run.
bench_start_dot_upstream() {
    local ns=$1 dir=$2
    stb_make_pki "$dir" || stb_fatal "$STB_NAME" "openssl failed" "$dir/openssl.log"
    PIN=$STB_PIN
    STB_UPSTREAM_THREADS=${BENCH_UPSTREAM_THREADS:-8} STB_UPSTREAM_LOG_QUERIES=no STB_UPSTREAM_FLOOD_ZONE=flood.test \
        stb_unbound_upstream_conf "$dir/upstream.conf" "$dir" 127.0.0.2@853 127.0.0.2@53
    stb_start_unbound "$ns" "$dir/upstream.conf" "$dir/upstream.log" 127.0.0.2@853 127.0.0.2@53
    UPSTREAM_PID=$STB_UNBOUND_PID
    stb_retry 30 stb_exec "$ns" kdig @127.0.0.2 -p 853 +tls +tls-pin="$PIN" +time=2 +retry=0 +short a.test >/dev/null ||
        stb_fatal "$STB_NAME" "upstream unbound does not answer DoT" "$dir/upstream.log"
}

# bench_start_doh_upstream NS DIR: as bench_start_dot_upstream, but serving the test zone
# and flood.test over DoT on 127.0.0.2:853 and DNS over HTTPS (HTTP/2, `https-port: 443`,
# `http-endpoint: "/dns-query"`, the same key and certificate) on 127.0.0.2:443, and no
# cleartext DNS; waits until both answer. Sets PIN and UPSTREAM_PID.
bench_start_doh_upstream() {
    local ns=$1 dir=$2
    stb_make_pki "$dir" || stb_fatal "$STB_NAME" "openssl failed" "$dir/openssl.log"
    PIN=$STB_PIN
    STB_UPSTREAM_THREADS=${BENCH_UPSTREAM_THREADS:-8} STB_UPSTREAM_LOG_QUERIES=no STB_UPSTREAM_FLOOD_ZONE=flood.test \
        stb_unbound_upstream_conf "$dir/upstream.conf" "$dir" 127.0.0.2@853 127.0.0.2@443
    sed -i 's|^    tls-port: 853$|&\n    https-port: 443\n    http-endpoint: "/dns-query"|' "$dir/upstream.conf"
    grep -q '^    https-port: 443$' "$dir/upstream.conf" ||
        stb_fatal "$STB_NAME" "could not add https-port to $dir/upstream.conf"
    stb_start_unbound "$ns" "$dir/upstream.conf" "$dir/upstream.log" 127.0.0.2@853
    UPSTREAM_PID=$STB_UNBOUND_PID
    stb_wait_listening "$ns" "$UPSTREAM_PID" tcp 443 127.0.0.2 ||
        stb_fatal "$STB_NAME" "upstream unbound is not listening on 127.0.0.2:443" "$dir/upstream.log"
    stb_retry 30 stb_exec "$ns" kdig @127.0.0.2 -p 853 +tls +tls-pin="$PIN" +time=2 +retry=0 +short a.test >/dev/null ||
        stb_fatal "$STB_NAME" "upstream unbound does not answer DoT" "$dir/upstream.log"
    stb_retry 30 stb_exec "$ns" kdig @127.0.0.2 -p 443 +https=/dns-query +tls-pin="$PIN" +time=2 +retry=0 +short a.test >/dev/null ||
        stb_fatal "$STB_NAME" "upstream unbound does not answer DoH" "$dir/upstream.log"
}

# bench_start_peer NS DIR PEER TAG: start PEER with the config bench_conf_file DIR PEER TAG
# (written beforehand), log to DIR/TAG-PEER.log, wait (≤ 10 s) for its UDP listener (and
# TCP for stubborn). Sets BENCH_PID; stb_fatal if it does not come up.
bench_start_peer() {
    local ns=$1 dir=$2 peer=$3 tag=$4 conf port proto=udp
    local -a cmd=()
    conf=$(bench_conf_file "$dir" "$peer" "$tag")
    port=$(bench_port "$peer")
    mapfile -t cmd < <(bench_peer_cmd "$peer" "$conf")
    stb_spawn "$ns" "$dir/$tag-$peer.log" "${cmd[@]}"
    BENCH_PID=$STB_LAST_PID
    [[ $peer == stubborn ]] && proto=both
    stb_wait_listening "$ns" "$BENCH_PID" "$proto" "$port" 127.0.0.1 100 ||
        stb_fatal "$STB_NAME" "$peer did not come up on 127.0.0.1:$port (${cmd[*]})" "$dir/$tag-$peer.log"
}

# bench_query NS PORT NAME TIMEOUT EXPECT: one `kdig @127.0.0.1 -p PORT +time=TIMEOUT
# +retry=0 NAME A` over UDP inside NS; prints "STATUS KDIG_MS WALL_US" (STATUS ok = NOERROR
# with the expected address; else the rcode or "timeout"). KDIG_MS is kdig's own ";; From
# ... in X ms" (send to receive, 0.1 ms resolution); WALL_US the time around the whole kdig
# process (includes `ip netns exec` and kdig's start-up).
bench_query() {
    local ns=$1 port=$2 name=$3 timeout=$4 expect=$5 out t0 t1 rcode ms status
    t0=$(date +%s%N)
    out=$(ip netns exec "$ns" kdig @127.0.0.1 -p "$port" +time="$timeout" +retry=0 "$name" A 2>&1) || true
    t1=$(date +%s%N)
    rcode=$(sed -n 's/.*status: \([A-Z]*\);.*/\1/p' <<<"$out" | head -n 1)
    ms=$(sed -n 's/^;; From .* in \([0-9.]*\) ms$/\1/p' <<<"$out" | head -n 1)
    if [[ -z $rcode ]]; then
        status=timeout
    elif [[ $rcode == NOERROR ]] && grep -qE "^$name\.[[:space:]].*[[:space:]]A[[:space:]]+$expect\$" <<<"$out"; then
        status=ok
    else
        status=$rcode
    fi
    echo "$status ${ms:--} $(((t1 - t0) / 1000))"
}

# ---- machine facts and a quiet machine ----------------------------------------------------

bench_loadavg() { cut -d' ' -f1-3 /proc/loadavg; }

# bench_wait_quiet WHAT: before a recorded measurement, wait until the 1-minute load
# average is below BENCH_LOAD_MAX (default 0.7), polling every 30 s for at most
# BENCH_QUIET_WAIT seconds (default 900; 0 = do not wait). Never fails: when the machine
# does not get quiet it says so and returns. Sets BENCH_QUIET ("quiet" or "NOT quiet") and
# appends a line to BENCH_LOAD_NOTES (the report quotes them).
BENCH_LOAD_NOTES=""
bench_wait_quiet() {
    local what=$1 max=${BENCH_LOAD_MAX:-0.7} budget=${BENCH_QUIET_WAIT:-900} waited=0 load
    while :; do
        load=$(cut -d' ' -f1 /proc/loadavg)
        if awk -v l="$load" -v m="$max" 'BEGIN { exit !(l < m) }'; then
            BENCH_QUIET=quiet
            break
        fi
        if ((waited >= budget)); then
            BENCH_QUIET="NOT quiet"
            stb_log "load average $load is still >= $max after ${waited} s: measuring $what anyway"
            break
        fi
        stb_log "waiting for a quiet machine before $what: load average $load >= $max (${waited}/${budget} s)"
        sleep 30
        waited=$((waited + 30))
    done
    BENCH_LOAD_NOTES+="- $what: load average $(bench_loadavg) at the start ($BENCH_QUIET; waited ${waited} s for < $max)"$'\n'
}

bench_machine() {
    echo "$(nproc) CPUs ($(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -n 1)), kernel $(uname -r), $(. /etc/os-release 2>/dev/null && echo "$PRETTY_NAME")"
}

# ---- process accounting -----------------------------------------------------------------------

# bench_rss_kib PID: resident set size (VmRSS) in KiB.
bench_rss_kib() { awk '/^VmRSS:/ { print $2 }' "/proc/$1/status"; }
# bench_cpu_ticks PID: utime + stime in clock ticks (fields 14 and 15 of /proc/PID/stat; the
# command name in field 2 may contain spaces, so count from the closing parenthesis).
bench_cpu_ticks() { sed 's/^.*) //' "/proc/$1/stat" | awk '{ print $12 + $13 }'; }
# bench_task_ticks PID: "TID TICKS" (utime+stime) for each thread of PID.
bench_task_ticks() {
    local f
    for f in /proc/"$1"/task/*/stat; do
        sed 's/ (.*) / /' "$f" 2>/dev/null | awk '{ print $1, $13 + $14 }'
    done
}
# bench_busy_threads BEFORE AFTER: how many threads did at least a tenth of the CPU work
# between two bench_task_ticks snapshots (files). For the upstream: how many of its
# threads served a peer's connections in that run (each thread serves what it accepted).
bench_busy_threads() {
    awk 'NR == FNR { t0[$1] = $2; next } { d[$1] = $2 - t0[$1]; s += d[$1] }
         END { for (k in d) if (s > 0 && d[k] * 10 >= s) n++; print n + 0 }' "$1" "$2"
}
BENCH_CLK_TCK=$(getconf CLK_TCK)

# ---- dnsperf output -----------------------------------------------------------------------------

# bench_dp FILE FIELD: a number from dnsperf's statistics: sent, completed, lost, qps,
# avg_ms, min_ms, max_ms, runtime_s.
bench_dp() {
    local f=$1
    case $2 in
    sent) sed -n 's/^ *Queries sent: *\([0-9]*\).*/\1/p' "$f" ;;
    completed) sed -n 's/^ *Queries completed: *\([0-9]*\).*/\1/p' "$f" ;;
    lost) sed -n 's/^ *Queries lost: *\([0-9]*\).*/\1/p' "$f" ;;
    qps) sed -n 's/^ *Queries per second: *\([0-9.]*\).*/\1/p' "$f" ;;
    runtime_s) sed -n 's/^ *Run time (s): *\([0-9.]*\).*/\1/p' "$f" ;;
    avg_ms) sed -n 's/^ *Average Latency (s): *\([0-9.]*\).*/\1/p' "$f" | awk '{ printf "%.3f", $1 * 1000 }' ;;
    min_ms) sed -n 's/^ *Average Latency (s):.*(min \([0-9.]*\),.*/\1/p' "$f" | awk '{ printf "%.3f", $1 * 1000 }' ;;
    max_ms) sed -n 's/^ *Average Latency (s):.*max \([0-9.]*\)).*/\1/p' "$f" | awk '{ printf "%.3f", $1 * 1000 }' ;;
    esac
}

# bench_dp_rcodes FILE: dnsperf's "Response codes" line, e.g. "NOERROR 1000 (100.00%)".
bench_dp_rcodes() { sed -n 's/^ *Response codes: *//p' "$1"; }

# bench_dp_percentiles FILE: from dnsperf -v per-query lines ("> RCODE NAME TYPE SECONDS"),
# "p50 p90 p99 max n" in ms (nearest rank).
bench_dp_percentiles() {
    awk '/^> / { print $NF * 1000 }' "$1" | sort -g | awk '
        function rank(p,   r) { r = int(p * NR + 0.999999); if (r < 1) r = 1; if (r > NR) r = NR; return a[r] }
        { a[NR] = $1 }
        END { if (NR == 0) { print "- - - - 0"; exit }
              printf "%.2f %.2f %.2f %.2f %d\n", rank(0.5), rank(0.9), rank(0.99), a[NR], NR }'
}

# bench_median: the median of the numbers on stdin ("-" if none).
bench_median() {
    sort -g | awk '{ a[NR] = $1 } END { if (NR == 0) print "-"; else print (NR % 2 ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2) }'
}

# bench_ratio A B [FMT]: A / B ("—" unless both are numbers and B > 0).
bench_ratio() {
    awk -v a="$1" -v b="$2" 'BEGIN {
        if (a !~ /^[0-9.]+$/ || b !~ /^[0-9.]+$/ || b + 0 == 0) { print "—"; exit }
        r = a / b
        printf (r < 0.1 ? "%.3f×" : r < 10 ? "%.2f×" : "%.0f×"), r }'
}
