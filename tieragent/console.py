"""What every `tieragent` command does the same way: print errors and exit with their code.

Each command function is decorated with `@handle_errors`. An error raised on purpose below it
is printed once on stderr and ends the command with the error's exit code:

- a `TieragentError` (wire contract, agent, bureau, or `InvalidInput`/`RunFailed` raised by a
  command itself): `Error: <sentence>`, exit `error.exit_code` — 2 for a mistake in what the
  user gave, 1 for a run or a verification that failed;
- an invalid configuration or simulator factory file: every problem with its key, exit 2;
- the user-facing errors of the libraries that import nothing of ours (policy files,
  connectors) and OSError (a file or folder that cannot be read or written): `Error: …`, exit 2.

Anything else is a bug and keeps its traceback. Ctrl-C exits 130 (Typer does that).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import ParamSpec, TypeVar

import typer
from rich.console import Console
from rich.text import Text

from agent.config import ConfigError
from agent.protocol.errors import TieragentError
from connectors.errors import ConnectorError
from indicators.policy import DEFAULT_POLICY, PolicyFileError
from simulator.model import FactoryError

EXIT_FAILED = 1
EXIT_INVALID = TieragentError.exit_code
err_console = Console(stderr=True, soft_wrap=True)

# Everything `handle_errors` prints and maps; other exceptions propagate.
USER_ERRORS: tuple[type[Exception], ...] = (
    TieragentError,
    FactoryError,
    PolicyFileError,
    ConnectorError,
    OSError,
)

P = ParamSpec("P")
R = TypeVar("R")


class InvalidInput(TieragentError):
    """A mistake the command itself finds in its options or files (exit 2)."""


class RunFailed(TieragentError):
    """The command ran and did not succeed (exit 1)."""

    exit_code = EXIT_FAILED


def print_error(message: str) -> None:
    err_console.print(Text.assemble(("Error:", "bold red"), " ", message))


def print_verification(problems: Sequence[str], checked: str) -> None:
    """A verification's outcome: `FAIL` and every problem, a summary; exit 1 on any problem."""
    for problem in problems:
        typer.echo(f"FAIL {problem}")
    typer.echo(f"{checked} checked: {f'{len(problems)} problem(s)' if problems else 'OK'}.")
    if problems:
        raise typer.Exit(EXIT_FAILED)


def print_config_error(error: ConfigError) -> None:
    err_console.print(f"[bold red]Invalid configuration[/] ({len(error.problems)} problem(s)):")
    for problem in error.problems:
        # Text, not markup: a message such as "give [min, max]" must print as written.
        err_console.print(Text.assemble(
            f"  {problem.file}: ", (problem.key, "bold"), f": {problem.message}"
        ), highlight=False)


def report_error(error: Exception) -> int:
    """Print one of `USER_ERRORS` for the user; return the exit code it calls for."""
    if isinstance(error, ConfigError):
        print_config_error(error)
    elif isinstance(error, FactoryError):
        err_console.print(f"[bold red]Invalid factory[/] ({len(error.problems)} problem(s)):")
        for problem in error.problems:
            err_console.print(f"  {problem}", highlight=False, markup=False)
    else:
        print_error(str(error))
    return error.exit_code if isinstance(error, TieragentError) else EXIT_INVALID


def handle_errors(command: Callable[P, R]) -> Callable[P, R]:
    """Decorate a command (before registering it): print `USER_ERRORS` and exit with their code."""
    return _handled(command, failures=())


def handle_errors_failing_on(
    *failures: type[Exception],
) -> Callable[[Callable[P, R]], Callable[P, R]]:
    """`handle_errors` for a command in which `failures` mean the run failed (exit 1, not 2)."""

    def decorate(command: Callable[P, R]) -> Callable[P, R]:
        return _handled(command, failures)

    return decorate


def _handled(command: Callable[P, R], failures: tuple[type[Exception], ...]) -> Callable[P, R]:
    @functools.wraps(command)
    def run(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return command(*args, **kwargs)
        except failures as error:
            print_error(str(error))
            raise typer.Exit(EXIT_FAILED) from None
        except USER_ERRORS as error:
            raise typer.Exit(report_error(error)) from None

    return run


# The tier-policy inputs, the same on the agent's and the bureau's commands. No example file is
# a default: benchmarks and declarations are the factory's own or absent.
POLICY_OPTION = typer.Option(DEFAULT_POLICY, "--policy", help="Tier policy YAML.")
BENCHMARKS_OPTION = typer.Option(
    None,
    "--benchmarks",
    help="Industry benchmarks YAML (none: benchmark conditions are insufficient_data).",
)
DECLARATIONS_OPTION = typer.Option(
    None,
    "--declarations",
    help="The factory's own declarations YAML (none: declared conditions are not_declared).",
)
