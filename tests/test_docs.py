"""The documentation stays true to the code.

Rule ids: every key of ``RULES`` is documented in ``docs/format.md`` and listed once in the README's error
table; every rule id either document names exists; every rule id the code raises exists, and every one that
exists is raised. Paths: every repository path the documents name exists. Commands: every
``ingest-pipeline <command>`` they mention is a command of the CLI, and every command's help has examples
(the meta-test sqlite-utils keeps for its own CLI).
"""

from __future__ import annotations

import ast
import re
from collections import Counter
from pathlib import Path

import pytest
from click.testing import CliRunner

from cli import cli
from pipeline.ingestion.rules import RULES

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"
FORMAT = REPO / "docs" / "format.md"
DOCUMENTS = [README, FORMAT]
PACKAGE = REPO / "pipeline"

AREAS = sorted({rule.partition(".")[0] for rule in RULES})
# A rule id as the documents write it: in backticks, alone, in the one dialect ``area.rule``.
DOCUMENTED_ID = re.compile(rf"`((?:{'|'.join(AREAS)})\.[a-z0-9_]+)`")
RULE_SHAPED = re.compile(rf"(?:{'|'.join(AREAS)})\.[a-z0-9_]+")
COMMAND_MENTION = re.compile(r"\bingest-pipeline +([a-z][a-z0-9-]*)")
# Repository paths as the documents write them, in backticks; the README names `pipeline/ingest/` on purpose,
# to say why no package has that name.
REPO_PATH = re.compile(r"`((?:pipeline|tests|schemas|docs|benchmarks|examples)/[^`\s*]*)`")
NOT_A_PATH = {"pipeline/ingest/"}


def _read(path: Path) -> str:
    return path.read_text(encoding="utf-8")


def _section(text: str, heading: str) -> str:
    """The text of one ``##``/``###`` section of a Markdown file, up to the next heading of any level."""
    start = text.index(heading)
    following = re.compile(r"^#{1,6} ", re.M).search(text, start + len(heading))
    return text[start : following.start() if following else len(text)]


def _error_table_ids() -> list[str]:
    """The first cell of each row of the README's rule table (the one headed ``| Rule |``), unwrapped."""
    section = _section(_read(README), "## Errors")
    ids: list[str] = []
    in_table = False
    for line in section.splitlines():
        if line.startswith("| Rule |"):
            assert not in_table and not ids, "the Errors section has more than one rule table"
            in_table = True
            continue
        if in_table and not line.startswith("|"):
            break
        if in_table and not line.startswith("|---"):
            cell = line.split("|")[1].strip()
            match = re.fullmatch(r"`([^`]+)`", cell)
            assert match, f"a row of the error table does not start with a `rule.id`: {line!r}"
            ids.append(match.group(1))
    assert ids, "the README's Errors section has no table headed '| Rule |'"
    return ids


def _is_invalid_episode(call: ast.Call) -> bool:
    func = call.func
    return (isinstance(func, ast.Name) and func.id == "InvalidEpisode") or (
        isinstance(func, ast.Attribute) and func.attr == "InvalidEpisode"
    )


def _rule_argument(call: ast.Call) -> ast.expr | None:
    if call.args:
        return call.args[0]
    return next((keyword.value for keyword in call.keywords if keyword.arg == "rule"), None)


def _is_rules_table(node: ast.AST) -> bool:
    targets = node.targets if isinstance(node, ast.Assign) else [node.target] if isinstance(node, ast.AnnAssign) else []
    return any(isinstance(target, ast.Name) and target.id == "RULES" for target in targets)


def _raised_rules() -> tuple[dict[str, list[str]], dict[str, list[str]]]:
    """Rule ids the code raises: exact ids, and patterns for ids built with f-strings; each with its places.

    A rule picked from a table of constants (as the parse errors are) reaches ``InvalidEpisode`` through
    a variable, so every rule-shaped string constant in the package counts as raised too, except the keys
    of ``RULES`` itself.
    """
    exact: dict[str, list[str]] = {}
    patterns: dict[str, list[str]] = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        tree = ast.parse(_read(path), filename=str(path))
        skip: set[int] = set()
        for node in ast.walk(tree):
            if _is_rules_table(node):
                skip.update(id(child) for child in ast.walk(node))
        for node in ast.walk(tree):
            where = f"{path.relative_to(REPO)}:{getattr(node, 'lineno', '?')}"
            if isinstance(node, ast.Call) and _is_invalid_episode(node):
                rule = _rule_argument(node)
                if isinstance(rule, ast.Constant) and isinstance(rule.value, str):
                    exact.setdefault(rule.value, []).append(where)
                elif isinstance(rule, ast.JoinedStr):
                    pattern = "".join(
                        re.escape(str(part.value)) if isinstance(part, ast.Constant) else "[a-z0-9_]+"
                        for part in rule.values
                    )
                    patterns.setdefault(pattern, []).append(where)
            elif (isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in skip
                  and RULE_SHAPED.fullmatch(node.value)):
                exact.setdefault(node.value, []).append(where)
    return exact, patterns


# -- rule ids ---------------------------------------------------------------------------------


