"""docs/cli.md and the click CLI say the same thing.

The test walks click's command tree (not the help text, which wraps and abbreviates): every
command has a ``## `lensd NAME ARGS` `` section whose arguments are spelled as click spells them,
and every option row in that section names an option the command has, with its choices and its
default; nothing is missing and nothing is extra.
"""

from __future__ import annotations

import re
from pathlib import Path

import click
import pytest

from lensd.cli.commands import main

PAGE = Path(__file__).resolve().parent.parent / "docs" / "cli.md"
SECTION = re.compile(r"^## `lensd (\S+)(.*)`$", flags=re.M)
ROW = re.compile(r"^\| `(--[a-z][a-z-]*)( [^`]*)?` \| ([^|]*) \|", flags=re.M)


def sections() -> dict[str, tuple[str, str]]:
    """command name -> (arguments as written in its heading, the section's text)."""
    text = PAGE.read_text()
    found = list(SECTION.finditer(text))
    return {m.group(1): (m.group(2).strip(), text[m.end():found[i + 1].start() if i + 1 < len(found) else None])
            for i, m in enumerate(found)}


def commands() -> dict[str, click.Command]:
    ctx = click.Context(main)
    return {name: main.get_command(ctx, name) for name in main.list_commands(ctx)}  # type: ignore[misc]


def arguments(command: click.Command) -> str:
    """How a command's arguments read in usage: PATH, DIRS..., [EXPRESSION]."""
    words = []
    for param in command.params:
        if isinstance(param, click.Argument):
            word = param.human_readable_name + ("..." if param.nargs == -1 else "")
            words.append(word if param.required else f"[{word}]")
    return " ".join(words)


def options(command: click.Command) -> dict[str, click.Option]:
    return {name: param for param in command.params if isinstance(param, click.Option)
            for name in param.opts if name.startswith("--") and name != "--help"}


def rendered_default(option: click.Option) -> str | None:
    """The text the default cell must contain, or None when the page may word it freely."""
    if option.is_flag:
        return "off" if option.default is False else None
    if option.required or option.default in (None, "") or option.multiple:
        return None  # a required option has no default (click 8.2 shows a sentinel)
    return f"`{option.default}`"


def test_every_command_has_a_section_and_no_section_names_a_missing_one() -> None:
    assert set(sections()) == set(commands())


@pytest.mark.parametrize("name", sorted(commands()))
def test_a_commands_section_matches_its_arguments_and_options(name: str) -> None:
    command = commands()[name]
    heading, body = sections()[name]
    assert heading == arguments(command), f"lensd {name}: the heading says {heading!r}"
    rows = {m.group(1): (m.group(2) or "", m.group(3).strip()) for m in ROW.finditer(body)}
    real = options(command)
    assert set(rows) == set(real), f"lensd {name}: missing {set(real) - set(rows)}, extra {set(rows) - set(real)}"
    for flag, option in real.items():
        spelling, default = rows[flag]
        if isinstance(option.type, click.Choice):
            choices = "[" + "\\|".join(map(str, option.type.choices)) + "]"
            assert spelling.strip() == choices, f"lensd {name} {flag}: choices are {option.type.choices}"
        elif option.is_flag:
            assert spelling == "", f"lensd {name} {flag} is a flag and takes no value"
        else:
            assert spelling.strip(), f"lensd {name} {flag} takes a value; say what kind"
        expected = rendered_default(option)
        if expected is not None:
            assert expected in default, f"lensd {name} {flag}: the default is {expected}, the page says {default!r}"


def test_the_page_mentions_the_group_options() -> None:
    text = PAGE.read_text()
    assert "`lensd --version`" in text and "`--help`" in text
    assert {p.name for p in main.params} == {"version"}  # a new group option needs a line on the page


# --- the docs index and links ------------------------------------------------------------------

ROOT = PAGE.parent.parent
LINK = re.compile(r"\]\(([^)\s]+)\)")
CHECKED_PAGES = ["README.md", "docs/index.md", "docs/quickstart.md", "docs/concepts.md", "docs/cli.md",
                 "docs/operating.md", "docs/security.md", "systemd/README.md"]


def anchors(page: Path) -> set[str]:
    """GitHub's heading anchors: lower case, punctuation dropped, spaces to hyphens."""
    headings = re.findall(r"^#+ (.+)$", page.read_text(), flags=re.M)
    return {re.sub(r"[^\w\- ]", "", h.strip().lower()).replace(" ", "-") for h in headings}


def test_the_index_links_every_page_of_docs() -> None:
    linked = {target.split("#")[0] for target in LINK.findall((ROOT / "docs" / "index.md").read_text())}
    pages = {p.name for p in (ROOT / "docs").glob("*.md")} - {"index.md"}
    assert pages <= linked, f"docs/index.md does not link {sorted(pages - linked)}"
    assert {"performance.md", "reliability.md", "../systemd/README.md", "../slurm/"} <= linked


@pytest.mark.parametrize("name", CHECKED_PAGES)
def test_relative_links_lead_somewhere(name: str) -> None:
    page = ROOT / name
    for target in LINK.findall(page.read_text()):
        if re.match(r"\w+:", target):  # http:, mailto:
            continue
        path, _, anchor = target.partition("#")
        goal = (page.parent / path).resolve() if path else page
        assert goal.exists(), f"{name} links {target}, which does not exist"
        if anchor and goal.suffix == ".md":
            assert anchor in anchors(goal), f"{name} links {target}: no such heading"
