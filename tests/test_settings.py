"""The daemon's start options are declared once (``Settings``): the click options of ``lensd start``
and the argument list a background start hands its foreground child are generated from it, so a
setting survives the trip through that argument list, and every option reaches ``Settings``."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import click

from lensd import settings as config
from lensd.cli.commands import main, settings_from


def parsed(argv: list[str]) -> config.Settings:
    command = main.get_command(click.Context(main), "start")
    assert command is not None
    with command.make_context("start", argv) as context:
        given: dict[str, Any] = dict(context.params)
    given.pop("log_level")
    return settings_from(given)


def test_every_start_option_is_a_settings_field_and_a_click_option() -> None:
    command = main.get_command(click.Context(main), "start")
    assert command is not None
    flags = {opt for param in command.params for opt in param.opts}
    declared = list(config.start_options())
    assert {option.flag for option in declared} <= flags
    assert flags - {option.flag for option in declared} == {"--log-level"}
    assert {option.name for option in declared} <= {item.name for item in dataclasses.fields(config.Settings)}


def test_settings_survive_the_start_argument_list(tmp_path: Path) -> None:
    changed = config.Settings(
        db=tmp_path / "a.sqlite", socket=tmp_path / "a.sock", watch=(tmp_path / "w1", tmp_path / "w2"),
        spool=tmp_path / "spool", poll=True, poll_interval=0.5, lost_after=42.0, durability="normal",
        batch_max=7, batch_ms=0.25, max_connections=9, handshake_timeout=3.5, max_db_mb=11,
        drain_timeout=2.5)
    assert parsed(config.start_arguments(changed)) == changed


def test_defaults_survive_the_start_argument_list(tmp_path: Path) -> None:
    plain = config.Settings(db=tmp_path / "b.sqlite", socket=tmp_path / "b.sock")
    assert parsed(config.start_arguments(plain)) == plain
    assert "--poll" not in config.start_arguments(plain)
    assert "--max-db-mb" not in config.start_arguments(plain)
