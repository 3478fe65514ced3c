"""The browser pages (static files) and the front-end packages installed from npm."""

from __future__ import annotations

from pathlib import Path

from aiohttp import web

WEB_ROOT = Path(__file__).resolve().parent.parent / "web"


def add_static(app: web.Application) -> None:
    """The pages (``/web/...``) and the front-end packages installed from npm."""
    vendor = WEB_ROOT / "node_modules" / "socket.io-client" / "dist"
    pages = WEB_ROOT / "static"

    async def socketio_client(request: web.Request) -> web.StreamResponse:
        path = vendor / "socket.io.esm.min.js"
        if not path.is_file():
            raise web.HTTPNotFound(text="socket.io-client is not installed: run `make setup`")
        return web.FileResponse(path, headers={"Content-Type": "text/javascript"})

    async def index(request: web.Request) -> web.StreamResponse:
        raise web.HTTPFound("/web/index.html")

    app.router.add_get("/web/vendor/socket.io.esm.min.js", socketio_client)
    app.router.add_get("/web/", index)
    if pages.is_dir():
        app.router.add_static("/web/", pages, show_index=False, follow_symlinks=False)
