"""Parse a declared `source` into a typed source, and match remote sources against
`--allowed-sources` (pure).

- a local directory (`/adapters/x`, `./x`) and a plain hub id (`org/name`) are handed to vLLM
  as they are; their `--allowed-sources` rules stay in `lora_syncer.sync.plan`;
- `s3://bucket/prefix/`: every object under the prefix, as one adapter directory;
- `https://host[:port]/path/adapter.tar.gz` (`.tgz`, `.zip`): an archive; `http://` too, but
  only when an `--allowed-sources` rule admits it (never by default).

Rules for the remote schemes: a rule `https://host[:port][/path]` admits a URL with the same
scheme, the same host and (effective) port, and a path equal to the rule's path or below it on
a `/` boundary; `s3://bucket[/prefix]` admits the same bucket and a prefix on a `/` boundary;
`re:<regex>` must match the whole source. Other rules (`myorg/`, `/adapters/`) never admit a
remote source.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Literal
from urllib.parse import SplitResult, unquote, urlsplit

from lora_syncer.sources.errors import ForbiddenSource, InvalidSource

ArchiveFormat = Literal["tar.gz", "zip"]

_ARCHIVE_SUFFIXES: tuple[tuple[str, ArchiveFormat], ...] = (
    (".tar.gz", "tar.gz"),
    (".tgz", "tar.gz"),
    (".zip", "zip"),
)
_DEFAULT_PORTS = {"http": 80, "https": 443}
# S3 bucket names: 3-63 of lowercase letters, digits, dots and hyphens (legacy upper case refused).
_BUCKET = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


class SourceKind(StrEnum):
    LOCAL = "local"
    HUB = "hub"
    S3 = "s3"
    ARCHIVE = "archive"


@dataclass(frozen=True)
class LocalSource:
    """A directory on the vLLM container's filesystem; vLLM reads it itself."""

    path: str
    kind: Literal[SourceKind.LOCAL] = SourceKind.LOCAL

    @property
    def text(self) -> str:
        return self.path


@dataclass(frozen=True)
class HubSource:
    """A plain hub id (`org/name`); vLLM resolves it itself."""

    repo_id: str
    kind: Literal[SourceKind.HUB] = SourceKind.HUB

    @property
    def text(self) -> str:
        return self.repo_id


@dataclass(frozen=True)
class S3Source:
    """Every object under `prefix` in `bucket`. `prefix` is empty or ends with `/`."""

    bucket: str
    prefix: str
    kind: Literal[SourceKind.S3] = SourceKind.S3

    @property
    def text(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}"


@dataclass(frozen=True)
class ArchiveSource:
    """An archive over HTTP(S). `host` is lower case; `port` is the effective port."""

    url: str
    scheme: Literal["http", "https"]
    host: str
    port: int
    path: str
    format: ArchiveFormat
    kind: Literal[SourceKind.ARCHIVE] = SourceKind.ARCHIVE

    @property
    def text(self) -> str:
        return self.url


Source = LocalSource | HubSource | S3Source | ArchiveSource
RemoteSource = S3Source | ArchiveSource


def redact_url(url: str) -> str:
    """A URL fit for logs and messages: no userinfo, no query (pre-signed URLs carry secrets)."""
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        port = f":{parts.port}" if parts.port is not None else ""
    except ValueError:
        return "<unparsable URL>"
    if ":" in host:
        host = f"[{host}]"
    query = "?…" if parts.query else ""
    return f"{parts.scheme}://{host}{port}{parts.path}{query}"


def _check_path_segments(path: str, what: str, shown: str) -> None:
    """Refuse `.`/`..` segments, backslashes, encoded separators and control characters.

    Servers and clients normalise these differently, so a path that passes a prefix rule
    could name something else once it reaches the server.
    """
    if _CONTROL.search(path):
        raise InvalidSource(f"{shown}: {what} contains a control character")
    lowered = path.lower()
    if "\\" in path or "%2f" in lowered or "%5c" in lowered:
        raise InvalidSource(f"{shown}: {what} must not contain backslashes or encoded slashes")
    for segment in unquote(path).split("/"):
        if segment in (".", ".."):
            raise InvalidSource(f"{shown}: {what} must not contain '.' or '..' segments")


def _split(text: str) -> SplitResult:
    try:
        parts = urlsplit(text)
        _ = parts.port  # raises ValueError on a bad port
    except ValueError as exc:
        raise InvalidSource(f"{redact_url(text)}: not a valid URL ({exc})") from None
    if parts.username is not None or parts.password is not None or "@" in parts.netloc:
        # Credentials belong in the environment or a Secret, never in a ConfigMap.
        raise InvalidSource(
            f"{parts.scheme}://…: user information in a URL is refused; give credentials through the environment"
        )
    return parts


def parse_http_url(text: str) -> tuple[Literal["http", "https"], str, int, str]:
    """(scheme, host, effective port, path) of an http(s) URL; raises InvalidSource."""
    parts = _split(text)
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https"):
        raise InvalidSource(f"{redact_url(text)}: expected an http:// or https:// URL")
    host = (parts.hostname or "").lower()
    if not host:
        raise InvalidSource(f"{redact_url(text)}: URL has no host")
    if parts.fragment:
        raise InvalidSource(f"{redact_url(text)}: URL must not have a #fragment")
    _check_path_segments(parts.path, "URL path", redact_url(text))
    port = parts.port if parts.port is not None else _DEFAULT_PORTS[scheme]
    return ("https" if scheme == "https" else "http"), host, port, parts.path or "/"


