#!/usr/bin/env bash
# tests/netns/ops.sh — the operator's tools against a real unbound DoT upstream, inside a
# private network namespace (root only; run by .ci/run through run-all.sh, or by hand:
# `sudo bash tests/netns/ops.sh`).
#
#  1. openssl makes root CA -> intermediate CA -> leaf (dns.test); unbound serves DNS over
#     TLS on 127.0.0.2:853 presenting leaf + intermediate.
#  2. `stubborn pin 127.0.0.2:853 --tls-name dns.test` prints, for each certificate, the
#     key-fp and cert-fp openssl computes from the chain it reads off the live server
#     (`openssl s_client -showcerts`), with the right labels.
#  3. `stubborn pin --check`: an intermediate pin and a leaf pin pass (exit 0), an
#     unrelated pin is reported as failing (exit 1).
#  4. stubborn with the intermediate pin and [log] queries = true answers dig; `stubborn
#     health` exits 0; the query log names the query, its rcode and the upstream; with
#     unbound stopped, `health` exits 1 with the reason although the answer is cached.
#
# Environment: STUBBORN_BIN (default target/release/stubborn), CI (true: never skip),
# STB_KEEP_TMP=1 (keep logs). Closing line: "ops: N passed, M failed".

. "$(dirname "$0")/lib.sh"
NAME=ops
STB_NAME=$NAME

stb_preflight openssl unbound unbound-checkconf dig ss base64
[[ -x $STUBBORN_BIN ]] || stb_fatal "$NAME" "stubborn binary not found: $STUBBORN_BIN (cargo build --release)"
NS=$(stb_ns_name ops)
stb_ns_create "$NS"
T=$STB_TMP
UPSTREAM_IP=127.0.0.2
stb_log "namespace $NS, temp dir $T"

# --- 1. a three-level PKI and unbound ---------------------------------------------------
stb_log "step 1: root -> intermediate -> leaf (openssl), unbound on $UPSTREAM_IP:853"
make_chain() {
    local d=$1
    ec() { openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes "$@"; }
    {
        ec -x509 -keyout "$d/root.key" -out "$d/root.pem" -days 2 -subj "/CN=stubborn ops root" \
            -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" &&
            ec -keyout "$d/inter.key" -out "$d/inter.csr" -subj "/CN=stubborn ops intermediate" &&
            printf '%s\n' "basicConstraints=critical,CA:TRUE,pathlen:0" \
                "keyUsage=critical,keyCertSign,cRLSign" >"$d/inter.ext" &&
            openssl x509 -req -in "$d/inter.csr" -CA "$d/root.pem" -CAkey "$d/root.key" -set_serial 3 \
                -days 2 -extfile "$d/inter.ext" -out "$d/inter.pem" &&
            ec -keyout "$d/server.key" -out "$d/leaf.csr" -subj "/CN=dns.test" &&
            printf '%s\n' "subjectAltName=DNS:dns.test" "basicConstraints=critical,CA:FALSE" \
                "keyUsage=critical,digitalSignature" "extendedKeyUsage=serverAuth" >"$d/leaf.ext" &&
            openssl x509 -req -in "$d/leaf.csr" -CA "$d/inter.pem" -CAkey "$d/inter.key" -set_serial 4 \
                -days 2 -extfile "$d/leaf.ext" -out "$d/leaf.pem" &&
            # unbound presents the whole file: leaf first, then the intermediate.
            cat "$d/leaf.pem" "$d/inter.pem" >"$d/server.pem" &&
            ec -x509 -keyout "$d/other.key" -out "$d/other.pem" -days 2 -subj "/CN=unrelated"
    } >"$d/openssl.log" 2>&1
}
make_chain "$T" || stb_fatal "$NAME" "openssl could not make the chain" "$T/openssl.log"
stb_unbound_upstream_conf "$T/unbound.conf" "$T" "$UPSTREAM_IP@853"
stb_start_unbound "$NS" "$T/unbound.conf" "$T/unbound.log" "$UPSTREAM_IP@853"

# --- 2. stubborn pin vs openssl -------------------------------------------------------------
stb_log "step 2: stubborn pin vs openssl s_client"
stb_exec "$NS" timeout 10 openssl s_client -connect "$UPSTREAM_IP:853" -servername dns.test -showcerts \
    </dev/null >"$T/s_client.out" 2>&1 || true
# Split the chain openssl read into live-0.pem, live-1.pem, ...
awk -v dir="$T" '/BEGIN CERTIFICATE/ { n++; on = 1 } on { print > (dir "/live-" (n - 1) ".pem") }
    /END CERTIFICATE/ { on = 0 }' "$T/s_client.out"
stb_expect_eq "openssl s_client reads two certificates off unbound" 2 "$(find "$T" -name 'live-*.pem' | wc -l)"
cert_fp() { openssl x509 -in "$1" -outform der | openssl dgst -sha256 -binary | base64; }
LEAF_KEY=$(stb_spki_pin "$T/live-0.pem")
LEAF_CERT=$(cert_fp "$T/live-0.pem")
INTER_KEY=$(stb_spki_pin "$T/live-1.pem")
INTER_CERT=$(cert_fp "$T/live-1.pem")
stb_expect_eq "the live leaf is the one openssl made" "$(stb_spki_pin "$T/leaf.pem")" "$LEAF_KEY"

stb_exec "$NS" "$STUBBORN_BIN" pin "$UPSTREAM_IP:853" --tls-name dns.test >"$T/pin.out" 2>"$T/pin.err" &&
    pin_rc=0 || pin_rc=$?
