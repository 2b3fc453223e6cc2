"""An S3 API server on 127.0.0.1 to stage on, as a multi-machine deployment stages on S3.

moto's S3 in server mode (a real HTTP server speaking the S3 REST API, objects held in this
process, in one store for all its servers) with one bucket, behind a front that a test can make
answer ``503 SlowDown`` for a while or answer slowly, as an object store does under an outage or throttling. The Airflow
connection it hands out is an ``aws`` one with the server as ``endpoint_url``, the way a
district's MinIO or Ceph is reached; ``staging_root`` names that connection in the
``s3://<conn_id>@<bucket>/<prefix>`` form ``ObjectStoragePath`` reads.

    with ObjectStore(conn_id="staging_s3") as store:
        env = {**store.connection_env(), "AIRFLOW_VAR_ONEROSTER_STAGING_ROOT": store.staging_root()}
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any, Self

import boto3
from moto.server import DomainDispatcherApplication, MotoRequestHandler, create_backend_app
from werkzeug.serving import BaseWSGIServer, make_server

from include.sandbox.loopback import LocalServer

SLOW_DOWN = (b'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>SlowDown</Code>'
             b"<Message>Please reduce your request rate.</Message></Error>")
ACCESS_KEY, SECRET_KEY, REGION = "staging-access-key", "staging-secret-key", "us-east-1"
# botocore's standard retry mode (503 SlowDown and throttling retried with jittered backoff), three
# attempts a call; s3fs tries each call up to five times on top of that.
RETRIES = {"mode": "standard", "max_attempts": 3}


class _QuietHandler(MotoRequestHandler):
    def log_request(self, *args: Any) -> None:  # a line per request would bury the test's output
        pass


class ObjectStore(LocalServer):
    """The server and its bucket; ``requests`` counts what reached the front (by method), ``refused``
    what it answered 503."""

    def __init__(self, *, conn_id: str = "staging_s3", bucket: str = "oneroster-staging", port: int = 0) -> None:
        self.conn_id = conn_id
        self.bucket = bucket
        self._port = port
        self._server: BaseWSGIServer | None = None
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._unavailable_until = 0.0
        self._unavailable_for: int = 0
        self.latency = 0.0
        self.requests: dict[str, int] = {}
        self.refused = 0

    # -- lifecycle ------------------------------------------------------------------

    def start(self) -> Self:
        backend = DomainDispatcherApplication(create_backend_app)
        self._server = make_server(self.host, self._port, self._front(backend), threaded=True,
                                   request_handler=_QuietHandler)
        self._thread = threading.Thread(target=self._server.serve_forever, name="object-store", daemon=True)
        self._thread.start()
        self.client().create_bucket(Bucket=self.bucket)
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join()
        self._server = self._thread = None

    @property
    def port(self) -> int:
        assert self._server is not None, "start the object store first"
        return self._server.server_address[1]

    @property
    def endpoint_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    # -- what a deployment is given -------------------------------------------------------

    def connection_env(self) -> dict[str, str]:
        """The Airflow connection ``conn_id`` to stage through, as the environment variable Airflow reads."""
        connection = {"conn_type": "aws", "login": ACCESS_KEY, "password": SECRET_KEY,
                      "extra": {"endpoint_url": self.endpoint_url, "region_name": REGION,
                                "config_kwargs": {"retries": RETRIES}}}
        return {f"AIRFLOW_CONN_{self.conn_id.upper()}": json.dumps(connection)}

    def staging_root(self, prefix: str = "staging") -> str:
        """``oneroster_staging_root`` on this bucket through connection ``conn_id``."""
        return f"s3://{self.conn_id}@{self.bucket}/{prefix}"

    def client(self):
        """A boto3 S3 client on this server, for a test to read what was staged."""
        return boto3.client("s3", endpoint_url=self.endpoint_url, aws_access_key_id=ACCESS_KEY,
                            aws_secret_access_key=SECRET_KEY, region_name=REGION)

    def keys(self, prefix: str = "") -> list[str]:
        """Every object's key under ``prefix``, in key order."""
        pages = self.client().get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=prefix)
        return sorted(item["Key"] for page in pages for item in page.get("Contents", []))

    def uploads_in_progress(self) -> list[str]:
        """The keys of multipart uploads begun and neither completed nor aborted."""
        listed = self.client().list_multipart_uploads(Bucket=self.bucket)
        return [upload["Key"] for upload in listed.get("Uploads", [])]

    # -- faults -------------------------------------------------------------------------

    def unavailable(self, *, seconds: float = 0.0, requests: int = 0) -> None:
        """Answer ``503 SlowDown`` to every request for the next ``seconds``, or to the next
        ``requests`` requests."""
        with self._lock:
            self._unavailable_until = time.monotonic() + seconds if seconds else 0.0
            self._unavailable_for = requests

    def _refuses(self) -> bool:
        with self._lock:
            if time.monotonic() < self._unavailable_until:
                return True
            if self._unavailable_for > 0:
                self._unavailable_for -= 1
                return True
            return False

    def _front(self, backend: Callable) -> Callable:
        def application(environ: dict, start_response: Callable) -> Iterable[bytes]:
            method = environ["REQUEST_METHOD"]
            with self._lock:
                self.requests[method] = self.requests.get(method, 0) + 1
            if self.latency:
                time.sleep(self.latency)
            if self._refuses():
                environ["wsgi.input"].read(int(environ.get("CONTENT_LENGTH") or 0))
                with self._lock:
                    self.refused += 1
                start_response("503 Slow Down", [("Content-Type", "application/xml"),
                                                 ("Content-Length", str(len(SLOW_DOWN)))])
                return [SLOW_DOWN]
            return backend(environ, start_response)

        return application
