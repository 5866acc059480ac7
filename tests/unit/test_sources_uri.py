"""Parsing declared sources and --allowed-sources rules for the remote schemes (pure)."""

from __future__ import annotations

import pytest

from lora_syncer.sources.errors import ForbiddenSource, InvalidSource
from lora_syncer.sources.uri import (
    ArchiveSource,
    HubSource,
    LocalSource,
    S3Source,
    check_url_allowed,
    parse_source,
    redact_url,
    remote_source_allowed,
    validate_rule,
)


def test_local_and_hub_sources_are_passed_through() -> None:
    assert parse_source("/adapters/x") == LocalSource("/adapters/x")
    assert parse_source("./x") == LocalSource("./x")
    assert parse_source("myorg/lora") == HubSource("myorg/lora")


def test_s3_source_is_always_a_directory_prefix() -> None:
    assert parse_source("s3://bucket/a/b/") == S3Source("bucket", "a/b/")
    assert parse_source("s3://bucket/a/b") == S3Source("bucket", "a/b/")
    assert parse_source("s3://bucket") == S3Source("bucket", "")
    assert parse_source("s3://bucket/a/b").text == "s3://bucket/a/b/"


def test_archive_sources() -> None:
    src = parse_source("https://Models.Corp/adapters/v1.tar.gz")
    assert isinstance(src, ArchiveSource)
    assert (src.scheme, src.host, src.port, src.path, src.format) == (
        "https",
        "models.corp",
        443,
        "/adapters/v1.tar.gz",
        "tar.gz",
    )
    tgz = parse_source("http://127.0.0.1:8080/a.tgz")
    assert isinstance(tgz, ArchiveSource)
    assert (tgz.port, tgz.format) == (8080, "tar.gz")
    zipped = parse_source("https://h/a.ZIP")
    assert isinstance(zipped, ArchiveSource)
    assert zipped.format == "zip"


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("hf://org/repo@main", "hf:// sources are not supported"),
        ("ftp://h/a.tar.gz", "ftp:// sources are not supported"),
        ("https://user:pw@h/a.tar.gz", "user information in a URL is refused"),
        ("https://models.corp@evil.net/a.tar.gz", "user information in a URL is refused"),
        ("https://h/adapter", "must name a .tar.gz, .tgz or .zip archive"),
        ("https://h/.tar.gz", "must name a .tar.gz, .tgz or .zip archive"),
        ("https://h/a/../b.tar.gz", "'.' or '..' segments"),
        ("https://h/a/%2e%2e/b.tar.gz", "'.' or '..' segments"),
        ("https://h/a%2fb.tar.gz", "encoded slashes"),
        ("https://h:99999/a.tar.gz", "not a valid URL"),
        ("https://h/a.tar.gz#x", "#fragment"),
        ("s3://Bad_Bucket/x", "not a valid S3 bucket name"),
        ("s3://bucket:9000/x", "not a host:port"),
        ("s3://bucket/a/../b", "'.' or '..' segments"),
        ("s3://bucket/a//b", "empty, '.' or '..' segments"),
        ("s3://bucket/a?x=1", "?query"),
        (" /adapters/x", "no surrounding whitespace"),
        ("/adapters/\nx", "control character"),
    ],
)
def test_refused_sources_have_one_line_reasons(text: str, needle: str) -> None:
    with pytest.raises(InvalidSource) as info:
        parse_source(text)
    assert needle in str(info.value)
    assert "\n" not in str(info.value)


def test_userinfo_is_never_echoed() -> None:
    with pytest.raises(InvalidSource) as info:
        parse_source("https://AKIAEXAMPLE:s3cr3t@h/a.tar.gz")
    assert "s3cr3t" not in str(info.value)
    assert "AKIAEXAMPLE" not in str(info.value)


def test_redact_url_drops_query_and_userinfo() -> None:
    assert redact_url("https://u:p@h:8443/a.zip?X-Amz-Signature=abc") == "https://h:8443/a.zip?…"


def _allowed(source: str, *rules: str) -> bool:
    parsed = parse_source(source)
    assert isinstance(parsed, S3Source | ArchiveSource)
    return remote_source_allowed(parsed, rules)


