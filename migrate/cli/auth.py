"""``auth``: sign in once with OAuth2 (login, list, logout, token), and admin services.

The work is in :mod:`migrate.config.oauth`; this module parses and prints.
Prompts, URLs and codes go to stderr, data (``auth token``, ``--json``) to stdout;
``--json`` is the envelope every command prints (docs/json.md).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Annotated

import typer

from migrate.cli.common import CafileOpt, JsonOpt, LogFileOpt, Outcome, app, run_guarded
from migrate.errors import EXIT_OK, UsageError

auth_app = typer.Typer(help="OAuth2: sign in once (login, list, logout, token); admin services.",
                       no_args_is_help=True)
service_app = typer.Typer(help="Admin grants for a whole domain: Google service accounts, "
                          "Microsoft 365 app-only access.", no_args_is_help=True)
auth_app.add_typer(service_app, name="service")
app.add_typer(auth_app, name="auth")

AddressArg = Annotated[str, typer.Argument(help="The e-mail address to sign in, e.g. me@outlook.com.")]
ScopeOpt = Annotated[list[str] | None, typer.Option(
    "--scope", metavar="SCOPE", help="Ask for this scope instead of the preset's (repeatable).")]


def _say(text: str) -> None:
    typer.echo(f"mailmigrate: {text}", err=True)


def _has_desktop() -> bool:
    """Open a browser only where one shows up as a window: on a server, a console
    browser (lynx, w3m) would take the terminal over."""
    return sys.platform in ("darwin", "win32") or bool(
        os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))


@auth_app.command("login")
def login(
    address: AddressArg,
    provider: Annotated[str | None, typer.Option(
        "--provider", metavar="ID", help="Provider preset (default: the one for the address's domain).")
                        ] = None,
    client_id: Annotated[str | None, typer.Option(
        "--client-id", metavar="ID", help="OAuth2 client ID (default: the preset's).")] = None,
    client_secret_file: Annotated[Path | None, typer.Option(
        "--client-secret-file", metavar="PATH",
        help="A file (mode 0600) with the client secret, for clients that have one (Google desktop apps).")
                                  ] = None,
    flow: Annotated[str | None, typer.Option(
        "--flow", help="device (print a code) or code (browser and loopback redirect); "
        "default: the preset's.")] = None,
    scope: ScopeOpt = None,
    tenant: Annotated[str | None, typer.Option(
        "--tenant", metavar="TENANT",
        help="Microsoft 365: sign in at this tenant (id or contoso.onmicrosoft.com), for an app "
        "registered for one organization.")] = None,
    cafile: CafileOpt = None,
    no_browser: Annotated[bool, typer.Option(
        "--no-browser", help="Only print the sign-in URL; do not open a browser.")] = False,
    as_json: JsonOpt = False,
    log_file: LogFileOpt = None,
) -> None:
    """Sign ADDRESS in with OAuth2 once; backup, copy, restore, drain, verify and jobs then
    use and refresh its token by themselves."""

    def body() -> Outcome:
        from migrate.config.oauth.account import sign_in

        grant = sign_in(address, provider_id=provider, client_id=client_id,
                        client_secret_file=client_secret_file, scopes=tuple(scope or ()),
                        flow=flow, cafile=str(cafile) if cafile else None, tenant=tenant,
                        show=_say, warn=_say,
                        open_browser=not no_browser and _has_desktop())
        if not as_json:
            where = "the system keyring" if grant.store == "keyring" else "a 0600 file"
            typer.echo(f"Signed in {grant.address} ({grant.provider}); the refresh token is in "
                       f"{where}. Commands for this address now log in with OAuth2 by themselves.")
        return Outcome(EXIT_OK, {"address": grant.address, "provider": grant.provider,
                                 "store": grant.store})

    run_guarded(body, command="auth login", as_json=as_json, log_file=log_file)


@auth_app.command("list")
def list_(as_json: JsonOpt = False, log_file: LogFileOpt = None) -> None:
    """List the signed-in addresses (never a token)."""

    def body() -> Outcome:
        from migrate.config.oauth.store import list_grants

        grants = list_grants()
        if not as_json:
            if not grants:
                typer.echo("nobody signed in yet; sign in with `mailmigrate auth login ADDRESS`")
            for g in grants:
                typer.echo(f"{g.address}  {g.provider}  {g.store}  signed in {g.signed_in}")
        return Outcome(EXIT_OK, {"sign_ins": [
            {"address": g.address, "provider": g.provider, "store": g.store,
             "client_id": g.client_id, "scopes": g.scopes, "signed_in": g.signed_in}
            for g in grants]})

    run_guarded(body, command="auth list", as_json=as_json, log_file=log_file)


@auth_app.command("logout")
def logout(
    address: AddressArg,
    no_revoke: Annotated[bool, typer.Option(
        "--no-revoke", help="Only forget it here; do not ask the provider to revoke it.")] = False,
) -> None:
    """Forget a sign-in (and revoke it at the provider where it offers that)."""

    def body() -> int:
        from migrate.config.oauth.account import sign_out

        grant = sign_out(address, revoke=not no_revoke, warn=_say)
        typer.echo(f"signed out {grant.address}")
        return EXIT_OK

    run_guarded(body)


@auth_app.command("token")
def token(
    address: AddressArg,
    service: Annotated[str | None, typer.Option(
        "--service", metavar="NAME", help="The admin service acting for ADDRESS.")] = None,
    as_json: JsonOpt = False,
    log_file: LogFileOpt = None,
) -> None:
    """Print a fresh access token for ADDRESS, for scripts (with --json as
    --oauth2-token-command reads it). It is a secret: keep it out of logs."""

    def body() -> Outcome:
        from migrate.config.oauth.account import access_token

        value, lifetime = access_token(address, service=service)
        if not as_json:
            typer.echo(value)
        # access_token and expires_in at the top level of the envelope: the shape of an
        # OAuth2 token response, which --oauth2-token-command reads
        fields: dict[str, object] = {"access_token": value, "token_type": "Bearer"}
        if lifetime is not None:
            fields["expires_in"] = int(lifetime)
        return Outcome(EXIT_OK, fields)

    run_guarded(body, command="auth token", as_json=as_json, log_file=log_file)


# -- admin services -----------------------------------------------------------------
@service_app.command("add")
def service_add(
    name: Annotated[str, typer.Argument(help="A name for it (letters, digits, . _ -).")],
    google_key: Annotated[Path | None, typer.Option(
        "--google-key", metavar="FILE",
        help="Google Workspace: the service account's JSON key (mode 0600), with domain-wide delegation.")
                          ] = None,
    client_id: Annotated[str | None, typer.Option(
        "--client-id", metavar="ID", help="Microsoft 365: the app's Application (client) ID.")] = None,
    tenant: Annotated[str | None, typer.Option(
        "--tenant", metavar="TENANT", help="Microsoft 365: the tenant id or contoso.onmicrosoft.com.")
                      ] = None,
    client_secret_file: Annotated[Path | None, typer.Option(
        "--client-secret-file", metavar="PATH", help="Microsoft 365: a file (mode 0600) with the secret.")
                                  ] = None,
    client_secret_stdin: Annotated[bool, typer.Option(
        "--client-secret-stdin", help="Microsoft 365: read the secret from stdin into the system keyring.")
                                   ] = False,
    token_url: Annotated[str | None, typer.Option(
        "--token-url", metavar="URL", help="Another token endpoint (a self-hosted identity provider).")
                         ] = None,
    scope: ScopeOpt = None,
    cafile: CafileOpt = None,
    test: Annotated[str | None, typer.Option(
        "--test", metavar="MAILBOX", help="Get a token for this mailbox before saving.")] = None,
    force: Annotated[bool, typer.Option("--force", help="Replace an existing service.")] = False,
) -> None:
    """Configure an admin grant once; jobs and ledgers name it as oauth2-service:NAME."""

    def body() -> int:
        from migrate.config.oauth.service import (
            ServiceTokens,
            google_service,
            microsoft_service,
            save_service,
        )

        if (google_key is None) == (client_id is None):
            raise UsageError("give --google-key FILE (Google Workspace) or --client-id ID "
                             "(Microsoft 365), one of the two")
        ca = str(cafile.expanduser().resolve()) if cafile else None
        secret = None
        if google_key is not None:
            svc = google_service(name, google_key, scopes=tuple(scope or ()), token_url=token_url,
                                 cafile=ca)
        else:
            if client_secret_stdin:
                secret = sys.stdin.readline().strip()
                if not secret:
                    raise UsageError("--client-secret-stdin: no secret on stdin")
            svc = microsoft_service(name, str(client_id), tenant=tenant, token_url=token_url,
                                    secret_file=client_secret_file,
                                    secret_in_keyring=client_secret_stdin,
                                    scopes=tuple(scope or ()), cafile=ca)
        svc.validate()
        if test and secret is None:
            ServiceTokens(svc).token(test)
            typer.echo(f"Token OK for {test}")
        path = save_service(svc, overwrite=force, secret=secret)
        if test and secret is not None:
            ServiceTokens(svc).token(test)
            typer.echo(f"Token OK for {test}")
        typer.echo(f"Saved OAuth2 service {name!r} to {path}; name it as oauth2-service:{name} "
                   f"(jobs add --oauth2-service {name})")
        return EXIT_OK

    run_guarded(body)


@service_app.command("list")
def service_list(as_json: JsonOpt = False, log_file: LogFileOpt = None) -> None:
    """List the admin services (ids and paths; secrets stay where they are)."""

    def body() -> Outcome:
        from migrate.config.oauth.service import list_services

        services = list_services()
        if not as_json:
            if not services:
                typer.echo("no services yet; add one with `mailmigrate auth service add NAME`")
            for s in services:
                typer.echo(f"{s.name}  {s.kind}  {s.token_url}  {' '.join(s.scopes)}")
        return Outcome(EXIT_OK, {"services": [
            {"name": s.name, "kind": s.kind, "token_url": s.token_url, "scopes": s.scopes,
             "key_file": s.key_file, "client_id": s.client_id} for s in services]})

    run_guarded(body, command="auth service list", as_json=as_json, log_file=log_file)


@service_app.command("remove")
def service_remove(name: Annotated[str, typer.Argument(help="The service.")]) -> None:
    """Delete an admin service's configuration (the key file itself stays)."""

    def body() -> int:
        from migrate.config.oauth.service import remove_service

        remove_service(name)
        typer.echo(f"removed OAuth2 service {name!r}")
        return EXIT_OK

    run_guarded(body)
