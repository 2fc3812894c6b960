"""An S3-compatible HTTP endpoint for the s3fs blob backend: moto's server mode.

``S3Endpoint`` starts ``moto.server.ThreadedMotoServer`` on a free loopback port
(real HTTP, real s3fs/aiobotocore client code) and sets the AWS environment that
botocore needs. ``bucket()`` creates a fresh bucket per test, so tests never see
each other's blobs. ``start_or_skip()`` is for fixtures: one endpoint per test process;
with CI=true an endpoint that cannot start fails the run instead of skipping.
"""

from __future__ import annotations

import atexit
import json
import logging
import os
import uuid
from typing import Any

# botocore wants credentials and a region; any values do for moto. The region must
# come from the environment: passing region_name to s3fs breaks bucket creation.
AWS_ENV = {
    "AWS_ACCESS_KEY_ID": "stateward-test",
    "AWS_SECRET_ACCESS_KEY": "stateward-test",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_EC2_METADATA_DISABLED": "true",
}


class S3Unavailable(RuntimeError):
    """moto is missing or its server would not start."""


class S3Endpoint:
    def __init__(self) -> None:
        self._server: Any = None
        self._saved_env: dict[str, str | None] = {}
        self.endpoint_url = ""

    def start(self) -> S3Endpoint:
        try:
            from moto.server import ThreadedMotoServer
        except ImportError as error:  # pragma: no cover - dev extra missing
            raise S3Unavailable(f"moto[server] is not installed: {error}") from error
        for name, value in AWS_ENV.items():
            self._saved_env[name] = os.environ.get(name)
            os.environ[name] = value
        logging.getLogger("werkzeug").setLevel(logging.ERROR)  # one log line per request
        try:
            self._server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
            self._server.start()
            host, port = self._server.get_host_and_port()
        except Exception as error:
            self.stop()
            raise S3Unavailable(f"the moto S3 server did not start: {error}") from error
        self.endpoint_url = f"http://{host}:{port}"
        return self

    @property
    def storage_options(self) -> dict[str, Any]:
        return {"endpoint_url": self.endpoint_url}

    @property
    def options_json(self) -> str:
        """The value for the ``blob_options`` setting."""
        return json.dumps(self.storage_options)

    def filesystem(self) -> Any:
        import s3fs

        return s3fs.S3FileSystem(use_listings_cache=False, **self.storage_options)

    def bucket(self) -> str:
        """A new, empty bucket (names need 3 to 63 characters)."""
        name = f"sw-{uuid.uuid4().hex[:20]}"
        self.filesystem().mkdir(name)
        return name

    def stop(self) -> None:
        if self._server is not None:
            try:
                self._server.stop()
            finally:
                self._server = None
        for name, value in self._saved_env.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        self._saved_env.clear()


def _in_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


_shared: S3Endpoint | None = None


def start_or_skip() -> S3Endpoint:
    """The endpoint for test fixtures, started once per test process (moto takes seconds
    to start) and stopped at exit; each test takes a fresh bucket. Skips when it cannot
    start, but fails in CI."""
    global _shared
    import pytest

    if _shared is None:
        try:
            _shared = S3Endpoint().start()
        except S3Unavailable as error:
            if _in_ci():
                pytest.fail(f"the S3 endpoint is required in CI: {error}")
            pytest.skip(f"S3 endpoint unavailable: {error}")
        atexit.register(_shared.stop)
    return _shared
