# shellcheck shell=bash
# tests/netns/lib.sh — helpers for stubborn's root-only network-namespace tests (tier 3).
#
# Source it from a test script:   . "$(dirname "$0")/lib.sh"
#
# What it owns: the namespaces, processes and temp dir a test creates through it. An EXIT
# trap kills every process started with stb_spawn (and anything else left inside our own
# namespaces), deletes the namespaces and removes the temp dir.
#
# What it must never do: send traffic outside a namespace it created (every command that
# talks to the network runs under `ip netns exec` in one of ours, where only `lo` exists),
# wait without a bound, or touch processes and namespaces it did not create.
#
# Conventions:
#   - a test script counts checks with stb_check / stb_pass / stb_fail and ends with
#     `stb_summary <name>`, which prints "<name>: N passed, M failed" and sets the exit code;
#   - exit status 77 means "skipped" (only allowed when CI is not "true");
#   - STUBBORN_BIN is the stubborn binary (default: <repo>/target/release/stubborn);
#   - shared fixtures (below the check helpers): a test PKI (stb_make_pki), an unbound
#     upstream serving local data over TLS and plain DNS (stb_unbound_upstream_conf,
#     stb_start_unbound), stubborn start/stop, nft fault tables with counters in the
#     namespace's `output` hook (stb_nft_table, deleted at exit), and dig output parsing.

set -euo pipefail

