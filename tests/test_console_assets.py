"""The console's files without a browser: shipped as package data, every asset served by Trove itself, and
every module import resolving (a broken path would only show as a blank page)."""

from __future__ import annotations

import posixpath
import re
import tomllib
from fnmatch import fnmatch

from fastapi.testclient import TestClient

from service.routers.console import ASSETS_PATH, CONSOLE_DIR
from tests.conftest import ROOT

# <script src>, <link href> and JS `import ... from "..."` / `import("...")`.
REFERENCE = re.compile(r"""(?:src|href)="([^"#][^"]*)"|\bfrom\s+"([^"]+)"|\bimport\(\s*"([^"]+)"\s*\)""")


def _files() -> list[str]:
    return sorted(str(p.relative_to(CONSOLE_DIR)) for p in CONSOLE_DIR.rglob("*") if p.is_file())


def test_every_console_file_is_package_data() -> None:
    globs = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]["service"]
    unshipped = [f for f in _files() if not any(fnmatch(f"console/{f}", g) for g in globs)]
    assert not unshipped, f"add to [tool.setuptools.package-data] in pyproject.toml: {unshipped}"


def test_ui_and_every_asset_it_references_are_served_by_trove(client: TestClient) -> None:
    page = client.get("/ui")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    pending = [("/ui", page.text)]
    seen: set[str] = set()
    while pending:
        url, text = pending.pop()
        for match in REFERENCE.finditer(text):
            ref = next(g for g in match.groups() if g)
            if ref.startswith("data:"):
                continue
            assert not re.match(r"^[a-z]+:|^//", ref), f"{url} loads {ref} from elsewhere: every asset must come from Trove"
            target = posixpath.normpath(ref if ref.startswith("/") else posixpath.join(posixpath.dirname(url), ref))
            if target in seen or not target.startswith(ASSETS_PATH):
                continue
            seen.add(target)
            answer = client.get(target)
            assert answer.status_code == 200, (url, ref, target)
            if target.endswith(".js"):
                assert "javascript" in answer.headers["content-type"]
                pending.append((target, answer.text))
    served = {t.removeprefix(ASSETS_PATH + "/") for t in seen}
    assert served == set(_files()) - {"index.html"}, "every console file is used, and every one used exists"


def test_assets_outside_the_console_folder_are_not_served(client: TestClient) -> None:
    for path in (f"{ASSETS_PATH}/../routers/console.py", f"{ASSETS_PATH}/%2e%2e/settings.py", f"{ASSETS_PATH}/nope.js"):
        assert client.get(path).status_code == 404, path
