"""Servers for the adapter-source tests: a real S3-compatible server (moto, as a subprocess on
127.0.0.1) and a small aiohttp file server that counts requests, and can hold responses or send
them slowly. Shared by the integration, e2e and benchmark code.
"""

from __future__ import annotations

import asyncio
import io
import os
import subprocess
import sys
import tarfile
import time
import urllib.request
from collections import Counter
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from aiohttp import web

from tests.support.net import free_port

if TYPE_CHECKING:
    import pytest
    from mypy_boto3_s3 import S3Client

ACCESS_KEY = "AKIAMOTOTESTKEY00001"
SECRET_KEY = "moto-test-secret-value-never-shown"


def tar_gz(files: Mapping[str, bytes]) -> bytes:
    """A .tar.gz archive holding `files` (name -> content)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tf:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    return buf.getvalue()


@contextmanager
def moto_server() -> Iterator[str]:
    """A moto S3 server in its own process; yields its endpoint URL."""
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(f"{url}/moto-api/", timeout=2):
                    break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("moto server did not start") from None
                time.sleep(0.1)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def s3_env(endpoint: str) -> dict[str, str]:
    """The standard AWS variables pointing at the test server (no profile files read)."""
    return {
        "AWS_ENDPOINT_URL": endpoint,
        "AWS_ACCESS_KEY_ID": ACCESS_KEY,
        "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_CONFIG_FILE": os.devnull,
        "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
        "AWS_EC2_METADATA_DISABLED": "true",
    }


def s3_client(
    endpoint: str, monkeypatch: pytest.MonkeyPatch, bucket: str, objects: Mapping[str, bytes] = {}
) -> S3Client:
    """A boto3 S3 client of the moto server at `endpoint` (its credentials set in this process's
    environment for the test); `bucket` is created, holding `objects`, if it is not there yet."""
    import boto3

    for key, value in s3_env(endpoint).items():
        monkeypatch.setenv(key, value)
    client = boto3.session.Session().client("s3")
    if bucket not in {b["Name"] for b in client.list_buckets().get("Buckets", [])}:
        client.create_bucket(Bucket=bucket)
        for key, data in objects.items():
            client.put_object(Bucket=bucket, Key=key, Body=data)
    return client


@dataclass
class FileServer:
    """Serves `files[path]`; `redirects[path]` answers 302 to a URL; counts requests per path."""

    files: dict[str, bytes] = field(default_factory=dict)
    redirects: dict[str, str] = field(default_factory=dict)
    failures: Counter[str] = field(default_factory=Counter)  # path -> 500s still to answer
    chunked: set[str] = field(default_factory=set)  # paths sent without Content-Length
    gzip_encoded: set[str] = field(default_factory=set)  # paths labelled Content-Encoding: gzip
    hold: asyncio.Event | None = None  # when set: the body is sent only once the event is set
    chunk_delay: float = 0.0  # seconds between 64 KiB chunks (a slow server)
    midway: asyncio.Event | None = None  # when set: the second half of a body waits for the event
    requests: Counter[str] = field(default_factory=Counter)
    etag: str = '"v1"'
    _runner: web.AppRunner | None = None
    port: int = 0

    def url(self, path: str, host: str = "127.0.0.1") -> str:
        return f"http://{host}:{self.port}{path}"

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        path = request.path
        self.requests[path] += 1
        if path in self.redirects:
            raise web.HTTPFound(self.redirects[path])
        if self.failures[path] > 0:
            self.failures[path] -= 1
            return web.Response(status=500, text="try again")
        if path not in self.files:
            return web.Response(status=404, text="no such file")
        data = self.files[path]
        resp = web.StreamResponse(headers={"ETag": self.etag})
        if path in self.gzip_encoded:
            resp.headers["Content-Encoding"] = "gzip"
        if path not in self.chunked:
            resp.content_length = len(data)
        await resp.prepare(request)
        if self.hold is not None:
            await self.hold.wait()
        half = len(data) // 2
        for i in range(0, len(data), 65536):
            if self.midway is not None and i >= half:
                await self.midway.wait()
            await resp.write(data[i : i + 65536])
            if self.chunk_delay:
                await asyncio.sleep(self.chunk_delay)
        await resp.write_eof()
        return resp

    async def start(self) -> None:
        app = web.Application()
        app.router.add_route("GET", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        server = site._server
        assert server is not None
        self.port = server.sockets[0].getsockname()[1]  # type: ignore[attr-defined]

    async def stop(self) -> None:
        for event in (self.hold, self.midway):
            if event is not None:
                event.set()
        if self._runner is not None:
            await self._runner.cleanup()
