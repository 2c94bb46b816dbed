"""A real S3 API on a free loopback port (moto's server mode, a child process), for tests of recording storage.

``with S3Server() as s3: ... s3.url`` runs ``python -m moto.server`` bound
to 127.0.0.1 and waits until it answers; boto3 pointed at ``s3.url`` (any
credentials) speaks the real S3 wire protocol to it: SigV4, multipart
uploads, ranged gets. :meth:`S3Server.client` is a boto3 client for the test
itself (to create the bucket and read what the server stored).
"""

from __future__ import annotations

import sys
import tempfile
from contextlib import ExitStack
from pathlib import Path
from types import TracebackType
from typing import Any, Self

from ..config import child_environment
from .processes import free_port, serving

__all__ = ["S3_CREDENTIALS", "S3Server"]

S3_CREDENTIALS = {"AWS_ACCESS_KEY_ID": "AKIDS3TEST", "AWS_SECRET_ACCESS_KEY": "s3-test-secret",
                  "AWS_EC2_METADATA_DISABLED": "true"}
"""Credentials a client of the test server uses (moto accepts any; the signature is still computed)."""


class S3Server:
    """moto's S3 server on loopback until the ``with`` block ends."""

    def __init__(self) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._stack = ExitStack()

    def __enter__(self) -> Self:
        directory = Path(self._stack.enter_context(tempfile.TemporaryDirectory(prefix="aybiza-s3-")))
        command = [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)]
        self._stack.enter_context(serving(command, health_url=f"{self.url}/moto-api/", log_path=directory / "s3.log",
                                          env=child_environment(S3_CREDENTIALS), cwd=directory, what="moto S3",
                                          timeout_s=120.0))  # a loaded machine imports moto slowly
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self._stack.close()

    def client(self) -> Any:
        """A boto3 S3 client on this server."""
        import boto3

        return boto3.client("s3", endpoint_url=self.url, region_name="us-east-1",
                            aws_access_key_id=S3_CREDENTIALS["AWS_ACCESS_KEY_ID"],
                            aws_secret_access_key=S3_CREDENTIALS["AWS_SECRET_ACCESS_KEY"])
