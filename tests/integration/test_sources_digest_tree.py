"""The directory checksum equals the documented shell pipeline, run for real; and `lora-syncer digest`."""

from __future__ import annotations

import os
import subprocess
import tarfile
from pathlib import Path

import pytest

from lora_syncer.cli import main
from lora_syncer.sources.digest import archive_checksum, directory_checksum
from lora_syncer.sources.errors import InvalidSource, UnsafeContent

PIPELINE = "find . -type f -printf '%P\\0' | LC_ALL=C sort -z | xargs -0 sha256sum | sha256sum"


def _awkward_tree(root: Path) -> None:
    files = {
        "adapter_config.json": b'{"r": 8}',
        "adapter_model.safetensors": os.urandom(3000),
        "with space.txt": b"space",
        "ünïcödé/名前.bin": b"unicode",
        "nested/deeper/still/file": b"",
        "Zupper": b"sorts before lower case in byte order",
        "a-b": b"dash sorts before dot and slash",
        "a.b": b"dot",
        "a/b": b"slash",
    }
    for rel, data in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    (root / "empty-dir").mkdir()


def _shell_digest(root: Path) -> str:
    out = subprocess.run(
        ["bash", "-c", PIPELINE],
        cwd=root,
        capture_output=True,
        text=True,
        check=True,
        env={"PATH": os.environ["PATH"]},
    ).stdout
    return "sha256:" + out.split()[0]


def test_directory_checksum_equals_the_shell_pipeline(tmp_path: Path) -> None:
    _awkward_tree(tmp_path)
    assert str(directory_checksum(tmp_path)) == _shell_digest(tmp_path)


def test_symlinks_and_special_files_are_refused(tmp_path: Path) -> None:
    (tmp_path / "real").write_bytes(b"x")
    (tmp_path / "link").symlink_to(tmp_path / "real")
    with pytest.raises(UnsafeContent, match="symlinks are refused"):
        directory_checksum(tmp_path)
    (tmp_path / "link").unlink()
    os.mkfifo(tmp_path / "fifo")
    with pytest.raises(UnsafeContent, match="only regular files"):
        directory_checksum(tmp_path)


def test_backslash_and_newline_names_are_refused(tmp_path: Path) -> None:
    (tmp_path / "a\\b").write_bytes(b"x")
    with pytest.raises(UnsafeContent, match="newline or a backslash"):
        directory_checksum(tmp_path)
    (tmp_path / "a\\b").unlink()
    (tmp_path / "a\nb").write_bytes(b"x")
    with pytest.raises(UnsafeContent, match="newline or a backslash"):
        directory_checksum(tmp_path)


def test_empty_directory_and_missing_path_are_refused(tmp_path: Path) -> None:
    with pytest.raises(UnsafeContent, match="no files"):
        directory_checksum(tmp_path)
    with pytest.raises(InvalidSource, match="not a directory"):
        directory_checksum(tmp_path / "missing")


def test_digest_command_prints_the_checksum(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    tree = tmp_path / "tree"
    tree.mkdir()
    _awkward_tree(tree)
    assert main(["digest", str(tree)]) == 0
    assert capsys.readouterr().out.strip() == _shell_digest(tree)

    archive = tmp_path / "a.tar.gz"
    with tarfile.open(archive, "w:gz") as tf:
        tf.add(tree, arcname=".")
    assert main(["digest", str(archive)]) == 0
    out = capsys.readouterr().out.strip()
    sha = subprocess.run(
        ["sha256sum", str(archive)], capture_output=True, text=True, check=True
    ).stdout.split()[0]
    assert out == f"sha256:{sha}" == str(archive_checksum(archive))


def test_digest_command_errors_are_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "notes.txt").write_text("x")
    assert main(["digest", str(tmp_path / "notes.txt")]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert "not a directory or a .tar.gz/.tgz/.zip archive" in err
    assert main(["digest", "hf://org/repo@main"]) == 1
    assert "hf:// sources are not supported" in capsys.readouterr().err
