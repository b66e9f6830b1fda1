#!/usr/bin/env bash
# tests/netns/container.sh — the binary the container image carries (Containerfile: static
# glibc, built for x86_64-unknown-linux-gnu with
# RUSTFLAGS='-C target-feature=+crt-static --cfg getrandom_backend="linux_getrandom"'),
# run the way the image runs it, since Docker cannot run here (root only; run by .ci/run
# through run-all.sh, or by hand: `sudo bash tests/netns/container.sh`).
#
#  1. The binary is static: no ELF interpreter, no shared library needed; its size is printed.
#  2. In a bare network namespace (only lo) with a real unbound DoT upstream on 127.0.0.2:853:
#     the binary with an empty environment and only a config file answers dig (UDP, TCP),
#     and `stubborn health` passes.
#  3. In an empty chroot holding only the binary and the config (`chroot DIR /stubborn
#     --config /stubborn.toml`; no /dev, no /proc, no /etc): dig answers, `health` passes,
#     the metrics endpoint serves.
#  4. The image's ways to configure and to bind port 53 without root:
#     STUBBORN_CONFIG and STUBBORN_LISTEN (a non-root user on 5353, found by `health` too);
#     a mounted /etc/stubborn/stubborn.toml, else the embedded default; CAP_NET_BIND_SERVICE
#     as a file capability (setcap, as the Containerfile does) lets uid 65532 bind port 53,
#     and without it the same bind is refused.
#
# Environment: STUBBORN_STATIC_BIN (default target/x86_64-unknown-linux-gnu/release/stubborn),
# CI (true: never skip), STB_KEEP_TMP=1 (keep logs).
# Closing line: "container: N passed, M failed"; exit 0 only if M is 0.

. "$(dirname "$0")/lib.sh"
NAME=container
STB_NAME=$NAME

STATIC_BIN=${STUBBORN_STATIC_BIN:-$STB_REPO_ROOT/target/x86_64-unknown-linux-gnu/release/stubborn}
stb_preflight openssl unbound unbound-checkconf dig ss base64 chroot readelf setcap
[[ -x $STATIC_BIN ]] || stb_unavailable "static binary not found: $STATIC_BIN (build it as .ci/run does:" \
    "RUSTFLAGS='-C target-feature=+crt-static --cfg getrandom_backend=\"linux_getrandom\"'" \
    "cargo build --release --locked --target x86_64-unknown-linux-gnu)"
T=$STB_TMP
# env -i leaves no PATH: commands after it are named by path.
CHROOT=$(command -v chroot)
UPSTREAM_IP=127.0.0.2
NOBODY=65532

# --- 1. static ----------------------------------------------------------------------------
stb_log "step 1: is $STATIC_BIN static?"
no_interpreter() { ! readelf -l "$STATIC_BIN" | grep -q 'INTERP'; }
no_needed() { ! readelf -d "$STATIC_BIN" | grep -q '(NEEDED)'; }
stb_check "no ELF interpreter (PT_INTERP)" no_interpreter
stb_check "no shared library needed (DT_NEEDED)" no_needed
ldd_says=$(ldd "$STATIC_BIN" 2>&1 || true)
ldd_static() { grep -qE 'statically linked|not a dynamic executable' <<<"$ldd_says"; }
stb_check "ldd: ${ldd_says//$'\n'/ }" ldd_static
if command -v file >/dev/null; then echo "file: $(file -b "$STATIC_BIN")"; fi
SIZE=$(stat -c %s "$STATIC_BIN")
echo "static binary size: $SIZE bytes ($((SIZE / 1024)) KiB)"

# --- 2. upstream and config -----------------------------------------------------------------
NS=$(stb_ns_name container)
stb_ns_create "$NS"
stb_log "namespace $NS, temp dir $T"
mkdir -p "$T/pki"
stb_make_pki "$T/pki" || stb_fatal "$NAME" "openssl could not make the certificates" "$T/pki/openssl.log"
stb_unbound_upstream_conf "$T/unbound.conf" "$T/pki" "$UPSTREAM_IP@853"
stb_start_unbound "$NS" "$T/unbound.conf" "$T/unbound.log" "$UPSTREAM_IP@853"

