"""TCP ports on 127.0.0.1: pick free ones, probe whether one accepts or could be bound."""

from __future__ import annotations

import contextlib
import socket

from cli.kafka.config import HOST


def free_port() -> int:
    """An unused TCP port on 127.0.0.1 (may be taken by someone else before you bind it)."""
    return free_ports(1)[0]


def free_ports(count: int) -> list[int]:
    """`count` different unused TCP ports on 127.0.0.1. Held open together while they are
    picked: one `free_port()` after another may return the same port twice."""
    with contextlib.ExitStack() as held:
        ports: list[int] = []
        for _ in range(count):
            sock = held.enter_context(socket.socket(socket.AF_INET, socket.SOCK_STREAM))
            sock.bind((HOST, 0))
            ports.append(sock.getsockname()[1])
        return ports


def _port_open(port: int, timeout: float = 0.5) -> bool:
    """Whether something accepts TCP connections on 127.0.0.1:port."""
    try:
        with socket.create_connection((HOST, port), timeout=timeout):
            return True
    except OSError:
        return False


def _port_bindable(port: int) -> bool:
    """Whether a listener could bind 127.0.0.1:port now (SO_REUSEADDR, as the JVM does)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((HOST, port))
        except OSError:
            return False
        return True
