"""Bounded network access around the libraries' own downloads.

robustbench's Google Drive download (gdown, on requests) and torch.hub's download set no timeout, so against a
server or proxy that accepts the connection and never answers they hang forever. A bounded probe of the server comes
first, and sockets opened without a timeout get one for the duration of the download.
"""

from __future__ import annotations

import contextlib
import logging
import socket
from collections.abc import Iterator

import requests

log = logging.getLogger(__name__)

PROBE_TIMEOUT_S = 3.0
SOCKET_TIMEOUT_S = 10.0


def reachable(url: str, timeout_s: float = PROBE_TIMEOUT_S) -> bool:
    """Whether `url`'s server sends any HTTP answer (even an error status) within `timeout_s` per step.

    Uses requests, so the proxy environment variables apply as they do to the libraries' own downloads.
    """
    try:
        requests.head(url, timeout=(timeout_s, timeout_s), allow_redirects=False)
    except requests.RequestException as error:
        log.info("%s is not reachable: %s", url, error)
        return False
    return True


@contextlib.contextmanager
def socket_timeout(timeout_s: float = SOCKET_TIMEOUT_S) -> Iterator[None]:
    """Sockets created without a timeout (urllib, so torchvision and torch.hub) give up after `timeout_s` of silence,
    should a server that answered the probe stall later; requests ignores this default, hence the probe."""
    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(timeout_s)
    try:
        yield
    finally:
        socket.setdefaulttimeout(previous)
