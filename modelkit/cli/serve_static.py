"""`modelkit serve-static FOLDER`: serve a browser bundle locally (loopback by default)."""
from __future__ import annotations

import click


@click.command("serve-static")
@click.argument("folder", type=click.Path(exists=True, file_okay=False))
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to bind.")
@click.option("--port", default=8000, show_default=True, type=click.IntRange(0, 65535))
@click.option("--allow-remote", is_flag=True, help="Allow binding an address other than loopback.")
def command(folder: str, host: str, port: int, allow_remote: bool) -> None:
    """Serve FOLDER (e.g. a bundle from `modelkit package --for browser`) over HTTP with the right
    MIME types for .mjs and .wasm. Open http://HOST:PORT/index.html in a browser.
    """
    from ..web.server import LOOPBACK, make_server

    if host not in LOOPBACK and not allow_remote:
        raise click.UsageError(f"binding {host} exposes the folder to the network; pass --allow-remote to do so")
    httpd = make_server(folder, host, port)
    click.echo(f"serving {folder} at http://{host}:{httpd.server_address[1]}/index.html (Ctrl-C stops)")
    try:
        httpd.serve_forever()
    except KeyboardInterrupt:
        click.echo("stopped")
    finally:
        httpd.server_close()