def test_no_rules_allows_https_and_s3_but_not_plain_http() -> None:
    assert _allowed("https://anything/a.zip")
    assert _allowed("s3://bucket/x/")
    assert not _allowed("http://anything/a.zip")
    with pytest.raises(ForbiddenSource, match=r"plain http:// needs an --allowed-sources rule"):
        check_url_allowed("http://anything/a.zip", [])
    check_url_allowed("http://anything/a.zip", ["http://anything"])


@pytest.mark.parametrize(
    ("source", "allowed"),
    [
        ("https://models.corp/x.tar.gz", True),
        ("https://models.corp:443/x.tar.gz", True),
        ("https://MODELS.corp/deep/x.tar.gz", True),
        ("https://models.corp.evil.net/x.tar.gz", False),
        ("https://evil.net/models.corp/x.tar.gz", False),
        ("https://models.corp:8443/x.tar.gz", False),
        ("http://models.corp/x.tar.gz", False),
    ],
)
def test_host_rule(source: str, allowed: bool) -> None:
    assert _allowed(source, "https://models.corp") is allowed


@pytest.mark.parametrize(
    ("source", "allowed"),
    [
        ("https://models.corp/adapters/x.tar.gz", True),
        ("https://models.corp/adapters/team/x.zip", True),
        ("https://models.corp/adapters-evil/x.tar.gz", False),
        ("https://models.corp/adaptersx.tar.gz", False),
        ("https://models.corp/other/x.tar.gz", False),
    ],
)
def test_path_prefix_rule_is_on_slash_boundaries(source: str, allowed: bool) -> None:
    assert _allowed(source, "https://models.corp/adapters") is allowed
    assert _allowed(source, "https://models.corp/adapters/") is allowed


def test_exact_port_rule() -> None:
    assert _allowed("http://127.0.0.1:8080/a.tgz", "http://127.0.0.1:8080")
    assert not _allowed("http://127.0.0.1:8081/a.tgz", "http://127.0.0.1:8080")
    assert not _allowed("http://127.0.0.1/a.tgz", "http://127.0.0.1:8080")


@pytest.mark.parametrize(
    ("source", "allowed"),
    [
        ("s3://models/team/v1/", True),
        ("s3://models/team/", True),
        ("s3://models/team", True),
        ("s3://models/teamx/v1/", False),
        ("s3://models/", False),
        ("s3://models-evil/team/v1/", False),
    ],
)
def test_s3_rule_by_bucket_and_prefix(source: str, allowed: bool) -> None:
    assert _allowed(source, "s3://models/team") is allowed


def test_s3_bucket_rule_admits_the_whole_bucket() -> None:
    assert _allowed("s3://models/anything/", "s3://models")
    assert not _allowed("s3://other/anything/", "s3://models")


def test_legacy_prefix_rules_never_admit_remote_sources() -> None:
    assert not _allowed("https://h/a.zip", "h")
    assert not _allowed("s3://bucket/a/", "s3")
    assert not _allowed("https://h/a.zip", "/adapters/", "myorg/")


def test_regex_rules_match_the_whole_source() -> None:
    assert _allowed("https://h/a.zip", r"re:https://h/[a-z]+\.zip")
    assert not _allowed("https://h/a.zip.evil/b.zip", r"re:https://h/[a-z]+\.zip")
    assert _allowed("s3://bkt/p/", r"re:s3://bkt/p/")


def test_redirect_hops_are_checked() -> None:
    check_url_allowed("https://models.corp/a/b.zip?sig=1", ["https://models.corp/a"])
    with pytest.raises(ForbiddenSource) as info:
        check_url_allowed("https://evil.net/b.zip?sig=secret", ["https://models.corp"], what="redirect to")
    assert str(info.value) == "redirect to https://evil.net/b.zip?… is not allowed by --allowed-sources"
    with pytest.raises(InvalidSource):
        check_url_allowed("https://models.corp@evil.net/b.zip", [])


def test_validate_rule() -> None:
    validate_rule("https://models.corp/adapters")
    validate_rule("s3://bucket/prefix")
    validate_rule("myorg/")
    with pytest.raises(InvalidSource):
        validate_rule("s3://Bad_Bucket")
    with pytest.raises(InvalidSource, match="invalid regex"):
        validate_rule("re:(")
