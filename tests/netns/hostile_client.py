#!/usr/bin/env python3
"""tests/netns/hostile_client.py — a hostile local DNS client for tests/netns/flood.sh.

Run it only inside a network namespace made by the test (it sends to the address given,
which the test sets to 127.0.0.1). Every loop is bounded by a count and by a deadline.
Standard library only.

  hostile_client.py udp TARGET COUNT [--procs P] [--rate R] [--seed S] [--deadline SECONDS]
      COUNT datagrams, random and mutated real queries, from P processes, each rotating
      over 16 sockets bound to 127.0.0.10..25 (answers are never read), at most R
      datagrams/s in all (each process R/P, in bursts of at most 64; 0: as fast as the
      machine goes). Prints one line: "udp: sent N datagrams in T s (R/s, cap C), P processes,
      E send errors".
  hostile_client.py tcp TARGET STREAMS [--limit L] [--rate R] [--seed S] [--deadline SECONDS]
      STREAMS garbage TCP connections, 100 open at a time, at most R streams/s (0: no
      cap): bad lengths, partial frames, zero-length frames, random bytes, framed mutated
      queries, pipelined queries whose answers are never read (tiny receive buffer),
      closed with FIN or RST. Then a connection flood: 2×L connections held open at once
      (L = the server's max_tcp_clients), one query on each, counting the answers and
      the connections the server closed. Prints "tcp: ..." lines with the counts per kind.
"""

import argparse
import multiprocessing
import random
import socket
import struct
import sys
import time

QTYPES = [1, 28, 16, 15, 2, 6, 12, 33, 255, 252, 251, 41, 65, 0, 65535]
NAMES = ["a.test", "aaaa.test", "txt.test", "q1.test", "q2.test", "nope.test", "x.flood.test",
         "resolver.arpa", "localhost", ".", "example", "a" * 63 + ".test"]


def encode_name(name):
    if name in (".", ""):
        return b"\x00"
    out = b""
    for label in name.strip(".").split("."):
        raw = label.encode()
        out += bytes([len(raw)]) + raw
    return out + b"\x00"


def real_query(rng):
    """A well-formed query, sometimes with EDNS (odd versions, flags and options)."""
    qid = rng.getrandbits(16)
    flags = 0x0100 if rng.random() < 0.8 else rng.choice([0, 0x0110, 0x0120, 0x0800, 0x2000, 0x2800, 0x1000])
    name = rng.choice(NAMES)
    if rng.random() < 0.3:
        name = "r%d.flood.test" % rng.getrandbits(24)
    if rng.random() < 0.1:
        name = "".join(rng.choice("aAbB-_.0\\") for _ in range(rng.randint(1, 40))) or "a"
        name = ".".join(p[:63] or "x" for p in name.split("."))
    try:
        qname = encode_name(name)
    except ValueError:
        qname = b"\x00"
    question = qname + struct.pack("!HH", rng.choice(QTYPES), rng.choice([1, 1, 1, 3, 254, 255, 4]))
    ar = b""
    arcount = 0
    if rng.random() < 0.6:
        opts = b""
        for _ in range(rng.randint(0, 3)):
            code = rng.choice([8, 10, 11, 12, 15, 3, 5, 65001, 0])
            data = rng.randbytes(rng.choice([0, 2, 4, 8, 16, 40]))
            opts += struct.pack("!HH", code, len(data)) + data
        version = 0 if rng.random() < 0.8 else rng.randint(1, 255)
        ednsflags = rng.choice([0, 0x8000, 0xFFFF])
        ar = b"\x00" + struct.pack("!HHBBHH", 41, rng.choice([512, 1232, 4096, 0, 65535]), 0, version,
                                   ednsflags, len(opts)) + opts
        arcount = 1
        if rng.random() < 0.05:  # two OPT records (FORMERR, RFC 6891 §6.1.1)
            ar += ar
            arcount = 2
    return struct.pack("!HHHHHH", qid, flags, 1, 0, 0, arcount) + question + ar


