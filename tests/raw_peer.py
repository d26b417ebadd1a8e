#!/usr/bin/env python3
"""raw_peer.py - plain TCP peers for tests/cli_transport_limits.sh, against a
fedloha-server on 127.0.0.1 (bounded in count and time).

  raw_peer.py conns PORT N   opens N connections (each must stay open), then
                             one more (the server must close it at once);
                             closes one and opens another (it must stay open)
  raw_peer.py stall PORT N   sends a plaintext Hello (client id raw-0) and N
                             BaseRequests (each makes the server queue its
                             whole loha base) with a 4 KiB receive buffer,
                             reads nothing, and checks that the server
                             closes the connection (over its output cap)
  raw_peer.py stuck PORT N   the same requests, then reads nothing for 12 s
                             (more than the server's --write-timeout), then
                             reads: the stream must end within 10 s (the
                             server cut the peer that stopped reading)
Exit 0 when the server behaved, 1 with a reason on stderr otherwise.
"""
import socket
import struct
import sys
import time


def is_closed(s, wait):
    """True when the server closed s within wait seconds."""
    s.settimeout(wait)
    try:
        while True:
            d = s.recv(65536)
            if not d:
                return True
    except socket.timeout:
        return False
    except OSError:
        return True


def connect(port, rcvbuf=0):
    s = socket.socket()
    if rcvbuf:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    s.connect(("127.0.0.1", port))
    return s


def conns(port, n):
    held = [connect(port) for _ in range(n)]
    time.sleep(0.3)
    for i, s in enumerate(held):
        if is_closed(s, 0.05):
            sys.exit(f"connection {i + 1} of {n} was closed")
    extra = connect(port)
    if not is_closed(extra, 2):
        sys.exit(f"connection {n + 1} was not closed at once")
    held.pop().close()
    time.sleep(0.3)
    again = connect(port)
    if is_closed(again, 0.5):
        sys.exit("after one closed, a new connection was still refused")
    print(f"{n} connections held, connection {n + 1} closed at once, a new one admitted after one closed")


def frame(env):
    return struct.pack(">I", len(env)) + env


def base_requests(n):
    """A plaintext Hello (client id raw-0) and n BaseRequests."""
    cid = b"raw-0"
    hello = bytes([0x08, 0x01, 0x12, len(cid)]) + cid + bytes([0x18, 0x64])
    data = frame(bytes([0x0A, len(hello)]) + hello)
    return data + frame(bytes([0x5A, 0x00])) * n  # BaseRequest without a sha256: the base


def stall(port, n):
    s = connect(port, rcvbuf=4096)
    s.sendall(base_requests(n))
    time.sleep(1)  # read nothing: the server's output queues up
    # the kernel's buffers hold a little; the server must have cut us
    if not is_closed(s, 5):
        sys.exit("the server kept a peer that reads nothing")
    print(f"the server cut the peer that asked for the base {n} times and read nothing")


def stuck(port, n):
    s = connect(port, rcvbuf=4096)
    s.sendall(base_requests(n))
    time.sleep(12)  # read nothing: the server must give up on us
    s.settimeout(10)
    got = 0
    try:
        while True:
            d = s.recv(65536)
            if not d:
                break
            got += len(d)
    except socket.timeout:
        sys.exit(f"the server kept a peer that read nothing for 12 s ({got} bytes then)")
    except OSError:
        pass
    print(f"the server cut the peer that asked for the base {n} times and stopped reading "
          f"({got} bytes were on the way)")


if __name__ == "__main__":
    cmd, port, arg = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    if cmd == "conns":
        conns(port, int(arg))
    elif cmd == "stall":
        stall(port, int(arg))
    elif cmd == "stuck":
        stuck(port, int(arg))
    else:
        sys.exit("usage: raw_peer.py conns PORT N | stall PORT N | stuck PORT N")
