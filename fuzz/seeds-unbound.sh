#!/usr/bin/env bash
# fuzz/seeds-unbound.sh — adds seeds captured from a real unbound to the fuzz corpus
# (docs/fuzzing.md): answers (UDP and TCP, with and without EDNS/DO) to
# fuzz/corpus/upstream_answer/ and as DoT-framed streams to fuzz/corpus/dot_framing/,
# and the queries dig really sends to fuzz/corpus/client_query/.
#
# unbound listens on 127.0.0.1:5353 and serves local data only: the root is a static
# local zone, so it never recurses, and do-not-query-address covers every address.
# Nothing leaves loopback. Needs unbound, dig and python3.
set -euo pipefail
cd "$(dirname "$0")/.."
dir=$(mktemp -d)
trap 'kill "${pid:-0}" 2>/dev/null || true; rm -rf "$dir"' EXIT

cat >"$dir/unbound.conf" <<EOF
server:
    interface: 127.0.0.1
    port: 5353
    do-daemonize: no
    username: ""
    chroot: ""
    directory: "$dir"
    pidfile: ""
    use-syslog: no
    logfile: "$dir/unbound.log"
    access-control: 127.0.0.0/8 allow
    module-config: "iterator"
    do-not-query-address: 0.0.0.0/0
    do-not-query-address: ::/0
    local-zone: "." static
    local-data: ". 3600 IN SOA a.root.test. nstld.test. 1 1800 900 604800 86400"
    local-zone: "test." static
    local-data: "test. 3600 IN SOA ns.test. hostmaster.test. 7 3600 600 86400 60"
    local-data: "test. 3600 IN NS ns.test."
    local-data: "ns.test. 3600 IN A 192.0.2.53"
    local-data: "a.test. 300 IN A 192.0.2.1"
    local-data: "a.test. 300 IN A 192.0.2.2"
    local-data: "a.test. 300 IN AAAA 2001:db8::1"
    local-data: "www.test. 120 IN CNAME a.test."
    local-data: "mx.test. 600 IN MX 10 a.test."
    local-data: "mx.test. 600 IN MX 20 www.test."
    local-data: "txt.test. 60 IN TXT \"hello\" \"world\""
    local-data: "_dns._tcp.test. 300 IN SRV 0 5 853 a.test."
    local-data: "caa.test. 300 IN CAA 0 issue \"ca.test\""
    local-data: "svc.test. 300 IN SVCB 1 a.test. alpn=dot port=853"
    local-data: "sig.test. 300 IN A 192.0.2.9"
    local-data: "sig.test. 300 IN RRSIG A 13 2 300 20300101000000 20200101000000 12345 test. dGhpcyBpcyBub3QgYSByZWFsIHNpZ25hdHVyZSBidXQgaXQgaXMgYmFzZTY0"
    local-data: "key.test. 300 IN DNSKEY 257 3 13 dGhpcyBpcyBub3QgYSByZWFsIGtleSBidXQgaXQgaXMgYmFzZTY0IGFsbCB0aGUgc2FtZQ=="
    local-data: "1.2.0.192.in-addr.arpa. 300 IN PTR a.test."
    local-zone: "2.0.192.in-addr.arpa." static
EOF
unbound -c "$dir/unbound.conf" &
pid=$!
for _ in $(seq 50); do
    dig +short +time=1 +tries=1 @127.0.0.1 -p 5353 a.test A >/dev/null 2>&1 && break
    sleep 0.1
done

python3 - "$dir" <<'EOF'
import os, random, socket, struct, subprocess, sys, threading

root = "fuzz/corpus"
def save(target, name, data):
    os.makedirs(f"{root}/{target}", exist_ok=True)
    with open(f"{root}/{target}/{name}", "wb") as f:
        f.write(data)

def query(qid, name, qtype, edns, do):
    flags = 0x0100  # RD
    wire = struct.pack(">HHHHHH", qid, flags, 1, 0, 0, 1 if edns else 0)
    for label in name.rstrip(".").split("."):
        wire += bytes([len(label)]) + label.encode()
    wire += b"\0" + struct.pack(">HH", qtype, 1)
    if edns:
        wire += b"\0" + struct.pack(">HHBBHH", 41, 1232, 0, 0, 0x8000 if do else 0, 0)
    return wire

def ask_udp(q):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.settimeout(2)
    s.sendto(q, ("127.0.0.1", 5353))
    data = s.recv(65535)
    s.close()
    return data

def ask_tcp(q):
    s = socket.create_connection(("127.0.0.1", 5353), timeout=2)
    s.sendall(struct.pack(">H", len(q)) + q)
    head = s.recv(2, socket.MSG_WAITALL)
    (n,) = struct.unpack(">H", head)
    data = s.recv(n, socket.MSG_WAITALL)
    s.close()
    return data

rng = random.Random(14)
def mixed(name):
    return "".join(c.upper() if rng.random() < 0.5 else c for c in name)

names = ["a.test", "www.test", "mx.test", "txt.test", "_dns._tcp.test", "caa.test", "svc.test",
         "sig.test", "key.test", "1.2.0.192.in-addr.arpa", "nx.test", "test", "nothing.example"]
types = {"a.test": [1, 28, 255, 15], "www.test": [1], "mx.test": [15], "txt.test": [16],
         "_dns._tcp.test": [33], "caa.test": [257], "svc.test": [64], "sig.test": [1, 46],
         "key.test": [48], "1.2.0.192.in-addr.arpa": [12], "nx.test": [1], "test": [6, 2],
         "nothing.example": [1]}
answers = []
qid = 100
for name in names:
    for qtype in types[name]:
        for edns, do, how in [(True, True, "udp"), (False, False, "udp"), (True, False, "tcp")]:
            qid += 1
            q = query(qid, mixed(name), qtype, edns, do)
            a = ask_udp(q) if how == "udp" else ask_tcp(q)
            tag = f"unbound-{name}-{qtype}-{'do' if do else 'edns' if edns else 'plain'}-{how}"
            save("upstream_answer", tag, a)
            answers.append(a)
for i in range(0, len(answers) - 2, 5):
    stream = bytes([rng.randrange(256)])
    for a in answers[i:i + 3]:
        stream += struct.pack(">H", len(a)) + a
    save("dot_framing", f"unbound-stream-{i}", stream)

# The queries dig really sends (cookies, EDNS options, flags): catch them on a socket
# of our own, answer nothing.
srv = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
srv.bind(("127.0.0.1", 0))
port = srv.getsockname()[1]
srv.settimeout(3)
args = [["a.test"], ["+dnssec", "txt.test", "TXT"], ["+noedns", "mx.test", "MX"],
        ["+nsid", "+subnet=192.0.2.0/24", "A.Test"], ["+cd", "+adflag", "sig.test"],
        ["+bufsize=512", "+nocookie", "svc.test", "SVCB"], ["-x", "192.0.2.1"]]
for i, a in enumerate(args):
    p = subprocess.Popen(["dig", "@127.0.0.1", "-p", str(port), "+time=1", "+tries=1"] + a,
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    data, _ = srv.recvfrom(65535)
    save("client_query", f"dig-{i}", data)
    p.wait()
EOF
echo "seeds from unbound: $(ls fuzz/corpus/upstream_answer | grep -c unbound) answers," \
    "$(ls fuzz/corpus/dot_framing | grep -c unbound) streams, $(ls fuzz/corpus/client_query | grep -c dig) dig queries"
