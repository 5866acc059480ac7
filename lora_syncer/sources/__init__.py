"""Adapter sources beyond what vLLM loads itself: s3:// prefixes and https archives.

`uri` parses a declared source (pure), `digest` computes the `sha256:` checksum, `archive`
extracts archives safely, `fetch_s3` / `fetch_http` download, `fetch` dispatches by kind,
`gc` decides what the cache may delete (pure) and `cache` owns the `--adapter-cache` directory.
"""
