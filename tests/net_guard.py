"""Run app.py with every outgoing socket connection recorded (used by test_service.py).

Usage: python tests/net_guard.py LOGFILE app.py ARGS…  — any connect() to an address that is not
loopback (or a Unix socket) is appended to LOGFILE and refused."""

import ipaddress
import runpy
import socket
import sys

LOG = sys.argv[1]
_real_connect = socket.socket.connect
_real_connect_ex = socket.socket.connect_ex


def _loopback(address) -> bool:
    if not isinstance(address, tuple):  # AF_UNIX
        return True
    host = address[0]
    try:
        return ipaddress.ip_address(host.split("%")[0]).is_loopback
    except ValueError:
        return host in ("localhost",)


def _check(sock, address):
    if sock.family in (socket.AF_INET, socket.AF_INET6) and not _loopback(address):
        with open(LOG, "a") as f:
            f.write(f"{address!r}\n")
        raise OSError(f"non-loopback connection refused by the test: {address!r}")


def connect(self, address):
    _check(self, address)
    return _real_connect(self, address)


def connect_ex(self, address):
    _check(self, address)
    return _real_connect_ex(self, address)


socket.socket.connect = connect
socket.socket.connect_ex = connect_ex
sys.argv = sys.argv[2:]
sys.path.insert(0, __import__("os").path.dirname(__import__("os").path.abspath(sys.argv[0])))
runpy.run_path(sys.argv[0], run_name="__main__")
