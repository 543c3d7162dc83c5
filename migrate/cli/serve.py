"""``mailmigrate serve ARCHIVE``: the read-only viewer (or Datasette) on a local port.

A thin layer: it checks where it may listen and with which token, opens the
archive through :mod:`migrate.archive.catalog` (upgrading an older archive
once, as every command does), and hands the application of
:mod:`migrate.web.app` to uvicorn on a socket it bound itself, so the port it
prints is the port it serves (``--port 0`` picks a free one).
"""

from __future__ import annotations

import importlib.util
import ipaddress
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Annotated, Any

import typer

from migrate.cli.common import FormatOpt, app, run_guarded
from migrate.errors import EXIT_OK, UsageError

EXTRA_HINT = "pip install 'mailmigrate[serve]'"


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def read_token(env: str | None, path: Path | None) -> str | None:
    """The access token from --token-env or --token-file (never from argv)."""
    if env and path:
        raise UsageError("give the access token once: --token-env or --token-file")
    if env:
        value = os.environ.get(env, "").strip()
        if not value:
            raise UsageError(f"environment variable {env} (from --token-env) is empty or unset")
        return value
    if path:
        try:
            value = path.expanduser().read_text(encoding="utf-8").splitlines()[0].strip()
        except (OSError, IndexError, UnicodeDecodeError) as exc:
            raise UsageError(f"cannot read the access token from {path}: {exc}") from None
        if not value:
            raise UsageError(f"{path} (from --token-file) holds no token on its first line")
        return value
    return None


def listen(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host.strip("[]"), port))
        sock.listen(128)
    except OSError as exc:
        sock.close()
        raise UsageError(f"cannot listen on {host}:{port} ({exc.strerror}); choose another "
                         "--port or --host") from None
    return sock


def _url(host: str, port: int) -> str:
    return f"http://{'[' + host + ']' if ':' in host else host}:{port}/"


LOG_CONFIG: dict[str, Any] = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"access": {"format": "%(asctime)s %(message)s"}},
    "handlers": {"stderr": {"class": "logging.StreamHandler", "stream": "ext://sys.stderr",
                            "formatter": "access"}},
    "loggers": {"uvicorn.error": {"handlers": ["stderr"], "level": "WARNING"},
                "uvicorn.access": {"handlers": ["stderr"], "level": "INFO", "propagate": False}},
}


def run_viewer(archive: str, fmt: str | None, host: str, port: int, token: str | None) -> None:
    try:
        import uvicorn

        from migrate.web.app import LOOPBACK_HOSTS, create_app
    except ImportError as exc:
        raise UsageError(f"serve needs the optional web viewer ({exc.name} is missing): "
                         f"{EXTRA_HINT}") from None
    from migrate.archive.catalog import open_catalog

    catalog = open_catalog(archive, fmt)
    try:
        sock = listen(host, port)
        web = create_app(catalog, token=token,
                         allowed_hosts=LOOPBACK_HOSTS if is_loopback(host) else ["*"])
        bound = sock.getsockname()[1]
        how = " (give the access token on the first page)" if token else ""
        typer.echo(f"mailmigrate: serving {archive} read-only at {_url(host, bound)}{how}; "
                   "Ctrl-C stops", err=True)
        config = uvicorn.Config(web, log_config=LOG_CONFIG, lifespan="off", server_header=False)
        uvicorn.Server(config).run(sockets=[sock])
    finally:
        catalog.close()


