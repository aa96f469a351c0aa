"""`tieragent bureau web`: the evaluators' portal (bureau/web), served by uvicorn.

tieragent bureau web [--db bureau.db | --database-url URL] [--host 127.0.0.1] [--port 8080]
    [--key bureau-key.pem] [--policy P] [--benchmarks B] [--declarations-dir DIR]
    [--secure-cookies]

The database is the one `bureau serve` writes: a SQLite file (--db), or PostgreSQL by URL
(better in TIERAGENT_BUREAU_DATABASE_URL than on the command line; bureau_store.py).

Accounts come first: `tieragent bureau users add --db bureau.db --username U --role admin`.
Put the portal behind an HTTPS reverse proxy (then give --secure-cookies); it listens on
loopback unless --host says otherwise.
"""

from __future__ import annotations

from pathlib import Path

import typer

from bureau.accounts import Accounts
from tieragent.commands.bureau_store import (
    DATABASE_URL_OPTION,
    DB_OPTION,
    database_target,
    describe,
    open_store,
)
from tieragent.console import BENCHMARKS_OPTION, POLICY_OPTION, InvalidInput, handle_errors


@handle_errors
def web_command(
    db: Path | None = DB_OPTION,
    database_url: str | None = DATABASE_URL_OPTION,
    host: str = typer.Option("127.0.0.1", "--host", help="Address to listen on."),
    port: int = typer.Option(8080, "--port", min=1, max=65535, help="Port to listen on."),
    key: Path | None = typer.Option(
        None, "--key", help="The bureau's key: seals downloaded evidence folders (zip)."),
    policy: Path = POLICY_OPTION,
    benchmarks: Path | None = BENCHMARKS_OPTION,
    declarations_dir: Path | None = typer.Option(
        None, "--declarations-dir",
        help="Folder of the factories' declarations, <factory_id>.yaml each."),
    secure_cookies: bool = typer.Option(
        False, "--secure-cookies", help="Mark cookies Secure (the portal is served over HTTPS)."),
) -> None:
    """Serve the web portal: factories, evaluations, reports, evidence downloads, admin."""
    import uvicorn

    from bureau.web import WebSettings, create_app

    for path, what in ((policy, "policy"), (benchmarks, "benchmarks"), (key, "key")):
        if path is not None and not path.is_file():
            raise InvalidInput(f"{path}: the {what} file does not exist.")
    if declarations_dir is not None and not declarations_dir.is_dir():
        raise InvalidInput(f"{declarations_dir}: the declarations folder does not exist.")
    target = database_target(db, database_url)
    # Opened once here: a missing file or an unreachable PostgreSQL is a clear error now,
    # and the schema is migrated before the portal's threads open their own connections.
    store = open_store(db, database_url)
    try:
        if not Accounts(store.db).users():
            where = f"--db {target}" if isinstance(target, Path) else "(the same database)"
            typer.echo(f"No accounts yet: add one with `tieragent bureau users add {where} "
                       "--username NAME --role admin`.", err=True)
    finally:
        store.close()
    settings = WebSettings(db=target, bureau_key=key, policy=policy, benchmarks=benchmarks,
                           declarations_dir=declarations_dir, secure_cookies=secure_cookies)
    app = create_app(settings)
    typer.echo(f"Bureau portal on http://{host}:{port}/ (database {describe(target)}).",
               err=True)
    uvicorn.run(app, host=host, port=port, log_level="info", server_header=False)


def register(app: typer.Typer) -> None:
    """Add `web` to the `tieragent bureau` app."""
    app.command("web")(web_command)
