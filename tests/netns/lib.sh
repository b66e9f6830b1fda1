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
#   - STUBBORN_BIN is the stubborn binary (default: <repo>/target/release/stubborn).

set -euo pipefail

STB_LIB_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
STB_REPO_ROOT=$(cd "$STB_LIB_DIR/../.." && pwd)
STUBBORN_BIN=${STUBBORN_BIN:-target/release/stubborn}
case $STUBBORN_BIN in /*) ;; *) STUBBORN_BIN=$STB_REPO_ROOT/$STUBBORN_BIN ;; esac

STB_NAMESPACES=()
STB_PIDS=()
STB_PASSED=0
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