STB_LIB_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
STB_REPO_ROOT=$(cd "$STB_LIB_DIR/../.." && pwd)
STUBBORN_BIN=${STUBBORN_BIN:-target/release/stubborn}
case $STUBBORN_BIN in /*) ;; *) STUBBORN_BIN=$STB_REPO_ROOT/$STUBBORN_BIN ;; esac

STB_NAMESPACES=()
STB_NFT_TABLES=()
STB_PIDS=()
STB_PASSED=0
# The test's name: helpers that give up pass it to stb_fatal; scripts may set it.
STB_NAME=${STB_NAME:-$(basename "$0" .sh)}
STB_FAILED=0
STB_TMP=""

stb_log() { printf '[%s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

# stb_cleanup: the EXIT trap. Idempotent, never fails.
stb_cleanup() {
    local rc=$? pid ns i
    set +e
    for pid in "${STB_PIDS[@]}"; do
        kill -TERM "$pid" 2>/dev/null
    done
    for pid in "${STB_PIDS[@]}"; do
        for ((i = 0; i < 20; i++)); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.1
        done
        kill -KILL "$pid" 2>/dev/null
        wait "$pid" 2>/dev/null
    done
    for i in "${!STB_NFT_TABLES[@]}"; do
        # "NS TABLE": nft tables we added (deleting the namespace would drop them too).
        # shellcheck disable=SC2086 # "ns table" splits on purpose
        stb_nft_del ${STB_NFT_TABLES[$i]} 2>/dev/null
    done
    for ns in "${STB_NAMESPACES[@]}"; do
        # Anything still running inside a namespace we created is ours (e.g. a child of
        # a process we started); kill it by pid before deleting the namespace.
        for pid in $(ip netns pids "$ns" 2>/dev/null); do
            kill -KILL "$pid" 2>/dev/null
        done
        ip netns del "$ns" 2>/dev/null
    done
    if [[ -n $STB_TMP && -d $STB_TMP && -z ${STB_KEEP_TMP:-} ]]; then
        rm -rf "$STB_TMP"
    fi
    exit "$rc"
}
trap stb_cleanup EXIT
trap 'exit 130' INT TERM HUP

STB_TMP=$(mktemp -d "${TMPDIR:-/tmp}/stb-netns.XXXXXX")

# stb_unavailable MESSAGE: the tier cannot run here. With CI=true that is a failure
# (exit 1); otherwise a loud skip (exit 77).
stb_unavailable() {
    if [[ ${CI:-} == true ]]; then
        echo "FAIL: $* (CI=true: the network-namespace tier must run, not skip)" >&2
        exit 1
    fi
    echo "######## SKIPPED: $* ########" >&2
    exit 77
}

# stb_preflight TOOL...: root, working `ip netns add`, and the listed commands.
stb_preflight() {
    local tool probe
    [[ $(id -u) == 0 ]] || stb_unavailable "needs root (network namespaces)"
    command -v ip >/dev/null || stb_unavailable "iproute2 ('ip') is not installed"
    for tool in "$@"; do
        command -v "$tool" >/dev/null || stb_unavailable "'$tool' is not installed"
    done
    probe="stb-$$-probe"
    if ! ip netns add "$probe" 2>"$STB_TMP/netns-probe.err"; then
        stb_unavailable "'ip netns add' fails here: $(cat "$STB_TMP/netns-probe.err")"
    fi
    ip netns del "$probe"
}

# stb_ns_name SUFFIX: the unique namespace name for this run (stb-<pid>-<suffix>).
stb_ns_name() { printf 'stb-%s-%s' "$$" "$1"; }

# stb_ns_create NAME: a namespace with only `lo`, up, holding 127.0.0.0/8, ::1 and
# 198.18.0.1/32 (dnsperf refuses 127.0.0.1 without a non-loopback IPv4). Loopback routes get
# `quickack 1` so delayed ACKs do not add ~40 ms to first answers (unbound sets no
# TCP_NODELAY). Call it in the current shell, not in $(...), so cleanup knows the name.
stb_ns_create() {
    local ns=$1 route
    ip netns add "$ns"
    STB_NAMESPACES+=("$ns")
    ip -n "$ns" link set lo up
    ip -n "$ns" addr add 198.18.0.1/32 dev lo
    while read -r route; do
        [[ -n $route ]] || continue
        # shellcheck disable=SC2086 # the route spec must split into words
        ip -n "$ns" route change $route table local quickack 1 ||
            stb_log "warning: could not set quickack on '$route' in $ns"
    done < <(ip -n "$ns" route show table local type local)
    # IPv6 rejects `route change` on the kernel's ::1 route; replace it instead.
    if ip -n "$ns" -6 route del local ::1 dev lo table local 2>/dev/null; then
        ip -n "$ns" -6 route add local ::1 dev lo table local proto kernel metric 0 quickack 1 ||
            ip -n "$ns" -6 route add local ::1 dev lo table local proto kernel metric 0
    fi
}

# stb_exec NS CMD...: run a command inside the namespace (foreground).
stb_exec() {
    local ns=$1
    shift
    ip netns exec "$ns" "$@"
}

# stb_spawn NS LOGFILE CMD...: start CMD in the background inside NS, stdout+stderr to
# LOGFILE; sets STB_LAST_PID (do not call it in $(...)). `ip netns exec` execs CMD, so the
# pid is CMD's own.
stb_spawn() {
    local ns=$1 log=$2
    shift 2
    ip netns exec "$ns" "$@" </dev/null >"$log" 2>&1 &
    STB_LAST_PID=$!
    STB_PIDS+=("$STB_LAST_PID")
}

# stb_alive PID: is the process still running?
stb_alive() { kill -0 "$1" 2>/dev/null; }

# stb_stop PID [TENTHS]: SIGTERM, wait up to TENTHS×0.1 s (default 50), then SIGKILL.
# Sets STB_STOP_RC to the exit status (128+signal if killed) and returns 0.
stb_stop() {
    local pid=$1 tenths=${2:-50} i
    kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < tenths; i++)); do
        stb_alive "$pid" || break
        sleep 0.1
    done
    if stb_alive "$pid"; then
        stb_log "pid $pid ignored SIGTERM for $((tenths / 10)) s; killing"
        kill -KILL "$pid" 2>/dev/null || true
    fi
    STB_STOP_RC=0
    wait "$pid" 2>/dev/null || STB_STOP_RC=$?
}

# stb_retry TRIES CMD...: run CMD up to TRIES times, 0.1 s apart, until it succeeds.
stb_retry() {
    local tries=$1 i
    shift
    for ((i = 0; i < tries; i++)); do
        if "$@" >/dev/null 2>&1; then
            return 0
        fi
        sleep 0.1
    done
    return 1
}

# stb_listening NS PROTO PORT [ADDR]: is something listening on PORT (proto udp|tcp) in NS?
stb_listening() {
    local ns=$1 proto=$2 port=$3 addr=${4:-}
    local flag=-Hltn
    [[ $proto == udp ]] && flag=-Hlun
    local out
    out=$(ip netns exec "$ns" ss "$flag" "sport = :$port") || return 1
    [[ -n $out ]] || return 1
    [[ -z $addr ]] || grep -qF "$addr:$port" <<<"$out"
}

stb_pass() {
    STB_PASSED=$((STB_PASSED + 1))
    echo "ok   - $*"
}

stb_fail() {
    STB_FAILED=$((STB_FAILED + 1))
    echo "FAIL - $*"
}

# stb_check DESCRIPTION CMD...: run CMD; count a pass or a fail (never aborts the script).
stb_check() {
    local desc=$1
    shift
    if "$@"; then stb_pass "$desc"; else stb_fail "$desc"; fi
}

# stb_quiet CMD...: run CMD with its output discarded (for stb_check).
stb_quiet() { "$@" >/dev/null 2>&1; }

# stb_expect_eq DESCRIPTION EXPECTED ACTUAL
stb_expect_eq() {
    if [[ $2 == "$3" ]]; then
        stb_pass "$1"
    else
        stb_fail "$1: expected '$2', got '$3'"
    fi
}

# stb_fatal NAME MESSAGE [LOGFILE...]: a step the rest depends on failed: print why (and
# the tail of the given logs), count it, print the summary and exit 1.
stb_fatal() {
    local name=$1 msg=$2 log
    shift 2
    stb_fail "$msg"
    for log in "$@"; do
        [[ -f $log ]] || continue
        echo "---- last lines of $log ----"
        tail -n 30 "$log"
        echo "----"
    done
    stb_summary "$name"
}

# stb_summary NAME: the closing line CI reads; exit status 0 only if nothing failed.
stb_summary() {
    echo "$1: $STB_PASSED passed, $STB_FAILED failed"
    if ((STB_FAILED > 0)); then exit 1; fi
    exit 0
}

# stb_spki_pin CERT.pem: base64 SHA-256 of the certificate's DER SubjectPublicKeyInfo
# (the value after "key-fp:SHA256:"; what kdig +tls-pin and stubby pins take).
stb_spki_pin() {
    openssl x509 -in "$1" -pubkey -noout |
        openssl pkey -pubin -outform der |
        openssl dgst -sha256 -binary |
        base64
}

# ---- shared fixtures: PKI, the unbound upstream, stubborn, nft faults, dig ----------------

# stb_make_pki DIR: a CA (DIR/ca.pem), a server certificate for dns.test signed by it
# (DIR/server.pem, DIR/server.key) and an unrelated self-signed key (DIR/other.pem). Sets
# STB_PIN (the server's SPKI pin) and STB_WRONG_PIN (other.pem's). openssl output goes to
# DIR/openssl.log. Returns 1 on any failure.
stb_make_pki() {
    local d=$1
    {
        openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
            -keyout "$d/ca.key" -out "$d/ca.pem" -days 2 -subj "/CN=stubborn test CA" \
            -addext "basicConstraints=critical,CA:TRUE" \
            -addext "keyUsage=critical,keyCertSign,cRLSign" &&
            openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
                -keyout "$d/server.key" -out "$d/server.csr" -subj "/CN=dns.test" &&
            printf '%s\n' "subjectAltName=DNS:dns.test" "basicConstraints=critical,CA:FALSE" \
                "keyUsage=critical,digitalSignature" "extendedKeyUsage=serverAuth" \
                >"$d/server.ext" &&
            openssl x509 -req -in "$d/server.csr" -CA "$d/ca.pem" -CAkey "$d/ca.key" \
                -set_serial 2 -days 2 -extfile "$d/server.ext" -out "$d/server.pem" &&
            # A key that has nothing to do with the server: its pin is valid-looking but wrong.
            openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
                -keyout "$d/other.key" -out "$d/other.pem" -days 2 -subj "/CN=unrelated"
    } >"$d/openssl.log" 2>&1 || return 1
    STB_PIN=$(stb_spki_pin "$d/server.pem" 2>>"$d/openssl.log") || return 1
    STB_WRONG_PIN=$(stb_spki_pin "$d/other.pem" 2>>"$d/openssl.log") || return 1
    [[ $STB_PIN =~ ^[A-Za-z0-9+/]{43}=$ && $STB_WRONG_PIN =~ ^[A-Za-z0-9+/]{43}=$ &&
        $STB_PIN != "$STB_WRONG_PIN" ]]
}

# stb_unbound_upstream_conf FILE PKI_DIR IP@PORT...: an unbound config serving local data
# only (never recursing) on each IP@PORT: DNS over TLS where PORT is 853 (with PKI_DIR's
# server certificate), plain UDP+TCP DNS elsewhere. Data: a.test A 192.0.2.1, aaaa.test
# AAAA 2001:db8::1, txt.test TXT "hello", and q1.test..qN.test A (distinct names, so that
# benchmarks never hit a cache; qN's address is 198.51.100.N for N ≤ 254, 198.18.X.Y above).
# Knobs (set them for the call: `STB_UPSTREAM_QNAMES=2000 stb_unbound_upstream_conf ...`):
#   STB_UPSTREAM_QNAMES      N (default 50)
#   STB_UPSTREAM_THREADS     unbound num-threads (default 1)
#   STB_UPSTREAM_LOG_QUERIES yes|no: one log line per query received (default yes)
#   STB_UPSTREAM_FLOOD_ZONE  a zone under test. (e.g. flood.test) made a `redirect` zone
#                            answering every name below it with A 192.0.2.1 (default none)
stb_unbound_upstream_conf() {
    local file=$1 pki=$2 iface n qnames=${STB_UPSTREAM_QNAMES:-50} flood=${STB_UPSTREAM_FLOOD_ZONE:-}
    shift 2
    {
        echo "server:"
        echo "    verbosity: 1"
        echo "    num-threads: ${STB_UPSTREAM_THREADS:-1}"
        for iface in "$@"; do echo "    interface: $iface"; done
        cat <<EOF
    tls-port: 853
    tls-service-key: "$pki/server.key"
    tls-service-pem: "$pki/server.pem"
    do-ip6: no
    so-reuseport: no
    do-daemonize: no
    chroot: ""
    username: ""
    directory: "$pki"
    pidfile: ""
    use-syslog: no
    logfile: ""
    log-queries: ${STB_UPSTREAM_LOG_QUERIES:-yes}
    access-control: 127.0.0.0/8 allow
    module-config: "iterator"
    do-not-query-localhost: yes
    do-not-query-address: 0.0.0.0/0
    do-not-query-address: ::/0
    local-zone: "test." static
    local-data: "test. 300 IN SOA ns.test. hostmaster.test. 1 3600 600 86400 60"
    local-data: "a.test. 300 IN A 192.0.2.1"
    local-data: "aaaa.test. 300 IN AAAA 2001:db8::1"
    local-data: 'txt.test. 300 IN TXT "hello"'
EOF
        for ((n = 1; n <= qnames; n++)); do
            if ((n <= 254)); then
                echo "    local-data: \"q$n.test. 300 IN A 198.51.100.$n\""
            else
                echo "    local-data: \"q$n.test. 300 IN A 198.18.$((n / 256)).$((n % 256))\""
            fi
        done
        if [[ -n $flood ]]; then
            echo "    local-zone: \"$flood.\" redirect"
            echo "    local-data: \"$flood. 300 IN A 192.0.2.1\""
        fi
        printf 'remote-control:\n    control-enable: no\n'
    } >"$file"
}

# stb_wait_listening NS PID PROTO PORT ADDR [TENTHS]: wait (≤ TENTHS×0.1 s, default 50)
# until PID listens on ADDR:PORT (proto tcp|udp|both). Returns 1 if PID died or the time ran
# out.
stb_wait_listening() {
    local ns=$1 pid=$2 proto=$3 port=$4 addr=$5 tenths=${6:-50} i
    for ((i = 0; i < tenths; i++)); do
        stb_alive "$pid" || return 1
        case $proto in
        both)
            if stb_listening "$ns" udp "$port" "$addr" && stb_listening "$ns" tcp "$port" "$addr"; then
                return 0
            fi
            ;;
        *) stb_listening "$ns" "$proto" "$port" "$addr" && return 0 ;;
        esac
        sleep 0.1
    done
    return 1
}

# stb_start_unbound NS CONF LOG IP@PORT...: checkconf, start unbound -d, wait (≤ 5 s per
# interface) for each listener (TCP for 853, UDP+TCP otherwise). Sets STB_UNBOUND_PID; on
# failure stb_fatal "$STB_NAME".
stb_start_unbound() {
    local ns=$1 conf=$2 log=$3 iface proto
    shift 3
    unbound-checkconf "$conf" >"$log.checkconf" 2>&1 ||
        stb_fatal "$STB_NAME" "unbound-checkconf rejects $conf" "$log.checkconf"
    stb_spawn "$ns" "$log" unbound -d -c "$conf"
    STB_UNBOUND_PID=$STB_LAST_PID
    for iface in "$@"; do
        proto=both
        [[ ${iface#*@} == 853 ]] && proto=tcp
        stb_wait_listening "$ns" "$STB_UNBOUND_PID" "$proto" "${iface#*@}" "${iface%@*}" ||
            stb_fatal "$STB_NAME" "unbound ($conf) is not listening on $iface after 5 s" "$log"
    done
}

# stb_start_stubborn NS CONFIG LOG: start STUBBORN_BIN and wait (≤ 5 s) for UDP and TCP
# listeners on 127.0.0.1:53. Sets STUBBORN_PID; on failure stb_fatal "$STB_NAME".
stb_start_stubborn() {
    local ns=$1 config=$2 log=$3 rc=0
    [[ -x $STUBBORN_BIN ]] || stb_fatal "$STB_NAME" \
        "stubborn binary not found or not executable: $STUBBORN_BIN (build it with 'cargo build --release', or set STUBBORN_BIN)"
    stb_spawn "$ns" "$log" "$STUBBORN_BIN" --config "$config"
    STUBBORN_PID=$STB_LAST_PID
    if ! stb_wait_listening "$ns" "$STUBBORN_PID" both 53 127.0.0.1; then
        if ! stb_alive "$STUBBORN_PID"; then
            wait "$STUBBORN_PID" 2>/dev/null || rc=$?
            stb_fatal "$STB_NAME" "stubborn exited during start-up (exit status $rc; command: $STUBBORN_BIN --config $config)" "$log"
        fi
        stb_fatal "$STB_NAME" "stubborn is not listening on 127.0.0.1:53 (udp+tcp) after 5 s" "$log"
    fi
}

# stb_stop_stubborn DESCRIPTION: SIGTERM, wait ≤ 5 s; checks the exit status is 0.
stb_stop_stubborn() {
    stb_stop "$STUBBORN_PID" 50
    stb_expect_eq "stubborn exits 0 on SIGTERM ($1)" 0 "$STB_STOP_RC"
}

# stb_nft_table NS TABLE RULE...: a fresh `table inet TABLE` in NS with one `output` hook
# chain (priority 0, policy accept) holding RULE... in order (on loopback every packet
# a local process sends passes `output`, so faults and counters go there). A RULE written
# `input: RULE` goes, in order, into an `input` hook chain instead (made only when such a
# rule is given; on loopback a packet passes `output` and then `input`). Any earlier table
# of that name is replaced, so counters start from zero.
stb_nft_table() {
    local ns=$1 table=$2 rule
    local -a out=() in=()
    shift 2
    for rule in "$@"; do
        if [[ $rule == "input: "* ]]; then in+=("${rule#input: }"); else out+=("$rule"); fi
    done
    stb_nft_del "$ns" "$table" 2>/dev/null || true
    {
        echo "table inet $table {"
        echo "  chain output {"
        echo "    type filter hook output priority 0; policy accept;"
        for rule in "${out[@]}"; do echo "    $rule"; done
        echo "  }"
        if ((${#in[@]})); then
            echo "  chain input {"
            echo "    type filter hook input priority 0; policy accept;"
            for rule in "${in[@]}"; do echo "    $rule"; done
            echo "  }"
        fi
        echo "}"
    } | ip netns exec "$ns" nft -f - || return 1
    STB_NFT_TABLES+=("$ns $table")
}

# stb_nft_del NS TABLE: delete the table (and forget it).
stb_nft_del() {
    local ns=$1 table=$2 i
    for i in "${!STB_NFT_TABLES[@]}"; do
        [[ ${STB_NFT_TABLES[$i]} == "$ns $table" ]] && unset 'STB_NFT_TABLES[i]'
    done
    ip netns exec "$ns" nft delete table inet "$table"
}

# stb_nft_rules NS TABLE: the table's rules, one per line, trimmed (counters included).
stb_nft_rules() {
    ip netns exec "$1" nft list table inet "$2" | sed -n 's/^[[:space:]]*\(.*\(counter\|drop\|reject\).*\)$/\1/p'
}

# stb_nft_packets NS TABLE MATCH: the packet count of the first counter rule containing
# MATCH (a fixed string), or "?" if none.
stb_nft_packets() {
    local n
    n=$(stb_nft_rules "$1" "$2" | grep -F -- "$3" | sed -n 's/.*counter packets \([0-9]*\) .*/\1/p' | head -n 1)
    echo "${n:-?}"
}

# stb_dig NS OUT SERVER dig-args...: run dig @SERVER inside NS, output to OUT (never fails).
stb_dig() {
    local ns=$1 out=$2 server=$3
    shift 3
    ip netns exec "$ns" dig @"$server" "$@" >"$out" 2>&1 || true
}
# Fields of a dig output file: the status (NOERROR, SERVFAIL, ...; empty without an answer),
# the answer's first rdata, and "Query time" in ms (empty without an answer).
stb_dig_status() { sed -n 's/.*status: \([A-Z]*\),.*/\1/p' "$1" | head -n 1; }
stb_dig_rdata() { awk '/^;; ANSWER SECTION:/ { on = 1; next } on && NF >= 5 { print $5; exit }' "$1"; }
stb_dig_msec() { sed -n 's/^;; Query time: \([0-9]*\) msec.*/\1/p' "$1" | head -n 1; }
