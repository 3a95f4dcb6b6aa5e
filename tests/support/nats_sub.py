#!/usr/bin/env python3
"""A NATS subscriber this project did not write: the NATS text protocol over a raw socket.

    nats_sub.py HOST PORT SUBJECT

Prints "READY" once the server has the subscription, then one line "SUBJECT PAYLOAD" per
message. Standard library only; answers the server's PINGs; no auth, no TLS.
"""
import socket
import sys


def main() -> None:
    host, port, subject = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    sock = socket.create_connection((host, port), timeout=30)
    sock.settimeout(None)
    stream = sock.makefile("rb")
    info = stream.readline()
    if not info.startswith(b"INFO "):
        sys.exit(f"expected INFO, got {info!r}")
    sock.sendall(b'CONNECT {"verbose":false,"pedantic":false,"name":"python-sub"}\r\n')
    sock.sendall(f"SUB {subject} 1\r\nPING\r\n".encode())
    while True:
        line = stream.readline()
        if not line:
            return
        if line.startswith(b"PONG"):
            print("READY", flush=True)
        elif line.startswith(b"PING"):
            sock.sendall(b"PONG\r\n")
        elif line.startswith(b"MSG "):
            # MSG <subject> <sid> [reply-to] <#bytes>
            parts = line.split()
            size = int(parts[-1])
            payload = stream.read(size + 2)[:size]
            print(parts[1].decode(), payload.decode(), flush=True)
        elif line.startswith(b"-ERR"):
            sys.exit(line.decode().strip())


if __name__ == "__main__":
    main()