def mutate(rng, base):
    """One hostile variant of a query: what a buggy or malicious client sends."""
    kind = rng.randrange(16)
    b = bytearray(base)
    if kind == 0:  # random bytes of a random length
        return rng.randbytes(rng.choice([0, 1, 2, 11, 12, 13, rng.randint(0, 600), rng.randint(0, 4096)]))
    if kind == 1:  # bit flips
        for _ in range(rng.randint(1, 8)):
            i = rng.randrange(len(b) * 8)
            b[i // 8] ^= 1 << (i % 8)
    elif kind == 2:  # random bytes overwritten
        for _ in range(rng.randint(1, 6)):
            b[rng.randrange(len(b))] = rng.getrandbits(8)
    elif kind == 3:  # truncated
        return bytes(b[: rng.randrange(len(b))])
    elif kind == 4:  # trailing garbage
        return bytes(b) + rng.randbytes(rng.randint(1, 300))
    elif kind == 5:  # absurd section counts
        struct.pack_into("!HHHH", b, 4, *(rng.choice([0, 1, 2, 255, 65535]) for _ in range(4)))
    elif kind == 6:  # QR set: an answer sent to a server (must be ignored)
        b[2] |= 0x80
    elif kind == 7:  # a compression pointer loop as the question name
        return bytes(b[:12]) + b"\xc0\x0c\x00\x01\x00\x01"
    elif kind == 8:  # a label longer than what follows
        return bytes(b[:12]) + b"\x3fabc"
    elif kind == 9:  # a chunk duplicated
        i = rng.randrange(len(b))
        j = min(len(b), i + rng.randint(1, 32))
        return bytes(b[:j] + b[i:j] + b[j:])
    elif kind == 10:  # two queries spliced
        other = real_query(rng)
        return bytes(b[: rng.randrange(len(b))] + other[rng.randrange(len(other)):])
    elif kind == 11:  # header only, or less
        return bytes(b[: rng.choice([0, 4, 11, 12])])
    elif kind == 12:  # opcode and flag bits at random
        b[2] = rng.getrandbits(8) & 0x7F
        b[3] = rng.getrandbits(8)
    elif kind == 13:  # a name of 128 one-octet labels (over 255 octets)
        return bytes(b[:12]) + b"\x01a" * 128 + b"\x00\x00\x01\x00\x01"
    elif kind == 14:  # pointer forward, out of the message
        return bytes(b[:12]) + b"\xc3\xff\x00\x01\x00\x01"
    else:  # the query as is (a real query, often for a fresh name)
        pass
    return bytes(b)


def datagram(rng):
    q = real_query(rng)
    return q if rng.random() < 0.1 else mutate(rng, q)


class Pacer:
    """Holds a loop to RATE items per second on average: wait(n) sleeps until the n items
    about to go out are due (item k is due k/RATE s after the start). RATE 0: no wait."""

    def __init__(self, rate):
        self.rate = rate
        self.t0 = time.monotonic()
        self.done = 0

    def wait(self, n, end):
        if self.rate > 0:
            delay = self.t0 + self.done / self.rate - time.monotonic()
            if delay > 0:
                time.sleep(min(delay, max(0.0, end - time.monotonic())))
        self.done += n


BURST = 64  # datagrams sent back to back between two pacing waits


def udp_worker(args):
    host, port, count, seed, deadline, rate = args
    rng = random.Random(seed)
    socks = []
    for k in range(16):
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        s.bind(("127.0.0.%d" % (10 + k), 0))
        socks.append(s)
    pool = [datagram(rng) for _ in range(4096)]
    addr = (host, port)
    sent = errors = 0
    end = time.monotonic() + deadline
    pacer = Pacer(rate)
    while sent < count and time.monotonic() < end:
        # Refresh an eighth of the pool each round, so the mix keeps changing.
        for _ in range(512):
            pool[rng.randrange(4096)] = datagram(rng)
        n = min(4096, count - sent)
        s = socks[sent // 4096 % 16]
        i = 0
        while i < n and time.monotonic() < end:
            burst = min(BURST, n - i)
            pacer.wait(burst, end)
            for j in range(i, i + burst):
                try:
                    s.sendto(pool[j], addr)
                except OSError:
                    errors += 1
            i += burst
        sent += i
    return sent, errors


def cmd_udp(a):
    host, port = a.target.rsplit(":", 1)
    per = [a.count // a.procs + (1 if i < a.count % a.procs else 0) for i in range(a.procs)]
    t0 = time.monotonic()
    with multiprocessing.Pool(a.procs) as p:
        res = p.map(udp_worker, [(host, int(port), n, a.seed * 1000 + i, a.deadline, a.rate / a.procs)
                                 for i, n in enumerate(per)])
    dt = time.monotonic() - t0
    sent = sum(r[0] for r in res)
    errors = sum(r[1] for r in res)
    print("udp: sent %d datagrams in %.1f s (%.0f/s, cap %s), %d processes, %d send errors"
          % (sent, dt, sent / dt if dt else 0, "%g/s" % a.rate if a.rate > 0 else "none", a.procs, errors))
    return 0 if sent == a.count else 1


def frame(msg):
    return struct.pack("!H", len(msg) & 0xFFFF) + msg


def stream_payload(rng, kind):
    """(bytes to send, receive buffer size or None)."""
    if kind == "badlen":  # a length far beyond what follows
        return struct.pack("!H", rng.choice([0xFFFF, 0x8000, 4097, 1000])) + rng.randbytes(rng.randint(0, 100)), None
    if kind == "shortlen":  # frames shorter than a DNS header
        return b"".join(frame(rng.randbytes(rng.randint(1, 11))) for _ in range(rng.randint(1, 5))), None
    if kind == "partial":  # a frame cut in the middle
        f = frame(real_query(rng))
        return f[: rng.randint(1, len(f) - 1)], None
    if kind == "zero":  # zero-length frames, then maybe a query
        return b"\x00\x00" * rng.randint(1, 50) + (frame(real_query(rng)) if rng.random() < 0.5 else b""), None
    if kind == "garbage":
        return rng.randbytes(rng.randint(1, 2000)), None
    if kind == "mutated":  # framed hostile messages, pipelined
        return b"".join(frame(datagram(rng)) for _ in range(rng.randint(1, 20))), None
    if kind == "noread":  # pipelined cache hits whose answers are never read
        q = b"".join(frame(struct.pack("!HHHHHH", i, 0x0100, 1, 0, 0, 0) + encode_name("a.test") + b"\x00\x01\x00\x01")
                     for i in range(3000))
        return q, 2048
    raise ValueError(kind)


KINDS = ["badlen", "shortlen", "partial", "zero", "garbage", "mutated", "noread"]


def connect(host, port, rcvbuf=None):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    if rcvbuf:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    s.settimeout(2)
    s.connect((host, port))
    s.setblocking(False)
    return s


def close(rng, s, stats):
    if rng.random() < 0.5:  # RST instead of FIN
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        stats["rst"] += 1
    s.close()


def cmd_tcp(a):
    host, port = a.target.rsplit(":", 1)
    port = int(port)
    rng = random.Random(a.seed)
    stats = {k: 0 for k in KINDS}
    stats.update(rst=0, connect_failed=0, bytes=0)
    end = time.monotonic() + a.deadline
    t0 = time.monotonic()
    done = 0
    pacer = Pacer(a.rate)
    while done < a.streams and time.monotonic() < end:
        pacer.wait(min(100, a.streams - done), end)
        batch = []
        for _ in range(min(100, a.streams - done)):
            kind = rng.choice(KINDS)
            data, rcvbuf = stream_payload(rng, kind)
            try:
                s = connect(host, port, rcvbuf)
            except OSError:
                stats["connect_failed"] += 1
                continue
            try:
                n = s.send(data)  # what fits; the rest is never sent
                stats["bytes"] += n
            except OSError:
                pass
            stats[kind] += 1
            batch.append(s)
        done += 100
        time.sleep(0.02)  # let the server read (and answer into buffers nobody reads)
        for s in batch:
            close(rng, s, stats)
    dt = time.monotonic() - t0
    total = sum(stats[k] for k in KINDS)
    print("tcp: %d garbage streams in %.1f s (cap %s; %s), %d closed with RST, %d connects failed, %d bytes sent"
          % (total, dt, "%g/s" % a.rate if a.rate > 0 else "none", ", ".join("%s %d" % (k, stats[k]) for k in KINDS),
             stats["rst"], stats["connect_failed"], stats["bytes"]))

    # The connection flood: twice the server's limit, all open at once.
    held = []
    failed = 0
    for _ in range(2 * a.limit):
        if time.monotonic() > end:
            break
        try:
            held.append(connect(host, port))
        except OSError:
            failed += 1
    q = frame(struct.pack("!HHHHHH", 7, 0x0100, 1, 0, 0, 0) + encode_name("a.test") + b"\x00\x01\x00\x01")
    for s in held:
        try:
            s.send(q)
        except OSError:
            pass
    answered = closed = 0
    pending = set(range(len(held)))
    wait_end = min(end, time.monotonic() + a.hold)
    while pending and time.monotonic() < wait_end:
        for i in list(pending):
            try:
                data = held[i].recv(4096)
            except BlockingIOError:
                continue
            except OSError:
                data = b""
            pending.discard(i)
            if data:
                answered += 1
            else:
                closed += 1
        time.sleep(0.05)
    for s in held:
        close(rng, s, stats)
    print("tcp: connection flood: %d connections opened (%d failed), %d answered, %d closed by the server, "
          "%d neither within %.1f s" % (len(held), failed, answered, closed, len(pending), a.hold))
    return 0 if total + stats["connect_failed"] >= a.streams and answered > 0 else 1


def main():
    p = argparse.ArgumentParser()
    sub = p.add_subparsers(dest="cmd", required=True)
    u = sub.add_parser("udp")
    u.add_argument("target")
    u.add_argument("count", type=int)
    u.add_argument("--procs", type=int, default=2)
    u.add_argument("--rate", type=float, default=0, help="datagrams/s in all (0: no cap)")
    u.add_argument("--seed", type=int, default=1)
    u.add_argument("--deadline", type=float, default=300)
    t = sub.add_parser("tcp")
    t.add_argument("target")
    t.add_argument("streams", type=int)
    t.add_argument("--limit", type=int, default=512)
    t.add_argument("--hold", type=float, default=3)
    t.add_argument("--rate", type=float, default=0, help="streams/s (0: no cap)")
    t.add_argument("--seed", type=int, default=1)
    t.add_argument("--deadline", type=float, default=300)
    a = p.parse_args()
    return cmd_udp(a) if a.cmd == "udp" else cmd_tcp(a)


if __name__ == "__main__":
    sys.exit(main())