write_config() { # FILE LISTEN
    cat >"$1" <<EOF
[server]
listen = ["$2"]

[metrics]
listen = "127.0.0.1:9153"

[[upstream]]
name = "unbound"
addresses = ["$UPSTREAM_IP"]
tls_name = "dns.test"
pins = ["key-fp:SHA256:$STB_PIN"]
EOF
}

dig_a() { # PORT [dig args...]: the first A record of a.test, or nothing
    local port=$1
    shift
    stb_exec "$NS" dig @127.0.0.1 -p "$port" +time=2 +tries=1 +short "$@" a.test A 2>/dev/null | head -n 1
}

wait_answer() { # PORT: until a.test resolves (≤ 50 × ~0.1–2 s)
    local i
    for ((i = 0; i < 50; i++)); do
        [[ $(dig_a "$1") == 192.0.2.1 ]] && return 0
        sleep 0.1
    done
    return 1
}

start() { # LOG PORT CMD...: spawn CMD in the namespace, wait for udp+tcp on 127.0.0.1:PORT
    local log=$1 port=$2
    shift 2
    stb_spawn "$NS" "$log" "$@"
    PID=$STB_LAST_PID
    stb_wait_listening "$NS" "$PID" both "$port" 127.0.0.1 || {
        stb_fail "listening on 127.0.0.1:$port ($*)"
        tail -n 20 "$log"
        return 1
    }
}

# --- 2. a bare namespace: an empty environment, an empty working directory, one file -------
stb_log "step 2: bare namespace, empty environment"
mkdir -p "$T/bare/cwd"
write_config "$T/bare/stubborn.toml" 127.0.0.1:53
if start "$T/bare.log" 53 env -i -C "$T/bare/cwd" "$STATIC_BIN" --config "$T/bare/stubborn.toml"; then
    stb_check "bare: dig (UDP) a.test through the static binary" wait_answer 53
    stb_expect_eq "bare: dig +tcp a.test" 192.0.2.1 "$(dig_a 53 +tcp)"
    health_bare() { stb_exec "$NS" env -i "$STATIC_BIN" health --config "$T/bare/stubborn.toml" --name a.test; }
    stb_check "bare: stubborn health exits 0" health_bare
    stb_stop "$PID"
    stb_expect_eq "bare: exits 0 on SIGTERM" 0 "$STB_STOP_RC"
fi

# --- 3. an empty chroot: the binary and the config, nothing else --------------------------
stb_log "step 3: empty chroot"
ROOT=$T/root
mkdir -m 0755 "$ROOT"
install -m 0755 "$STATIC_BIN" "$ROOT/stubborn"
write_config "$ROOT/stubborn.toml" 127.0.0.1:53
chmod 0644 "$ROOT/stubborn.toml"
stb_expect_eq "the chroot holds only the binary and the config" "stubborn stubborn.toml" \
    "$(cd "$ROOT" && echo *)"
in_chroot() { stb_exec "$NS" env -i "$CHROOT" "$@"; }
if start "$T/chroot.log" 53 env -i "$CHROOT" "$ROOT" /stubborn --config /stubborn.toml; then
    stb_check "chroot: dig (UDP) a.test" wait_answer 53
    stb_expect_eq "chroot: dig +tcp a.test" 192.0.2.1 "$(dig_a 53 +tcp)"
    health_chroot() { in_chroot "$ROOT" /stubborn health --config /stubborn.toml --name a.test; }
    stb_check "chroot: stubborn health exits 0" health_chroot
    health_out=$(in_chroot "$ROOT" /stubborn health --config /stubborn.toml --name a.test || true)
    echo "health: $health_out"
    scrape() {
        stb_exec "$NS" bash -c 'exec 3<>/dev/tcp/127.0.0.1/9153 &&
            printf "GET /metrics HTTP/1.0\r\n\r\n" >&3 && timeout 5 cat <&3'
    }
    scrape >"$T/metrics.out" 2>&1 || true
    metrics_ok() {
        grep -q '^HTTP/1.0 200 OK' "$T/metrics.out" &&
            grep -qE '^stubborn_queries_total\{transport="udp",rcode="NOERROR"\} [1-9]' "$T/metrics.out"
    }
    stb_check "chroot: GET /metrics serves the query counters" metrics_ok
    stb_stop "$PID"
    stb_expect_eq "chroot: exits 0 on SIGTERM" 0 "$STB_STOP_RC"
