"""A static file server for bundles, bound to loopback unless told otherwise."""
from __future__ import annotations

import contextlib
import functools
import http.server
import threading
from pathlib import Path
from typing import Iterator

LOOPBACK = ("127.0.0.1", "::1", "localhost")


class _Handler(http.server.SimpleHTTPRequestHandler):
    extensions_map = {**http.server.SimpleHTTPRequestHandler.extensions_map,
                      ".mjs": "text/javascript", ".js": "text/javascript", ".wasm": "application/wasm",
                      ".onnx": "application/octet-stream", ".json": "application/json"}

    def log_message(self, format: str, *args: object) -> None:  # keep test and CLI output clean
        return


def make_server(folder: str | Path, host: str = "127.0.0.1", port: int = 0) -> http.server.ThreadingHTTPServer:
    handler = functools.partial(_Handler, directory=str(folder))
    return http.server.ThreadingHTTPServer((host, port), handler)


@contextlib.contextmanager
def serving(folder: str | Path) -> Iterator[str]:
    """Serve `folder` on a free loopback port in a thread; yield its base URL."""
    httpd = make_server(folder)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=5)
