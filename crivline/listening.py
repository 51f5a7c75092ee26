"""Why a server part could not open its listening socket, in words that name the cause.

``CRIVLINE_HOST`` that does not resolve fails inside ``getaddrinfo`` with a negative
errno (``os.strerror`` has no text for it), which used to read as a port problem; a
port in use or a privileged port is the port variable's fault. Pure: it only words.
"""

from __future__ import annotations

import os
import socket


def listen_failure(host: str, port: int, port_variable: str, exc: OSError) -> str:
    """One line for ``exc``, raised while binding ``host:port``."""
    if isinstance(exc, socket.gaierror):
        return (
            f"cannot listen on {host}:{port}: the host {host!r} (CRIVLINE_HOST) does not "
            f"resolve to an address of this machine ({exc.strerror or exc})"
        )
    # The event loop's strerror repeats the address; the errno's own text is the cause.
    reason = os.strerror(exc.errno) if exc.errno and exc.errno > 0 else exc.strerror or str(exc)
    return f"cannot listen on {host}:{port} ({port_variable}): {reason}"
