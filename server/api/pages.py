"""The browser pages (static files) and the front-end packages installed from npm."""

from __future__ import annotations

from pathlib import Path

from aiohttp import web

WEB_ROOT = Path(__file__).resolve().parent.parent / "web"

# The pages' Content-Security-Policy and Referrer-Policy are sent as headers (the pages do not
# repeat them): every page loads only its own scripts, styles and connections, with no inline
# script or style, no <base> and no form posts. What a page shows from data: and blob: addresses
# (the room's video on the wall, the bids' documents on the desk) is named per page; a page not
# named here gets none of it.
PAGE_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; connect-src 'self'; {media}; "
    "base-uri 'none'; form-action 'none'"
)
PAGE_MEDIA = {
    "bidder": "img-src 'self' data:; object-src 'none'",
    "host": "img-src 'self' data:; object-src 'none'",
    "supervisor": "img-src 'self' data: blob:; media-src 'self' blob:; object-src 'none'",
    "expert": "img-src 'self' data: blob:; object-src blob:; frame-src blob:",
}


def page_headers(page: str) -> dict[str, str]:
    """The headers of a page (``/web/{page}.html``): its Content-Security-Policy, and no referrer."""
    media = PAGE_MEDIA.get(page, "object-src 'none'")
    return {
        "Content-Security-Policy": PAGE_POLICY.format(media=media),
        "Referrer-Policy": "no-referrer",
    }


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

    async def page(request: web.Request) -> web.StreamResponse:
        name = request.match_info["page"]
        path = pages / f"{name}.html"
        if not path.is_file():
            raise web.HTTPNotFound()
        return web.FileResponse(path, headers=page_headers(name))

    app.router.add_get("/web/vendor/socket.io.esm.min.js", socketio_client)
    app.router.add_get("/web/", index)
    app.router.add_get("/web/{page:[a-z]+}.html", page)
    if pages.is_dir():
        app.router.add_static("/web/", pages, show_index=False, follow_symlinks=False)
