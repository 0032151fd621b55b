"""Offline, every download gives up within seconds, even against a server that accepts connections and stays silent."""

import http.server
import re
import socket
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from preempt.datasets.cifar10 import DatasetNotFoundError, cifar10
from preempt.models.robustbench import CheckpointNotFoundError, _import_robustbench, load_robustbench_model
from preempt.network import reachable, socket_timeout

PROXY_VARIABLES = ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy")
OTHER_PROXY_VARIABLES = ("ALL_PROXY", "all_proxy", "NO_PROXY", "no_proxy")
LIMIT_S = 8  # the probe's 3 s timeout plus slack; torchvision's own 10 s socket timeout alone exceeds it


@pytest.fixture
def tarpit(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A TCP server on loopback that accepts every connection and never sends a byte, set as the HTTP(S) proxy."""
    server = socket.create_server(("127.0.0.1", 0))
    server.settimeout(0.1)
    stop = threading.Event()
    held = []

    def accept() -> None:
        while not stop.is_set():
            try:
                held.append(server.accept()[0])
            except TimeoutError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{server.getsockname()[1]}"
    for name in PROXY_VARIABLES:
        monkeypatch.setenv(name, url)
    for name in OTHER_PROXY_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    urllib.request.install_opener(None)  # urlopen's default opener keeps the proxies of its first use
    yield url
    urllib.request.install_opener(None)
    stop.set()
    thread.join(timeout=5)
    server.close()
    for connection in held:
        connection.close()
    assert not thread.is_alive()


def _bounded(call: Callable[[], object], limit_s: float = 20) -> tuple[BaseException | None, float]:
    """Run `call` in a daemon thread, so a hang fails the test after `limit_s` instead of stalling the suite."""
    outcome: list = []

    def run() -> None:
        start = time.perf_counter()
        try:
            call()
            outcome.append(None)
        except BaseException as error:
            outcome.append(error)
        outcome.append(time.perf_counter() - start)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(limit_s)
    assert not thread.is_alive(), f"still waiting for the network after {limit_s} s"
    return outcome[0], outcome[1]


def test_probe_gives_up_on_a_silent_server(tarpit: str) -> None:
    answers = []
    error, elapsed = _bounded(lambda: answers.append(reachable("https://example.org/x", timeout_s=1)))
    assert error is None and answers == [False] and elapsed < 4


def test_probe_accepts_any_http_answer(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in PROXY_VARIABLES + OTHER_PROXY_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), http.server.BaseHTTPRequestHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        assert reachable(f"http://127.0.0.1:{server.server_address[1]}/missing.pt")  # 501: an answer all the same
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def test_socket_timeout_bounds_urllib_downloads(tarpit: str) -> None:
    """torch.hub and torchvision download with urllib and no timeout: after a passed probe, a stall must still end."""

    def download() -> None:
        with socket_timeout(1):
            urllib.request.urlopen("https://example.org/weights.pt")

    error, elapsed = _bounded(download)
    assert isinstance(error, OSError) and elapsed < 4


def test_cifar10_download_gives_up_within_seconds(tarpit: str, tmp_path: Path) -> None:
    error, elapsed = _bounded(lambda: cifar10(str(tmp_path), n_samples=10))
    assert isinstance(error, DatasetNotFoundError) and str(tmp_path / "cifar-10-batches-py") in str(error)
    assert elapsed < LIMIT_S


@pytest.mark.parametrize(
    ("name", "dataset", "threat_model", "expected_file"),
    [
        ("Gowal2021Improving_R18_ddpm_100m", "cifar10", "Linf", "cifar10/Linf/Gowal2021Improving_R18_ddpm_100m.pt"),
        ("Tian2022Deeper_DeiT-B", "imagenet", "corruptions", "hub/checkpoints/tian2022deeper-deit-b.pth"),
    ],
)
def test_robustbench_download_gives_up_within_seconds(
    tarpit: str, tmp_path: Path, name: str, dataset: str, threat_model: str, expected_file: str
) -> None:
    _import_robustbench()  # its import time is not the download's
    error, elapsed = _bounded(lambda: load_robustbench_model(name, dataset, threat_model, str(tmp_path)))
    assert isinstance(error, CheckpointNotFoundError), repr(error)
    assert re.search(re.escape(str(tmp_path / expected_file)), str(error))
    assert elapsed < LIMIT_S
    assert not (tmp_path / expected_file).exists()
