"""The documentation checker finds what it claims to find, and refuses what is wrong (on made-up docs)."""

from __future__ import annotations

from pathlib import Path

from tests.docs.docs_support import (
    Command,
    checked_lines,
    command_problem,
    commands,
    fenced_blocks,
    metric_names,
    variables_read,
)

DOC = """\
# A doc

Run `lora-syncer plan --config FILE [--server URL]` or `lora-syncer plan --no-such-flag`.

```console
$ kubectl exec deploy/x -c lora-syncer -- lora-syncer check a.yaml  # a comment
ok
$ lora-syncer run --config /c.yaml \\
    --reconcile-trigger 5
$ helm upgrade --install lora-syncer charts/lora-syncer
```

1. In a list:

   ```yaml
   a: 1
   ```
"""


def _doc(tmp_path: Path, text: str, name: str = "doc.md") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def test_commands_are_found_in_blocks_and_spans(tmp_path: Path) -> None:
    """Console `$` lines (continuations joined, comments and output dropped) and inline spans are found; a release name is not a command."""
    found = {(c.args, c.complete) for c in commands(_doc(tmp_path, DOC))}
    assert found == {
        (("plan", "--config", "FILE", "[--server", "URL]"), False),
        (("plan", "--no-such-flag"), False),
        (("check", "a.yaml"), True),
        (("run", "--config", "/c.yaml", "--reconcile-trigger", "5"), True),
    }


def test_wrong_commands_are_refused(tmp_path: Path) -> None:
    """An unknown subcommand, an unknown flag in a fragment and a line the parser refuses are all problems."""
    doc = tmp_path / "x.md"
    assert command_problem(Command(doc, 1, ("plan", "--config", "FILE", "[--server", "URL]"), False)) is None
    assert "--no-such-flag" in (command_problem(Command(doc, 1, ("plan", "--no-such-flag"), False)) or "")
    assert command_problem(Command(doc, 1, ("deploy",), False)) == "no subcommand 'deploy'"
    assert command_problem(Command(doc, 1, ("run", "--reconcile-trigger", "soon"), True)) is not None
    assert (
        command_problem(Command(doc, 1, ("--config", "/c.yaml"), True)) is None
    )  # the upstream form means run


def test_indented_blocks_are_found(tmp_path: Path) -> None:
    """A fenced block indented in a list item is found, with its body dedented and its first line numbered."""
    blocks = fenced_blocks(_doc(tmp_path, DOC))
    assert [(b.language, b.body) for b in blocks][-1] == ("yaml", "a: 1\n")
    assert blocks[-1].line == 16


def test_only_the_unreleased_changelog_section_is_checked(tmp_path: Path) -> None:
    """In CHANGELOG.md only the lines of the Unreleased section are checked; released sections are history."""
    text = "# Changelog\n\n## [Unreleased]\n\n- new\n\n## [0.1.0]\n\n- old\n"
    lines = [line for _, line in checked_lines(_doc(tmp_path, text, "CHANGELOG.md"))]
    assert "- new" in lines and "- old" not in lines


def test_variables_and_metrics_come_from_the_code() -> None:
    """Flags' variables and counters' `_total` samples are known; made-up names are not."""
    assert {"LORA_SYNCER_CONFIG", "LORA_SYNCER_RECONCILE_TRIGGER"} <= variables_read()
    assert "LORA_SYNCER_NO_SUCH_THING" not in variables_read()
    names = metric_names()
    assert {"lora_syncer_reconcile_passes_total", "lora_syncer_server_up"} <= names
    assert "lora_syncer_server_up_total" not in names  # a gauge has no _total sample
