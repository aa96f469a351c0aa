"""What every `tieragent` command does the same way with a user's configuration file."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console

from agent.config import ConfigError, FactoryConfig, load_config

EXIT_INVALID = 2
err_console = Console(stderr=True, soft_wrap=True)


def print_config_error(error: ConfigError) -> None:
    err_console.print(f"[bold red]Invalid configuration[/] ({len(error.problems)} problem(s)):")
    for problem in error.problems:
        err_console.print(
            f"  {problem.file}: [bold]{problem.key}[/]: {problem.message}", highlight=False
        )


def load_config_or_exit(path: Path) -> FactoryConfig:
    """The validated configuration, or every problem printed and exit code 2."""
    try:
        return load_config(path)
    except ConfigError as error:
        print_config_error(error)
        raise typer.Exit(EXIT_INVALID) from None