def run_datasette(archive: str, fmt: str | None, host: str, port: int) -> None:
    from migrate.archive.catalog import open_catalog
    from migrate.web.datasette import metadata

    path = Path(archive).expanduser()
    open_catalog(archive, fmt).close()  # checks the archive; upgrades an older one once
    if (fmt or "sqlite") != "sqlite" or path.is_dir():
        raise UsageError("--datasette reads SQLite archives; serve an mbox tree without it")
    if importlib.util.find_spec("datasette") is None:
        raise UsageError("--datasette needs Datasette: pip install 'mailmigrate[datasette]'")
    if port == 0:  # Datasette binds itself: find it a free port first
        probe = listen(host, 0)
        port = probe.getsockname()[1]
        probe.close()
    with tempfile.TemporaryDirectory(prefix="mailmigrate-datasette-") as tmp:
        meta = Path(tmp) / "metadata.json"
        meta.write_text(json.dumps(metadata(path.stem)), encoding="utf-8")
        typer.echo(f"mailmigrate: Datasette on {archive} (read-only) at {_url(host, port)}; "
                   "Ctrl-C stops", err=True)
        code = _run_child([sys.executable, "-m", "datasette", "serve", str(path),
                           "--metadata", str(meta), "--host", host, "--port", str(port)])
    if code not in (0, 130, 143, -signal.SIGINT, -signal.SIGTERM):
        raise UsageError(f"datasette stopped with exit code {code}")


def _run_child(args: list[str]) -> int:
    """Run Datasette until it ends, or until we are told to stop.

    Ctrl-C reaches the whole process group, but SIGTERM or SIGHUP (``kill``, systemd,
    a closed SSH session) reach only us: pass them on and wait, so no Datasette is
    left serving the archive after ``mailmigrate serve`` is gone.
    """
    child = subprocess.Popen(args, stdin=subprocess.DEVNULL)

    def forward(signum: int, _frame: object) -> None:
        child.send_signal(signum)

    previous = {sig: signal.signal(sig, forward) for sig in (signal.SIGTERM, signal.SIGHUP)}
    try:
        try:
            return child.wait()
        except KeyboardInterrupt:  # the child had its SIGINT too: give it time to finish
            try:
                return child.wait(timeout=10)
            except (subprocess.TimeoutExpired, KeyboardInterrupt):
                return 130
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        if child.poll() is None:
            child.terminate()
            try:
                child.wait(timeout=10)
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait()


@app.command("serve")
def serve_cmd(
    archive: Annotated[str, typer.Argument(help="A SQLite archive or an mbox tree.")],
    host: Annotated[str, typer.Option(
        help="Address to listen on; anything but loopback needs an access token.")
    ] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on (0: any free port).")] = 8025,
    token_env: Annotated[str | None, typer.Option(
        "--token-env", metavar="VAR", help="Read the access token from this variable.")] = None,
    token_file: Annotated[Path | None, typer.Option(
        "--token-file", metavar="PATH", help="Read the access token from this file.")] = None,
    datasette: Annotated[bool, typer.Option(
        "--datasette", help="Serve with Datasette instead (SQLite archives; loopback only).")
    ] = False,
    datasette_metadata: Annotated[bool, typer.Option(
        "--datasette-metadata",
        help="Print Datasette metadata for ARCHIVE (for `datasette ARCHIVE --metadata`).")
    ] = False,
    archive_format: FormatOpt = None,
) -> None:
    """Browse an archive in a web browser: folders, messages, search, attachments (read-only)."""

    def body() -> int:
        if not 0 <= port <= 65535:
            raise UsageError(f"--port {port} is not a port (0-65535)")
        if datasette_metadata:
            from migrate.web.datasette import metadata

            typer.echo(json.dumps(metadata(Path(archive).stem), indent=2, ensure_ascii=False))
            return EXIT_OK
        token = read_token(token_env, token_file)
        if datasette:
            if token or not is_loopback(host):
                raise UsageError("--datasette has no access token here: serve it on loopback "
                                 "(the default) and reach it through an SSH tunnel")
            run_datasette(archive, archive_format, host, port)
            return EXIT_OK
        if token is None and not is_loopback(host):
            raise UsageError(f"serving on {host} (not loopback) needs an access token: "
                             "--token-env VAR or --token-file PATH")
        run_viewer(archive, archive_format, host, port, token)
        return EXIT_OK

    run_guarded(body)