fi

# --- 4. the image's knobs -------------------------------------------------------------------
stb_log "step 4: STUBBORN_CONFIG, STUBBORN_LISTEN and a non-root user"
as_nobody() { # CMD... in the chroot as uid/gid 65532, with the image's environment
    stb_exec "$NS" env -i STUBBORN_CONFIG=/stubborn.toml STUBBORN_LISTEN=127.0.0.1:5353 \
        "$CHROOT" --userspec=$NOBODY:$NOBODY "$ROOT" "$@"
}
if start "$T/nobody.log" 5353 env -i STUBBORN_CONFIG=/stubborn.toml STUBBORN_LISTEN=127.0.0.1:5353 \
    "$CHROOT" --userspec=$NOBODY:$NOBODY "$ROOT" /stubborn; then
    stb_expect_eq "env: runs as uid $NOBODY" "$NOBODY" "$(awk '/^Uid:/ { print $2 }' "/proc/$PID/status")"
    stb_check "env: STUBBORN_LISTEN=127.0.0.1:5353 answers" wait_answer 5353
    health_env() { as_nobody /stubborn health --name a.test; }
    stb_check "env: stubborn health finds port 5353 through STUBBORN_LISTEN" health_env
    stb_stop "$PID"
fi

# The config file the image looks for, else the embedded default.
mkdir -p "$ROOT/etc/stubborn"
cp "$ROOT/stubborn.toml" "$ROOT/etc/stubborn/stubborn.toml"
chmod -R a+rX "$ROOT/etc"
origin() { in_chroot "$ROOT" /stubborn check 2>/dev/null | sed -n 's/^config: //p'; }
stb_expect_eq "a mounted /etc/stubborn/stubborn.toml is used" /etc/stubborn/stubborn.toml "$(origin)"
rm -r "$ROOT/etc"
stb_expect_eq "without one, the embedded default" "<embedded default>" "$(origin)"

# Port 53 as non-root: refused without the capability, allowed with it (the Containerfile's
# setcap). A new network namespace starts with ip_unprivileged_port_start=1024.
stb_log "unprivileged port start in $NS: $(stb_exec "$NS" cat /proc/sys/net/ipv4/ip_unprivileged_port_start)"
# Bounded: a daemon that (wrongly) binds would run until the timeout (exit 124).
nocap_rc=0
timeout 10 ip netns exec "$NS" env -i STUBBORN_LISTEN=127.0.0.1:53 \
    "$CHROOT" --userspec=$NOBODY:$NOBODY "$ROOT" /stubborn --config /stubborn.toml \
    >"$T/nocap.log" 2>&1 || nocap_rc=$?
refused() { [[ $nocap_rc != 0 && $nocap_rc != 124 ]] && grep -qi 'permission denied' "$T/nocap.log"; }
stb_check "without CAP_NET_BIND_SERVICE, uid $NOBODY cannot bind port 53 (exit $nocap_rc)" refused
setcap cap_net_bind_service=+ep "$ROOT/stubborn"
stb_log "file capability: $(getcap "$ROOT/stubborn" 2>/dev/null || echo '?')"
if start "$T/cap.log" 53 env -i STUBBORN_LISTEN=127.0.0.1:53 \
    "$CHROOT" --userspec=$NOBODY:$NOBODY "$ROOT" /stubborn --config /stubborn.toml; then
    stb_expect_eq "with the file capability: uid $NOBODY" "$NOBODY" \
        "$(awk '/^Uid:/ { print $2 }' "/proc/$PID/status")"
    stb_check "with the file capability: port 53 answers" wait_answer 53
    stb_stop "$PID"
fi

echo "---- GET /metrics after the chroot run (dig a.test over UDP and TCP, one health probe) ----"
cat "$T/metrics.out"
echo "----"
echo "static binary size: $SIZE bytes"
stb_summary "$NAME"
