"""Loopback ports for the coordinators of the tests' multi-process jobs."""

import socket

_HELD: list[socket.socket] = []  # open until this test process exits


def free_port() -> int:
    """A loopback port that nothing but a job's coordinator can take while this process lives.

    Binding port 0 and closing the socket before the coordinator binds the port would leave a gap
    in which another test's pick, or an outgoing connection's ephemeral port, could take it. Here
    the socket stays bound, with SO_REUSEPORT and never listening: the coordination service binds
    beside it (gRPC sets SO_REUSEPORT too) and receives every connection, any other bind of the
    port is refused, and the kernel hands it out to no one else (a bind to port 0 skips ports in
    use), so each call gives a port of its own.
    """
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind(("127.0.0.1", 0))
    _HELD.append(sock)
    return sock.getsockname()[1]
