"""moto's S3 server on a free loopback port, for the sandbox and the tests."""

from __future__ import annotations

import logging
import urllib.request
from dataclasses import dataclass

from moto.server import ThreadedMotoServer


@dataclass
class LocalS3:
    """A running moto server; `url` goes into AWS_ENDPOINT_URL_S3."""

    server: ThreadedMotoServer
    url: str

    def reset(self) -> None:
        """Forget every bucket, so each test starts from an empty account."""
        req = urllib.request.Request(f"{self.url}/moto-api/reset", method="POST", data=b"")
        with urllib.request.urlopen(req, timeout=10):
            pass

    def stop(self) -> None:
        self.server.stop()


def start_local_s3() -> LocalS3:
    """Start moto on 127.0.0.1 (never 0.0.0.0, moto's default) on a port the OS picks."""
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    return LocalS3(server=server, url=f"http://{host}:{port}")
