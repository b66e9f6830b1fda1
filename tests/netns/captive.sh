#!/usr/bin/env bash
# tests/netns/captive.sh — the captive-portal policy (issue 15 §3) on a hotel network that
# blocks everything until the user logs in. Root only; run by .ci/run through run-all.sh,
# or by hand: `sudo bash tests/netns/captive.sh`.
#
# One private namespace: unbound serves DNS over TLS on 127.0.0.2:853 (the default
# upstream, strict and pinned); a second unbound on 127.0.0.3:53 plays the network's
# DHCP-given resolver, answering every name with the portal's address 192.0.2.99; a
# resolv.conf lists 127.0.0.3, and stubborn's `resolv_conf` upstream for it is `mode =
# "plain"` with `captive_portal = true`. nftables drops every packet to port 853 (the
# portal blocks it) and counts every packet to port 53.
#
# Checks, while 853 is blocked: a connectivity-check name (detectportal.firefox.com)
# resolves to the portal; another name (q1.test) is not answered with the portal's
# address and no packet for it leaves to port 53 (nft counter unchanged; the portal's log
# never names it). Then 853 opens (the user logged in): within 5 s a query is answered by
# the default upstream again, and a check name no longer goes to port 53 (counter
# unchanged) nor gets the portal's address.
#
# Environment: STUBBORN_BIN (default target/release/stubborn), CI (true: never skip),
# STB_KEEP_TMP=1. Closing line: "captive: N passed, M failed"; exit 77 when it cannot run.

. "$(dirname "$0")/lib.sh"
NAME=captive
STB_NAME=$NAME

stb_preflight openssl unbound unbound-checkconf dig nft ss base64 awk
NS=$(stb_ns_name captive)
stb_ns_create "$NS"
T=$STB_TMP
stb_log "namespace $NS, temp dir $T"

stb_make_pki "$T" || stb_fatal "$NAME" "openssl could not make the certificates and pins" "$T/openssl.log"
stb_unbound_upstream_conf "$T/default.conf" "$T" "127.0.0.2@853"
stb_start_unbound "$NS" "$T/default.conf" "$T/default.log" "127.0.0.2@853"
# The portal's resolver: every name is the portal.
stb_unbound_upstream_conf "$T/portal.conf" "$T" "127.0.0.3@53"
sed -i 's|^remote-control:|server:\n    local-zone: "." redirect\n    local-data: ". 60 IN A 192.0.2.99"\n&|' "$T/portal.conf"
sed -i 's|^    local-zone: "test." static$||; s|^    local-data: "[a-z0-9]*\.test\. .*$||; s|^    local-data: .txt\.test\..*$||' "$T/portal.conf"
stb_start_unbound "$NS" "$T/portal.conf" "$T/portal.log" "127.0.0.3@53"
stb_dig "$NS" "$T/portal-check.dig" 127.0.0.3 +tries=1 +time=2 anything.example A
stb_expect_eq "the portal's resolver answers every name with the portal" "192.0.2.99" "$(stb_dig_rdata "$T/portal-check.dig")"

printf 'nameserver 127.0.0.3\n' >"$T/resolv.conf"
cat >"$T/stubborn.toml" <<EOF
[server]
listen = ["127.0.0.1:53"]

[[upstream]]
name = "default"
addresses = ["127.0.0.2"]
tls_name = "dns.test"
pins = ["key-fp:SHA256:$STB_PIN"]

[[upstream]]
name = "hotel"
resolv_conf = "$T/resolv.conf"
mode = "plain"
captive_portal = true
EOF

# 853 blocked (a table of its own, deleted when the user "logs in"); port 53 counted.
stb_nft_table "$NS" stb_block "tcp dport 853 drop"
stb_nft_table "$NS" stb_count "udp dport 53 ip daddr 127.0.0.3 counter" "tcp dport 53 ip daddr 127.0.0.3 counter"
to53() { echo $(($(stb_nft_packets "$NS" stb_count "udp dport 53") + $(stb_nft_packets "$NS" stb_count "tcp dport 53"))); }

RUST_LOG=info,hickory_proto=error stb_start_stubborn "$NS" "$T/stubborn.toml" "$T/stubborn.log"

# --- behind the portal -----------------------------------------------------------------------
stb_dig "$NS" "$T/check1.dig" 127.0.0.1 +tries=1 +time=5 detectportal.firefox.com A
stb_expect_eq "blocked: the connectivity check resolves to the portal" "192.0.2.99" "$(stb_dig_rdata "$T/check1.dig")"
before=$(to53)
stb_dig "$NS" "$T/other.dig" 127.0.0.1 +tries=1 +time=6 q1.test A
stb_log "blocked: q1.test got $(stb_dig_status "$T/other.dig")"
stb_check "blocked: another name is not answered with the portal's address" \
    test "$(stb_dig_rdata "$T/other.dig")" != "192.0.2.99"
stb_expect_eq "blocked: no packet to port 53 for another name (nft counter)" "$before" "$(to53)"
stb_check "blocked: the portal's resolver never saw q1.test" bash -c "! grep -q 'q1\.test\.' '$T/portal.log'"

# --- the user logs in ------------------------------------------------------------------------
stb_nft_del "$NS" stb_block
opened=$(date +%s%N)
answered=""
for ((i = 2; i < 40; i++)); do
    stb_dig "$NS" "$T/after$i.dig" 127.0.0.1 +tries=1 +time=2 "q$i.test" A
    if [[ $(stb_dig_rdata "$T/after$i.dig") == "198.51.100.$i" ]]; then
        answered=$((($(date +%s%N) - opened) / 1000000))
        break
    fi
    sleep 0.25
done
stb_log "853 open: the default upstream answered after ${answered:-never} ms"
stb_check "853 open: the default upstream serves again within 5 s (${answered:-never} ms)" \
    test "${answered:-99999}" -le 5000
before=$(to53)
stb_dig "$NS" "$T/check2.dig" 127.0.0.1 +tries=1 +time=5 detectportal.firefox.com A
stb_check "853 open: the check is not answered with the portal's address" \
    test "$(stb_dig_rdata "$T/check2.dig")" != "192.0.2.99"
stb_expect_eq "853 open: nothing more to port 53 (nft counter)" "$before" "$(to53)"
if ((STB_FAILED > 0)); then
    echo "---- stubborn's log ----"
    tail -n 40 "$T/stubborn.log"
fi
stb_stop_stubborn "after the portal"
stb_summary "$NAME"