def test_every_rule_is_documented_in_the_format_page() -> None:
    text = _read(FORMAT)
    missing = [rule for rule in RULES if f"`{rule}`" not in text]
    assert not missing, f"docs/format.md does not state these rules: {missing}"


def test_the_readme_error_table_lists_every_rule_exactly_once() -> None:
    counts = Counter(_error_table_ids())
    assert sorted(set(RULES) - set(counts)) == [], "rules missing from the README's error table"
    assert sorted(set(counts) - set(RULES)) == [], "ids in the README's error table that are not rules"
    assert {rule: n for rule, n in counts.items() if n > 1} == {}, "rules listed more than once"


@pytest.mark.parametrize("path", DOCUMENTS, ids=lambda path: path.name)
def test_every_rule_id_a_document_names_exists(path: Path) -> None:
    named = set(DOCUMENTED_ID.findall(_read(path)))
    assert named, f"{path.name} names no rule id at all: the pattern no longer matches how ids are written"
    assert sorted(named - set(RULES)) == [], f"{path.name} names rule ids that pipeline.ingestion.rules.RULES lacks"


def test_every_rule_id_the_code_raises_exists() -> None:
    exact, patterns = _raised_rules()
    unknown = {rule: places for rule, places in exact.items() if rule not in RULES}
    assert unknown == {}, "rule ids raised (or kept for raising) that RULES does not list"
    for pattern, places in patterns.items():
        assert any(re.fullmatch(pattern, rule) for rule in RULES), f"no rule fits f-string {pattern!r} at {places}"


def test_every_rule_is_raised_somewhere() -> None:
    exact, patterns = _raised_rules()
    raised = set(exact) | {rule for rule in RULES for pattern in patterns if re.fullmatch(pattern, rule)}
    assert sorted(set(RULES) - raised) == [], "rules that no code raises: document them as dead, or remove them"


# -- links and commands -----------------------------------------------------------------------


@pytest.mark.parametrize("path", DOCUMENTS, ids=lambda path: path.name)
def test_documents_do_not_point_outside_the_repository(path: Path) -> None:
    assert "../shared" not in _read(path), f"{path.name} points at ../shared, which a user's clone does not have"


@pytest.mark.parametrize("path", DOCUMENTS, ids=lambda path: path.name)
def test_every_repository_path_a_document_names_exists(path: Path) -> None:
    named = set(REPO_PATH.findall(_read(path))) - NOT_A_PATH
    assert named, f"{path.name}: the path pattern found no path at all"
    assert sorted(name for name in named if not (REPO / name).exists()) == [], f"{path.name} names paths that moved"


def test_the_readme_points_at_the_format_page() -> None:
    assert "docs/format.md" in _read(README)


@pytest.mark.parametrize("path", DOCUMENTS, ids=lambda path: path.name)
def test_every_command_a_document_names_exists(path: Path) -> None:
    named = set(COMMAND_MENTION.findall(_read(path)))
    assert "run" in named, f"{path.name}: the command pattern found no `ingest-pipeline run`"
    assert sorted(named - set(cli.commands)) == [], f"{path.name} names commands the CLI does not have"


def _example_lines(help_text: str) -> list[str]:
    """The lines of the help's ``Examples:`` block, as written."""
    return [line.strip() for line in help_text.split("Examples:", 1)[1].splitlines() if line.strip()]


def _example_commands(lines: list[str]) -> list[str]:
    """The example command lines, a line ending in a backslash joined with the next."""
    commands: list[str] = []
    for line in lines:
        if commands and commands[-1].endswith("\\"):
            commands[-1] = commands[-1][:-1] + line
        else:
            commands.append(line)
    return commands


@pytest.mark.parametrize("name", sorted(cli.commands))
def test_every_command_has_help_with_examples(name: str) -> None:
    help_text = cli.commands[name].help or ""
    summary = help_text.strip().splitlines()[0] if help_text.strip() else ""
    assert summary.endswith("."), f"{name}: help must start with a one-line summary, found {summary!r}"
    assert re.search(r"\x08\s*Examples:", help_text), f"{name}: help needs an 'Examples:' block after a \\b line"
    lines = _example_lines(help_text)
    commands = _example_commands(lines)
    assert commands, f"{name}: the Examples block is empty"
    strays = [command for command in commands if not command.startswith(f"ingest-pipeline {name}")]
    assert strays == [], f"{name}: every example must run `ingest-pipeline {name}`"
    # Rendered as written: the \b line keeps click from re-wrapping the examples into one paragraph.
    result = CliRunner().invoke(cli, [name, "--help"], terminal_width=200)
    assert result.exit_code == 0, result.output
    shown = {line.strip() for line in result.output.splitlines()}
    assert sorted(set(lines) - shown) == [], f"{name}: --help does not show the examples line by line"


def test_the_group_help_has_examples_of_real_commands() -> None:
    help_text = cli.help or ""
    assert "Examples:" in help_text, "the top-level --help has no examples"
    named = {match for line in _example_lines(help_text) for match in COMMAND_MENTION.findall(line)}
    assert named, "the top-level examples run no command"
    assert sorted(named - set(cli.commands)) == [], "the top-level examples name commands the CLI does not have"
