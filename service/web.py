"""Serve the built web app (`frontend/dist`) from the API's own origin.

The app's pages (/, /compare, /dashboard, /c/<conversation>) all answer with index.html
(the client routes), and the built files are served under /assets. Nothing here
shadows /v1, /metrics or the health probes.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from fastapi.responses import FileResponse, HTMLResponse
from fastapi.staticfiles import StaticFiles

PAGES = ("/", "/compare", "/dashboard", "/c/{conversation_id}")
NOT_BUILT = """<!doctype html><html lang="en"><meta charset="utf-8"><title>loopchat</title>
<body><h1>loopchat</h1><p>The web app is not built. Run <code>make run</code> (it builds it)
or <code>cd frontend &amp;&amp; npm ci &amp;&amp; npm run build</code>. The API is at
<a href="/docs">/docs</a>.</p></body></html>"""


def default_dist() -> Path:
    return Path(__file__).resolve().parent.parent / "frontend" / "dist"


def mount_web(app: FastAPI, dist: Path) -> None:
    index = dist / "index.html"

    async def page() -> FileResponse | HTMLResponse:
        if index.is_file():
            return FileResponse(index, headers={"Cache-Control": "no-cache"})
        return HTMLResponse(NOT_BUILT)

    for path in PAGES:
        app.add_api_route(path, page, methods=["GET"], include_in_schema=False, response_model=None)
    # Only the built assets are files; a catch-all mount at / would turn a wrong method on
    # an API path (405) into a 404 from the file server.
    if (dist / "assets").is_dir():
        app.mount("/assets", StaticFiles(directory=dist / "assets"), name="web-assets")
