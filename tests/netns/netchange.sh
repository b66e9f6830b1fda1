#!/usr/bin/env bash
# tests/netns/netchange.sh — a network switch (issue 15 §4): the laptop leaves one network
# for another in the middle of a run, and the next query is answered without waiting for
# the dead-connection timeout. Root only; run by .ci/run through run-all.sh, or by hand:
# `sudo bash tests/netns/netchange.sh`.
#
# Two namespaces: the laptop (stubborn on 127.0.0.1:53) and the upstream (unbound, DoT on
# 10.9.9.9:853, pinned), joined by two links: "wifi" (10.1.0.0/24) and "wired"
# (10.2.0.0/24). The route to 10.9.9.9 goes over wifi. Then the switch: the laptop's wifi
# address is removed and its route replaced by one over wired, and the upstream's end of
# wifi goes down, so the old connection (source 10.1.0.1) dies silently, as one does when a
# laptop changes networks. stubborn's rtnetlink watch sees the change, drops its
# connections and races at once; without it, the next query would wait out the health
# policy's 2 s of silence before its connection is declared dead.
#
# Checks: the query before the switch is answered over wifi; stubborn logs the change and a
# pre-warm race ready for it; the first query after the switch (1 s later) is answered
# NOERROR in under 1000 ms (dig's query time; the dead-connection path takes over 2000 ms);
# the upstream saw it from the wired address; stubborn exits 0.
#
# Environment: STUBBORN_BIN (default target/release/stubborn), CI (true: never skip),
# STB_KEEP_TMP=1. Closing line: "netchange: N passed, M failed"; exit 77 when it cannot run.

. "$(dirname "$0")/lib.sh"
NAME=netchange
STB_NAME=$NAME

stb_preflight openssl unbound unbound-checkconf dig ss base64 awk
LAPTOP=$(stb_ns_name laptop)
NET=$(stb_ns_name net)
stb_ns_create "$LAPTOP"
stb_ns_create "$NET"
T=$STB_TMP
stb_log "namespaces $LAPTOP and $NET, temp dir $T"

# --- the two links and the upstream's address -----------------------------------------------
for link in wifi wired; do
    ip link add "$link" netns "$LAPTOP" type veth peer name "$link-up" netns "$NET"
done
ip -n "$LAPTOP" addr add 10.1.0.1/24 dev wifi
ip -n "$LAPTOP" addr add 10.2.0.1/24 dev wired
ip -n "$NET" addr add 10.1.0.2/24 dev wifi-up
ip -n "$NET" addr add 10.2.0.2/24 dev wired-up
ip -n "$NET" addr add 10.9.9.9/32 dev lo
for link in wifi wired; do
    ip -n "$LAPTOP" link set "$link" up
    ip -n "$NET" link set "$link-up" up
done
ip -n "$LAPTOP" route add 10.9.9.9/32 via 10.1.0.2 dev wifi

stb_make_pki "$T" || stb_fatal "$NAME" "openssl could not make the certificates and pins" "$T/openssl.log"
stb_unbound_upstream_conf "$T/unbound.conf" "$T" "10.9.9.9@853"
sed -i 's|^    access-control: 127.0.0.0/8 allow|&\n    access-control: 10.0.0.0/8 allow|' "$T/unbound.conf"
stb_start_unbound "$NET" "$T/unbound.conf" "$T/unbound.log" "10.9.9.9@853"

cat >"$T/stubborn.toml" <<EOF
[server]
listen = ["127.0.0.1:53"]

[[upstream]]
name = "net"
addresses = ["10.9.9.9"]
tls_name = "dns.test"
pins = ["key-fp:SHA256:$STB_PIN"]
EOF
RUST_LOG=info,hickory_proto=error stb_start_stubborn "$LAPTOP" "$T/stubborn.toml" "$T/stubborn.log"

# --- before the switch ----------------------------------------------------------------------
stb_dig "$LAPTOP" "$T/before.dig" 127.0.0.1 +tries=1 +time=3 q1.test A
stb_expect_eq "before the switch: q1.test answered" "198.51.100.1" "$(stb_dig_rdata "$T/before.dig")"
stb_check "before the switch: the upstream saw the laptop's wifi address" \
    grep -q '10\.1\.0\.1.*q1\.test\. A IN' "$T/unbound.log"

# --- the switch -----------------------------------------------------------------------------
stb_log "switching from wifi to wired"
ip -n "$NET" link set wifi-up down
ip -n "$LAPTOP" addr del 10.1.0.1/24 dev wifi
ip -n "$LAPTOP" route replace 10.9.9.9/32 via 10.2.0.2 dev wired
sleep 1

stb_dig "$LAPTOP" "$T/after.dig" 127.0.0.1 +tries=1 +time=5 q2.test A
ms=$(stb_dig_msec "$T/after.dig")
stb_log "first query after the switch: $(stb_dig_status "$T/after.dig") in ${ms:-?} ms"
stb_expect_eq "after the switch: q2.test answered" "198.51.100.2" "$(stb_dig_rdata "$T/after.dig")"
stb_check "after the switch: answered in under 1000 ms (${ms:-?} ms; the dead-connection path takes > 2000)" \
    test "${ms:-9999}" -lt 1000
stb_check "after the switch: the upstream saw the query from the wired address" \
    grep -q '10\.2\.0\.1.*q2\.test\. A IN' "$T/unbound.log"
stb_check "stubborn logged the network change" grep -q 'network changed' "$T/stubborn.log"
stb_check "stubborn raced for the new network at once" \
    grep -q 'reason=network change.*pre-warm race: connection ready\|pre-warm race: connection ready.*reason=network change' "$T/stubborn.log"
if ((STB_FAILED > 0)); then
    echo "---- stubborn's log ----"
    tail -n 40 "$T/stubborn.log"
fi
stb_stop_stubborn "after the switch"
stb_summary "$NAME"
