"""`lora-syncer digest` through the real command line (a child process): local directories and
archives, an http:// archive from a local server (admitted by --allowed-sources), and one-line
errors."""

from __future__ import annotations

import asyncio
import hashlib
import io
import subprocess
import sys
import tarfile
from pathlib import Path

from tests.support.processes import clean_env
from tests.support.sources_servers import FileServer


def digest(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "lora_syncer", "digest", *args],
        env=clean_env(),
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def make_adapter(root: Path) -> Path:
    (root / "sub").mkdir(parents=True)
    (root / "adapter_config.json").write_text('{"r": 8}')
    (root / "sub" / "weights.bin").write_bytes(b"\x00\x01" * 1000)
    return root


def shell_digest(root: Path) -> str:
    """What the pipeline in docs/adapter-sources.md prints."""
    out = subprocess.run(
        "find . -type f -printf '%P\\0' | LC_ALL=C sort -z | xargs -0 sha256sum | sha256sum",
        shell=True,
        cwd=root,
        capture_output=True,
        text=True,
        check=True,
    )
    return "sha256:" + out.stdout.split()[0]


def test_directory_and_archive(tmp_path: Path) -> None:
    adapter = make_adapter(tmp_path / "adapter")
    done = digest(str(adapter), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == shell_digest(adapter)
    archive = tmp_path / "adapter.tar.gz"
    with tarfile.open(archive, "w:gz") as tf:
        tf.add(adapter, arcname=".")
    done = digest(str(archive), "--allowed-sources", "re:.*", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "sha256:" + hashlib.sha256(archive.read_bytes()).hexdigest()


def test_errors_are_one_line(tmp_path: Path) -> None:
    missing = digest(str(tmp_path / "nope"), cwd=tmp_path)
    assert missing.returncode == 1 and missing.stdout == ""
    assert missing.stderr.strip().splitlines() == [
        f"lora-syncer digest: error: {tmp_path / 'nope'}: not a directory or a .tar.gz/.tgz/.zip archive"
    ]
    none = digest(cwd=tmp_path)
    assert none.returncode == 2 and len(none.stderr.strip().splitlines()) == 1
    two = digest("a", "b", cwd=tmp_path)  # several sources: one line each, exit 1 if any failed
    assert two.returncode == 1 and [line.split(":")[2].strip() for line in two.stderr.splitlines()] == [
        "a",
        "b",
    ]
    (tmp_path / "d1").mkdir()
    (tmp_path / "d1" / "f").write_text("x")
    both = digest("d1", "nope", cwd=tmp_path)
    assert both.returncode == 1 and both.stdout.startswith("d1  sha256:") and "nope" in both.stderr
    bad_rule = digest("x", "--allowed-sources", "s3://Bad_Bucket", cwd=tmp_path)
    assert bad_rule.returncode == 2 and "--allowed-sources" in bad_rule.stderr
    hub = digest("hf://org/repo", cwd=tmp_path)
    assert hub.returncode == 1 and "hf:// sources are not supported" in hub.stderr


async def test_http_archive_needs_a_rule_then_downloads(tmp_path: Path) -> None:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tf:
        data = b'{"r": 8}'
        info = tarfile.TarInfo("adapter_config.json")
        info.size = len(data)
        tf.addfile(info, io.BytesIO(data))
    server = FileServer(files={"/a/adapter.tgz": buf.getvalue()})
    await server.start()
    try:
        url = server.url("/a/adapter.tgz")
        refused = await asyncio.to_thread(digest, url, cwd=tmp_path)
        assert refused.returncode == 1
        assert "plain http:// needs an --allowed-sources rule" in refused.stderr
        done = await asyncio.to_thread(
            digest, url, "--allowed-sources", f"http://127.0.0.1:{server.port}/a", cwd=tmp_path
        )
        assert done.returncode == 0, done.stderr
        assert done.stdout.strip() == "sha256:" + hashlib.sha256(buf.getvalue()).hexdigest()
        assert server.requests["/a/adapter.tgz"] == 1
    finally:
        await server.stop()
