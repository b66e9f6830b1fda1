#!/usr/bin/env bash
# tests/netns/interop.sh — stubborn against a real unbound DoT upstream, with dig/kdig as
# clients, all inside a private network namespace (root only; run by .ci/run through
# run-all.sh, or by hand: `sudo bash tests/netns/interop.sh`).
#
#  1. openssl makes a CA and a server certificate for dns.test; openssl computes its SPKI pin.
#  2. unbound serves DNS over TLS on 127.0.0.2:853 from local data only (never recurses).
#  3. kdig checks unbound directly: right pin and CA+hostname succeed, a wrong pin fails.
#  4. stubborn (STUBBORN_BIN) listens on 127.0.0.1:53 with unbound pinned as its upstream;
#     dig (UDP, TCP) and kdig get the answers; with a wrong pin stubborn answers SERVFAIL and
#     logs the pin the server actually presented. stubborn exits 0 on SIGTERM.
#
# Environment: STUBBORN_BIN (default target/release/stubborn), CI (true: never skip),
# INTEROP_SKIP_STUBBORN=1 (only without CI: run steps 1–3 alone), STB_KEEP_TMP=1 (keep logs).
# Closing line: "interop: N passed, M failed"; exit 0 only if M is 0.

. "$(dirname "$0")/lib.sh"
NAME=interop
STB_NAME=$NAME

stb_preflight openssl unbound unbound-checkconf kdig dig ss base64
NS=$(stb_ns_name interop)
stb_ns_create "$NS"
stb_log "namespace $NS, temp dir $STB_TMP"
T=$STB_TMP
UPSTREAM_IP=127.0.0.2

# --- 1. PKI ---------------------------------------------------------------------------
stb_log "step 1: CA and server certificate (openssl)"
stb_make_pki "$T" || stb_fatal "$NAME" "openssl could not make the certificates and pins" "$T/openssl.log"
PIN=$STB_PIN
WRONG_PIN=$STB_WRONG_PIN
stb_check "openssl: server certificate verifies against the CA for dns.test" \
    stb_quiet openssl verify -CAfile "$T/ca.pem" -verify_hostname dns.test "$T/server.pem"
stb_log "server pin key-fp:SHA256:$PIN"

# --- 2. unbound -----------------------------------------------------------------------
stb_log "step 2: unbound (DoT on $UPSTREAM_IP:853, local data only)"
stb_unbound_upstream_conf "$T/unbound.conf" "$T" "$UPSTREAM_IP@853"
stb_start_unbound "$NS" "$T/unbound.conf" "$T/unbound.log" "$UPSTREAM_IP@853"
stb_pass "unbound listens on $UPSTREAM_IP:853"

# --- 3. kdig straight to unbound ------------------------------------------------------
stb_log "step 3: kdig -> unbound over TLS"
kdig_unbound() { # extra kdig args...; prints +short answers
    stb_exec "$NS" kdig @"$UPSTREAM_IP" -p 853 +tls +time=2 +retry=0 +short "$@"
}
if ! stb_retry 50 kdig_unbound +tls-pin="$PIN" a.test; then
    stb_fatal "$NAME" "kdig gets no answer from unbound over TLS within 50 tries" "$T/unbound.log"
fi
stb_expect_eq "kdig +tls-pin -> unbound: a.test A" 192.0.2.1 "$(kdig_unbound +tls-pin="$PIN" a.test A)"
stb_expect_eq "kdig +tls-pin -> unbound: aaaa.test AAAA" 2001:db8::1 \
    "$(kdig_unbound +tls-pin="$PIN" aaaa.test AAAA)"
stb_expect_eq "kdig +tls-pin -> unbound: txt.test TXT" '"hello"' \
    "$(kdig_unbound +tls-pin="$PIN" txt.test TXT)"
stb_expect_eq "kdig +tls-ca +tls-hostname=dns.test -> unbound: a.test A" 192.0.2.1 \
    "$(kdig_unbound +tls-ca="$T/ca.pem" +tls-hostname=dns.test a.test A)"
if kdig_unbound +tls-pin="$WRONG_PIN" a.test A >"$T/kdig-wrong-pin.out" 2>&1 &&
    grep -q 192.0.2.1 "$T/kdig-wrong-pin.out"; then
    stb_fail "kdig with a wrong pin must not get an answer from unbound"
else
    stb_pass "kdig with a wrong pin gets no answer (the pin check is real)"
fi

# --- 4. stubborn ----------------------------------------------------------------------
if [[ ${INTEROP_SKIP_STUBBORN:-} == 1 ]]; then
    if [[ ${CI:-} == true ]]; then
        stb_fail "INTEROP_SKIP_STUBBORN=1 is not allowed with CI=true"
    else
        echo "######## step 4 (stubborn) SKIPPED: INTEROP_SKIP_STUBBORN=1 ########"
    fi
    stb_summary "$NAME"
fi
stb_log "step 4: stubborn ($STUBBORN_BIN)"

