"""`lora-syncer digest PATH|URL...`: print the `sha256:<hex>` checksum to declare for a source.

A local directory gets the directory checksum, a local .tar.gz/.tgz/.zip the archive's sha256;
an s3:// prefix or an http(s):// archive is downloaded to a temporary directory first. Exit 0
and the checksum on stdout, or exit 1 and one line on stderr.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
from pathlib import Path

import aiohttp

from lora_syncer.sources.archive import format_of
from lora_syncer.sources.digest import Checksum, archive_checksum, directory_checksum
from lora_syncer.sources.errors import SourceError
from lora_syncer.sources.fetch_http import HttpFetcher
from lora_syncer.sources.fetch_s3 import S3Fetcher
from lora_syncer.sources.uri import ArchiveSource, S3Source, parse_source


def _local(path: Path) -> Checksum:
    if path.is_dir():
        return directory_checksum(path)
    if path.is_file() and format_of(path.name) is not None:
        return archive_checksum(path)
    raise SourceError(f"{path}: not a directory or a .tar.gz/.tgz/.zip archive")


async def _remote(source: S3Source | ArchiveSource, rules: list[str]) -> Checksum:
    with tempfile.TemporaryDirectory(prefix="lora-syncer-digest-") as tmp:
        if isinstance(source, S3Source):
            (Path(tmp) / "content").mkdir()
            return (await S3Fetcher(allowed_sources=rules).download(source, Path(tmp) / "content")).checksum
        async with aiohttp.ClientSession() as session:
            got = await HttpFetcher(session, allowed_sources=rules).download(source, Path(tmp) / "archive")
            return got.checksum


def _one(source: str, rules: list[str]) -> Checksum:
    if "://" in source:
        parsed = parse_source(source)
        if not isinstance(parsed, S3Source | ArchiveSource):
            raise SourceError(f"{source}: not a file, directory, s3:// or http(s):// source")
        return asyncio.run(_remote(parsed, rules))
    return _local(Path(source))


def run(args: argparse.Namespace) -> int:
    """Print one checksum per source (`SOURCE  sha256:...` when several are given)."""
    # Settings are declared in lora_syncer.options.commands.DIGEST (typed and split there).
    rules = list(args.allowed_sources)
    sources: list[str] = [str(s) for s in args.source]
    failed = 0
    for source in sources:
        try:
            checksum = _one(source, rules)
        except SourceError as exc:
            print(f"lora-syncer digest: error: {exc}", file=sys.stderr)
            failed = 1
            continue
        except OSError as exc:
            print(f"lora-syncer digest: error: {source}: {exc.strerror or exc}", file=sys.stderr)
            failed = 1
            continue
        print(checksum if len(sources) == 1 else f"{source}  {checksum}")
    return failed