echo "---- stubborn pin $UPSTREAM_IP:853 --tls-name dns.test ----"
cat "$T/pin.out" "$T/pin.err"
echo "----"
stb_expect_eq "stubborn pin exits 0" 0 "$pin_rc"
# The lines of the entry "[I] ..." of the report.
entry() { awk -v want="[$1]" '$1 == want { on = 1; print; next } /^\[/ { on = 0 } on' "$T/pin.out"; }
stb_expect_eq "[0] is labelled leaf" "[0] leaf" "$(entry 0 | head -n 1)"
stb_expect_eq "[1] is labelled intermediate" "[1] intermediate" "$(entry 1 | head -n 1)"
field() { entry "$1" | sed -n "s/^ *$2:SHA256://p"; }
stb_expect_eq "leaf key-fp = openssl's SPKI pin" "$LEAF_KEY" "$(field 0 key-fp)"
stb_expect_eq "leaf cert-fp = openssl's certificate hash" "$LEAF_CERT" "$(field 0 cert-fp)"
stb_expect_eq "intermediate key-fp = openssl's SPKI pin" "$INTER_KEY" "$(field 1 key-fp)"
stb_expect_eq "intermediate cert-fp = openssl's certificate hash" "$INTER_CERT" "$(field 1 cert-fp)"
says() { grep -qF "$1" "$T/pin.out"; }
stb_check "it says every certificate was accepted (discovery)" says "every certificate was accepted"
stb_check "it says a leaf pin breaks on key rotation" says "breaks when the server rotates its key"

# --- 3. stubborn pin --check ---------------------------------------------------------------
stb_log "step 3: stubborn pin --check"
write_config() { # FILE PIN... (base64 SPKI digests)
    local file=$1 pins="" p
    shift
    for p in "$@"; do pins+="${pins:+, }\"key-fp:SHA256:$p\""; done
    cat >"$file" <<EOF
[server]
listen = ["127.0.0.1:53"]

[metrics]
listen = "127.0.0.1:9153"

[log]
queries = true

[[upstream]]
name = "unbound"
addresses = ["$UPSTREAM_IP"]
tls_name = "dns.test"
pins = [$pins]
EOF
}
OTHER_KEY=$(stb_spki_pin "$T/other.pem")
write_config "$T/inter.toml" "$INTER_KEY"
write_config "$T/leaf.toml" "$LEAF_KEY" "$OTHER_KEY"
write_config "$T/wrong.toml" "$OTHER_KEY"
check_rc() { # CONFIG -> exit status of pin --check
    local rc=0
    stb_exec "$NS" "$STUBBORN_BIN" pin --check --config "$1" >"$1.check" 2>&1 || rc=$?
    echo "$rc"
}
stb_expect_eq "pin --check: the intermediate pin passes" 0 "$(check_rc "$T/inter.toml")"
stb_expect_eq "pin --check: a leaf pin (plus a backup) passes" 0 "$(check_rc "$T/leaf.toml")"
stb_expect_eq "pin --check: an unrelated pin fails" 1 "$(check_rc "$T/wrong.toml")"
echo "---- stubborn pin --check (unrelated pin) ----"
cat "$T/wrong.toml.check"
echo "----"
stb_check "the failing report names the upstream" grep -q 'upstream "unbound": WOULD FAIL' "$T/wrong.toml.check"

# --- 4. health and the query log -----------------------------------------------------------
stb_log "step 4: health and query log ($STUBBORN_BIN)"
stb_start_stubborn "$NS" "$T/inter.toml" "$T/stubborn.log"
dig_a() { stb_exec "$NS" dig @127.0.0.1 +time=2 +tries=1 +short "$@" 2>/dev/null | head -n 1; }
answered=no
for ((i = 0; i < 50; i++)); do
    if [[ $(dig_a a.test A) == 192.0.2.1 ]]; then
        answered=yes
        break
    fi
    sleep 0.1
done
stb_expect_eq "dig through stubborn (intermediate pin) answers a.test" yes "$answered"
dig_a a.test A >/dev/null
dig_a nope.test AAAA >/dev/null
health() { stb_exec "$NS" "$STUBBORN_BIN" health --config "$T/inter.toml" --name a.test; }
health >"$T/health-ok.out" 2>&1 && health_rc=0 || health_rc=$?
echo "health (unbound up): $(cat "$T/health-ok.out")"
stb_expect_eq "health exits 0 while unbound answers" 0 "$health_rc"
logged() { grep 'stubborn::query' "$T/stubborn.log" | grep -F "$1" | grep -qF "$2"; }
stb_check "the query log names a.test A, NOERROR and the upstream" \
    logged "name=a.test. qtype=A" "via=unbound@$UPSTREAM_IP:853/tls"
stb_check "the query log shows the cache hit" logged "name=a.test. qtype=A" "via=cache"
stb_check "the query log shows NXDOMAIN" logged "name=nope.test. qtype=AAAA" "rcode=NXDOMAIN"
echo "---- query log ----"
grep 'stubborn::query' "$T/stubborn.log" || true
echo "----"

stb_stop "$STB_UNBOUND_PID"
stb_expect_eq "a.test is still answered (from the cache)" 192.0.2.1 "$(dig_a a.test A)"
health >"$T/health-dead.out" 2>&1 && health_rc=0 || health_rc=$?
echo "health (unbound down): $(cat "$T/health-dead.out")"
stb_expect_eq "health exits 1 once unbound is gone" 1 "$health_rc"
stb_check "health says SERVFAIL and why" grep -q 'SERVFAIL (EDE 2[23]' "$T/health-dead.out"
stb_check "health --local still passes (the daemon answers)" \
    stb_quiet stb_exec "$NS" "$STUBBORN_BIN" health --config "$T/inter.toml" --local
stb_stop_stubborn "ops"
stb_summary "$NAME"