write_stubborn_config() { # PIN_B64 FILE
    cat >"$2" <<EOF
[server]
listen = ["127.0.0.1:53"]

[[upstream]]
name = "unbound"
addresses = ["$UPSTREAM_IP"]
tls_name = "dns.test"
pins = ["key-fp:SHA256:$1"]
EOF
}

start_stubborn() { stb_start_stubborn "$NS" "$1" "$2"; }
stop_stubborn() { stb_stop_stubborn "$1"; }

dig_stubborn() { # dig args...
    stb_exec "$NS" dig @127.0.0.1 +time=1 +tries=1 "$@"
}
dig_status() { # dig args... -> NOERROR / SERVFAIL / ... (empty if no answer)
    dig_stubborn +noall +comments "$@" 2>/dev/null |
        sed -n 's/.*status: \([A-Z]*\),.*/\1/p' | head -n 1
}

write_stubborn_config "$PIN" "$T/stubborn-good.toml"
start_stubborn "$T/stubborn-good.toml" "$T/stubborn-good.log"
stb_pass "stubborn (right pin) listens on 127.0.0.1:53 udp+tcp"

# Ready when dig gets an answer (bounded: 50 tries, each ≤ 1 s + 0.1 s).
ready=no
for ((i = 0; i < 50; i++)); do
    if [[ $(dig_status a.test A) == NOERROR ]]; then
        ready=yes
        break
    fi
    sleep 0.1
done
[[ $ready == yes ]] || stb_fatal "$NAME" "stubborn never answered a.test with NOERROR" \
    "$T/stubborn-good.log" "$T/unbound.log"

echo "---- dig answers through stubborn (right pin) ----"
for q in "a.test A" "aaaa.test AAAA" "txt.test TXT"; do
    # shellcheck disable=SC2086 # "name type" splits on purpose
    dig_stubborn +noall +answer $q || true
    # shellcheck disable=SC2086
    dig_stubborn +tcp +noall +answer $q || true
done
echo "----"

stb_expect_eq "dig (UDP) -> stubborn: a.test A" 192.0.2.1 "$(dig_stubborn +short a.test A)"
stb_expect_eq "dig +tcp -> stubborn: a.test A" 192.0.2.1 "$(dig_stubborn +tcp +short a.test A)"
stb_expect_eq "dig (UDP) -> stubborn: aaaa.test AAAA" 2001:db8::1 "$(dig_stubborn +short aaaa.test AAAA)"
stb_expect_eq "dig +tcp -> stubborn: aaaa.test AAAA" 2001:db8::1 \
    "$(dig_stubborn +tcp +short aaaa.test AAAA)"
stb_expect_eq "dig (UDP) -> stubborn: txt.test TXT" '"hello"' "$(dig_stubborn +short txt.test TXT)"
stb_expect_eq "dig +tcp -> stubborn: txt.test TXT" '"hello"' "$(dig_stubborn +tcp +short txt.test TXT)"
stb_expect_eq "kdig (UDP) -> stubborn: a.test A" 192.0.2.1 \
    "$(stb_exec "$NS" kdig @127.0.0.1 +time=2 +retry=0 +short a.test A)"
stb_expect_eq "kdig +tcp -> stubborn: txt.test TXT" '"hello"' \
    "$(stb_exec "$NS" kdig @127.0.0.1 +tcp +time=2 +retry=0 +short txt.test TXT)"
stb_expect_eq "dig -> stubborn: nope.test is NXDOMAIN" NXDOMAIN "$(dig_status nope.test A)"
stop_stubborn "right pin"

# Wrong pin: the handshake with unbound must be refused; clients get SERVFAIL.
write_stubborn_config "$WRONG_PIN" "$T/stubborn-wrong.toml"
start_stubborn "$T/stubborn-wrong.toml" "$T/stubborn-wrong.log"
stb_pass "stubborn (wrong pin) listens on 127.0.0.1:53 udp+tcp"
status=$(dig_status +time=10 a.test A || true)
echo "---- dig through stubborn (wrong pin) ----"
dig_stubborn +time=10 +noall +comments +answer a.test A | grep -E 'status|IN' || true
echo "----"
stb_expect_eq "dig -> stubborn with a wrong pin: SERVFAIL" SERVFAIL "$status"
stb_check "stubborn's log mentions 'pin'" grep -qi 'pin' "$T/stubborn-wrong.log"
# One pin in the config also triggers a "pins: only one pin" warning, so require the
# presented pin itself, on a line that talks about pins.
presented_pin_logged() { grep -i 'pin' "$T/stubborn-wrong.log" | grep -qF "$PIN"; }
stb_check "stubborn logs the pin unbound presented ($PIN) on a 'pin' line" presented_pin_logged
stop_stubborn "wrong pin"
if ((STB_FAILED > 0)); then
    for log in "$T/stubborn-good.log" "$T/stubborn-wrong.log"; do
        echo "---- last lines of $log ----"
        tail -n 30 "$log" || true
    done
fi

stb_summary "$NAME"
