"""The documented commands work as shown: every `python -m hpo.run ... --dry-run` or `--help` in the
shell blocks of README.md and docs/*.md runs for real, from the repository root.

Dry runs write nothing (no storage, database or artifact folder), so they are safe to run here;
real Omniglot comes from ../shared/data/omniglot, decoded once into the usual cache (~5 s).
"""
from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DOCUMENTS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
SHELL_FENCES = {"bash", "sh", "console", "shell", "shell-session"}
FENCE = re.compile(r"^(?P<indent> *)(?P<ticks>`{3,}|~{3,})\s*(?P<info>[^`\s]*)")
# How the docs start the command: the venv's or the PATH's python, or the console script.
PYTHONS = {"python", "python3", ".venv/bin/python", ".venv/bin/python3"}
CONSOLE_SCRIPT = "fewshot-hpo"  # setup.cfg: fewshot-hpo = hpo.run:main, i.e. python -m hpo.run
CHAINING = {"|", "||", "&&", ";", "&", ">", ">>", "<", "(", ")"}
# What a study would create in the working directory; a dry run must create none of them.
RUN_OUTPUTS = ("optuna.db", "mlflow.db", "mlruns", "optuna.journal")
SHARED_OMNIGLOT = REPO.parent / "shared" / "data" / "omniglot"
MIN_COMMANDS = 3


@dataclass(frozen=True)
class DocCommand:
    where: str        # file:line of the command's first line
    text: str         # as shown, continuations joined and comments dropped
    args: list[str]   # what follows `python -m hpo.run`
    env: dict[str, str]

    @property
    def id(self) -> str:
        return f"{self.where} {self.text}"


def shell_blocks(path: Path) -> list[tuple[int, str, list[str]]]:
    """(line number of the block's first line, its info string, its lines) of each fenced shell block."""
    blocks, lines = [], path.read_text().splitlines()
    i = 0
    while i < len(lines):
        opening = FENCE.match(lines[i])
        if opening is None:
            i += 1
            continue
        ticks, info = opening["ticks"], opening["info"].lower()
        body, start = [], i + 2
        i += 1
        while i < len(lines) and not lines[i].strip().startswith(ticks):
            body.append(lines[i])
            i += 1
        i += 1  # the closing fence
        if info in SHELL_FENCES:
            blocks.append((start, info, body))
    return blocks


def logical_lines(block: list[str], console: bool) -> list[tuple[int, str]]:
    """(offset in the block, command) with backslash continuations joined; in console blocks only `$ ` lines."""
    commands, current, first = [], "", 0
    for offset, line in enumerate(block):
        if not current:
            first = offset
            if console:
                if not line.lstrip().startswith("$ "):
                    continue
                line = line.lstrip()[2:]
        if line.rstrip().endswith("\\"):
            current += line.rstrip()[:-1] + " "
            continue
        commands.append((first, current + line))
        current = ""
    if current:
        commands.append((first, current))
    return commands


def tokens(command: str) -> list[str]:
    lexer = shlex.shlex(command, posix=True, punctuation_chars=True)
    lexer.whitespace_split = True  # keep URLs, paths and --flags whole
    return list(lexer)


def hpo_run_args(words: list[str]) -> tuple[dict[str, str], list[str]] | None:
    """(leading VAR=value assignments, arguments) when ``words`` runs ``python -m hpo.run``, else None."""
    env = {}
    while words and re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*=.*", words[0]):
        name, _, value = words.pop(0).partition("=")
        env[name] = value
    if words[:1] == [CONSOLE_SCRIPT]:
        return env, words[1:]
    if len(words) >= 3 and words[0] in PYTHONS and words[1:3] == ["-m", "hpo.run"]:
        return env, words[3:]
    return None


def documented_commands() -> list[DocCommand]:
    found = []
    for path in DOCUMENTS:
        name = path.relative_to(REPO).as_posix()
        for start, info, block in shell_blocks(path):
            for offset, text in logical_lines(block, console=info in ("console", "shell-session")):
                words = tokens(text)
                segments: list[list[str]] = [[]]
                for word in words:
                    if word in CHAINING:
                        segments.append([])
                    else:
                        segments[-1].append(word)
                for segment in segments:
                    parsed = hpo_run_args(list(segment))
                    if parsed is None:
                        continue
                    env, args = parsed
                    if "--dry-run" in args or "--help" in args or "-h" in args:
                        # A pipe or redirection would change what "works as shown" means: keep them out.
                        assert len(segments) == 1, f"{name}:{start + offset}: run a documented hpo.run alone: {text}"
                        found.append(DocCommand(f"{name}:{start + offset}", shlex.join(segment), args, env))
    return found


COMMANDS = documented_commands()


def test_the_docs_show_enough_commands_to_check():
    """Guards against passing vacuously (a renamed file, a changed fence, a parser that finds nothing)."""
    assert len(COMMANDS) >= MIN_COMMANDS, [c.id for c in COMMANDS]
    assert any("--dry-run" in c.args for c in COMMANDS)
    assert any("--help" in c.args or "-h" in c.args for c in COMMANDS)


@pytest.mark.parametrize("command", COMMANDS, ids=[c.id for c in COMMANDS])
def test_documented_command_works(command: DocCommand):
    dry_run = "--dry-run" in command.args
    studies = [arg for arg in command.args if arg.endswith((".yaml", ".yml"))]
    for study in studies:
        assert (REPO / study).is_file(), f"{command.where}: no such study file: {study}"
        if dry_run and "omniglot" in (REPO / study).read_text() and not (SHARED_OMNIGLOT / "images_background.zip").is_file():
            pytest.skip(f"real Omniglot archives not found in {SHARED_OMNIGLOT}")
    before = {name for name in RUN_OUTPUTS if (REPO / name).exists()}
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", **command.env}
    result = subprocess.run([sys.executable, "-m", "hpo.run", *command.args], cwd=REPO, env=env,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, (f"{command.where}: `{command.text}` exited {result.returncode}\n"
                                    f"{result.stdout[-2000:]}\n{result.stderr[-2000:]}")
    if dry_run:
        assert any(line.startswith("study '") for line in result.stdout.splitlines()), result.stdout
        created = {name for name in RUN_OUTPUTS if (REPO / name).exists()} - before
        assert not created, f"{command.where}: a dry run created {sorted(created)}"
    else:
        assert result.stdout.startswith("usage: "), result.stdout