def _parse_archive(text: str) -> ArchiveSource:
    scheme, host, port, path = parse_http_url(text)
    name = path.rsplit("/", 1)[-1].lower()
    for suffix, fmt in _ARCHIVE_SUFFIXES:
        if name.endswith(suffix) and len(name) > len(suffix):
            return ArchiveSource(url=text, scheme=scheme, host=host, port=port, path=path, format=fmt)
    raise InvalidSource(
        f"{redact_url(text)}: an {scheme}:// source must name a .tar.gz, .tgz or .zip archive"
    )


def _parse_s3(text: str) -> S3Source:
    parts = _split(text)
    shown = f"s3://{parts.netloc}{parts.path}"
    if parts.port is not None or ":" in parts.netloc:
        raise InvalidSource(f"{shown}: an s3:// source names a bucket, not a host:port; set AWS_ENDPOINT_URL")
    if parts.query or parts.fragment:
        raise InvalidSource(f"{shown}: an s3:// source must not have a ?query or #fragment")
    bucket = parts.netloc
    if not _BUCKET.fullmatch(bucket) or ".." in bucket:
        raise InvalidSource(f"{shown}: {bucket!r} is not a valid S3 bucket name")
    prefix = parts.path.lstrip("/") if parts.path.startswith("/") else parts.path
    if _CONTROL.search(prefix) or "\\" in prefix:
        raise InvalidSource(f"{shown}: the prefix contains a control character or a backslash")
    segments = prefix.rstrip("/").split("/") if prefix.strip("/") else []
    if any(s in ("", ".", "..") for s in segments):
        raise InvalidSource(f"{shown}: the prefix must not contain empty, '.' or '..' segments")
    # Always a "directory": s3://b/v1 must not also fetch s3://b/v10/.
    return S3Source(bucket=bucket, prefix="".join(s + "/" for s in segments))


def parse_source(text: str) -> Source:
    """The typed source a `source` field declares. Raises InvalidSource with a one-line reason."""
    if not text or text != text.strip():
        raise InvalidSource("source must be non-empty with no surrounding whitespace")
    if _CONTROL.search(text):
        raise InvalidSource("source contains a control character")
    match = re.match(r"([A-Za-z][A-Za-z0-9+.-]*)://", text)
    if match is None:
        if text.startswith(("/", ".", "~")):
            return LocalSource(text)
        return HubSource(text)
    scheme = match.group(1).lower()
    if scheme == "s3":
        return _parse_s3(text)
    if scheme in ("http", "https"):
        return _parse_archive(text)
    if scheme == "hf":
        raise InvalidSource(
            "hf:// sources are not supported; declare a hub id (org/name), an s3:// prefix or an https:// archive"
        )
    raise InvalidSource(f"{scheme}:// sources are not supported; use s3:// or https://")


# --- --allowed-sources for the remote schemes ------------------------------------------------


def _under(path: str, base: str) -> bool:
    """`path` equals `base` or lies below it on a `/` boundary (`/a` admits `/a/b`, not `/ab`)."""
    base = base.rstrip("/")
    return not base or path == base or path.startswith(base + "/")


def _url_rule_allows(rule: str, url: str) -> bool:
    try:
        r_scheme, r_host, r_port, r_path = parse_http_url(rule)
        scheme, host, port, path = parse_http_url(url)
    except InvalidSource:
        return False
    return (r_scheme, r_host, r_port) == (scheme, host, port) and _under(path, r_path)


def _s3_rule_allows(rule: str, source: S3Source) -> bool:
    try:
        r = _parse_s3(rule)
    except InvalidSource:
        return False
    return r.bucket == source.bucket and _under("/" + source.prefix.rstrip("/"), "/" + r.prefix)


def rule_allows_url(rule: str, url: str) -> bool:
    """Whether one rule admits an http(s) URL (an archive source or a redirect hop)."""
    if rule.startswith("re:"):
        return re.fullmatch(rule[3:], url) is not None
    if rule.lower().startswith(("http://", "https://")):
        return _url_rule_allows(rule, url)
    return False


def remote_source_allowed(source: RemoteSource, rules: Sequence[str]) -> bool:
    """True when one rule admits the source, or no rules are set (plain http:// then needs a rule)."""
    if not rules:
        return not (isinstance(source, ArchiveSource) and source.scheme == "http")
    if isinstance(source, S3Source):
        return any(
            re.fullmatch(r[3:], source.text) is not None
            if r.startswith("re:")
            else r.lower().startswith("s3://") and _s3_rule_allows(r, source)
            for r in rules
        )
    return any(rule_allows_url(r, source.url) for r in rules)


def check_url_allowed(url: str, rules: Sequence[str], *, what: str = "source") -> None:
    """Raise ForbiddenSource unless `url` is an allowed http(s) URL (used for every redirect hop)."""
    scheme = parse_http_url(url)[0]  # userinfo, `..` and friends are refused whatever the rules
    if not rules and scheme == "http":
        # Unencrypted downloads of weights only where an operator admitted them by name.
        raise ForbiddenSource(f"{what} {redact_url(url)}: plain http:// needs an --allowed-sources rule")
    if rules and not any(rule_allows_url(r, url) for r in rules):
        raise ForbiddenSource(f"{what} {redact_url(url)} is not allowed by --allowed-sources")


def validate_rule(rule: str) -> None:
    """Raise InvalidSource for a malformed remote rule (so a typo is an error at start, not a refusal)."""
    lowered = rule.lower()
    if lowered.startswith(("http://", "https://")):
        parse_http_url(rule)
    elif lowered.startswith("s3://"):
        _parse_s3(rule)
    elif rule.startswith("re:"):
        try:
            re.compile(rule[3:])
        except re.error as exc:
            raise InvalidSource(f"--allowed-sources {rule!r}: invalid regex: {exc}") from None
