"""GET /ui: the web console, static files shipped in the package and served by this process.

The console is plain HTML, CSS and JavaScript modules (no build step, nothing from elsewhere) that call the
public v1 API from the browser with the user's key, so every rule about keys stays the API's.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, FastAPI
from fastapi.responses import FileResponse, HTMLResponse
from fastapi.staticfiles import StaticFiles

CONSOLE_DIR = Path(__file__).resolve().parent.parent / "console"
ASSETS_PATH = "/ui/assets"

router = APIRouter(tags=["console"])


@router.get("/ui", response_class=HTMLResponse, responses={200: {"content": {"text/html": {"schema": {"type": "string"}}}, "description": "The console page"}})
def console() -> FileResponse:
    """The web console: collections, search, points, jobs, compression, upgrades and relevance, over the v1 API."""
    return FileResponse(CONSOLE_DIR / "index.html", media_type="text/html", headers={"Cache-Control": "no-cache"})


def mount_console(app: FastAPI) -> None:
    """The console's page at /ui and its assets under /ui/assets."""
    app.include_router(router)
    app.mount(ASSETS_PATH, StaticFiles(directory=CONSOLE_DIR), name="console-assets")
