#!/usr/bin/env python3
"""mitm_proxy.py - a man in the middle for tests/cli_client_retry.sh: a TCP
proxy on 127.0.0.1 in front of a fedloha-server that tampers with the first
connections' handshakes, then forwards bytes unchanged.

usage: mitm_proxy.py PORTFILE SERVER_PORT MODE... (each MODE is used for one
connection, in order; later connections pass): flip (one byte of the
server's signature in handshake message 2 flipped), key=fl1:... (that
public key instead of the server's in message 2), error (a plaintext Error frame, code AUTH, instead of
message 2), garbage (bytes that are no handshake message). Writes the
listening port to PORTFILE and exits by itself after 60 s.
"""
import base64
import os
import socket
import struct
import sys
import threading
import time

MSG1 = 4 + 70  # length prefix + client hello
MSG2 = 4 + 162  # length prefix + server hello
KEY_AT = 4 + 2 + 32 + 32  # the server's Ed25519 key inside message 2
SIG_AT = KEY_AT + 32 + 7  # a byte of its signature


def recv_exact(s, n):
    b = b""
    while len(b) < n:
        d = s.recv(n - len(b))
        if not d:
            raise ConnectionError("closed")
        b += d
    return b


def error_frame(code, msg):
    m = msg.encode()
    inner = bytes([0x08, code, 0x12, len(m)]) + m
    outer = bytes([0x4A, len(inner)]) + inner
    return struct.pack(">I", len(outer)) + outer


def pump(a, b):
    try:
        while True:
            d = a.recv(65536)
            if not d:
                break
            b.sendall(d)
    except OSError:
        pass
    for s in (a, b):
        try:
            s.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass


def handle(cli, server_port, mode):
    srv = socket.create_connection(("127.0.0.1", server_port))
    try:
        if mode == "pass":
            threading.Thread(target=pump, args=(srv, cli), daemon=True).start()
            pump(cli, srv)
            return
        m1 = recv_exact(cli, MSG1)
        if mode == "error":
            cli.sendall(error_frame(10, "this server requires the fedloha secure channel"))
        elif mode == "garbage":
            cli.sendall(b"HTTP/1.1 400 Bad Request\r\n\r\n")
        else:
            srv.sendall(m1)
            m2 = bytearray(recv_exact(srv, MSG2))
            if mode == "flip":
                m2[SIG_AT] ^= 0x01
            else:  # key=fl1:<43 characters of unpadded base64url>
                key = base64.urlsafe_b64decode(mode.split("fl1:", 1)[1] + "=")
                m2[KEY_AT:KEY_AT + 32] = key
            cli.sendall(bytes(m2))
        cli.settimeout(5)
        try:
            while cli.recv(4096):  # until the client gives up on us
                pass
        except OSError:
            pass
    finally:
        cli.close()
        srv.close()


def main():
    portfile, server_port, modes = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
    ls = socket.socket()
    ls.bind(("127.0.0.1", 0))
    ls.listen(16)
    ls.settimeout(1)
    with open(portfile + ".tmp", "w") as f:
        f.write(str(ls.getsockname()[1]))
    os.rename(portfile + ".tmp", portfile)
    end = time.time() + 60
    n = 0
    while time.time() < end:
        try:
            cli, _ = ls.accept()
        except socket.timeout:
            continue
        mode = modes[n] if n < len(modes) else "pass"
        n += 1
        print(f"connection {n}: {mode}", flush=True)
        threading.Thread(target=handle, args=(cli, server_port, mode), daemon=True).start()


if __name__ == "__main__":
    main()
