"""Checksum parsing and the directory digest's pure part."""

from __future__ import annotations

import hashlib

import pytest

from lora_syncer.sources.cache import version_name
from lora_syncer.sources.digest import Checksum, DirectoryDigest, check_relative_name, parse_checksum
from lora_syncer.sources.errors import InvalidSource, UnsafeContent

HEX_A = "a" * 64
HEX_B = "b" * 64


def test_parse_checksum() -> None:
    assert parse_checksum("sha256:" + "AB" * 32) == Checksum("ab" * 32)
    assert str(parse_checksum("sha256:" + HEX_A)) == "sha256:" + HEX_A
    for bad in ("md5:" + HEX_A, "sha256:" + HEX_A[:-1], "sha256:" + "g" * 64, HEX_A):
        with pytest.raises(InvalidSource, match="sha256:"):
            parse_checksum(bad)


def test_directory_digest_is_sha256_of_sorted_lines() -> None:
    d = DirectoryDigest()
    d.add("b/x", HEX_B)
    d.add("a b", HEX_A)
    d.add("é", HEX_A)
    d.add("B", HEX_B)
    # Byte order: "B" (0x42) < "a b" < "b/x" < "é" (0xc3 0xa9).
    text = f"{HEX_B}  B\n{HEX_A}  a b\n{HEX_B}  b/x\n{HEX_A}  é\n".encode()
    assert d.result() == Checksum(hashlib.sha256(text).hexdigest())
    assert len(d) == 4


@pytest.mark.parametrize("name", ["a\nb", "a\\b", "/abs", "a/../b", "./a", "a//b", ""])
def test_names_the_recipe_cannot_represent_are_refused(name: str) -> None:
    with pytest.raises(UnsafeContent):
        check_relative_name(name)


def test_duplicates_and_empty_are_refused() -> None:
    d = DirectoryDigest()
    with pytest.raises(UnsafeContent, match="no files"):
        d.result()
    d.add("a", HEX_A)
    with pytest.raises(UnsafeContent, match="twice"):
        d.add("a", HEX_B)


def test_version_names_are_safe_bounded_and_distinct() -> None:
    long_source = "s3://bucket/" + "very-long-prefix/" * 30
    name = version_name(long_source, Checksum(HEX_A))
    assert len(name) <= 81
    assert name.replace("-", "").replace(".", "").replace("_", "").isalnum()
    assert version_name(long_source, Checksum(HEX_B)) != name
    assert version_name("https://h/a.zip?sig=SECRET", Checksum(HEX_A)).find("secret") == -1
    assert version_name("https://h/Ünïcode €.zip", Checksum(HEX_A)).isascii()
