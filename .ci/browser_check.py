"""Open a built page in headless Chromium and confirm its figures render.

Usage: python .ci/browser_check.py _build/html/book/entropy.html [screenshot.png]
Checks: Chromium loads the page; every <img> of the rendered DOM points to an image file that exists and decodes
to a non-blank picture; the page screenshot is not blank. Exits 1 with one line per problem.
"""
from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync", "--hide-scrollbars"]


def chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")


def non_blank(png: Path) -> bool:
    """True when the picture has more than one colour (matplotlib decodes PNG without extra dependencies)."""
    import matplotlib.image
    pixels = matplotlib.image.imread(str(png))
    return pixels.size > 0 and float(pixels.std()) > 0.01


def check(page: Path, screenshot: Path | None = None) -> list[str]:
    browser = chromium()
    if browser is None:
        return ["chromium is not installed (apt-get install chromium)"]
    url = page.resolve().as_uri()
    with tempfile.TemporaryDirectory() as profile:
        flags = FLAGS + [f"--user-data-dir={profile}"]
        dom = subprocess.run([browser, *flags, "--dump-dom", url], capture_output=True, text=True, timeout=120).stdout
        shot = screenshot or Path(profile) / "shot.png"
        subprocess.run([browser, *flags, f"--screenshot={shot}", "--window-size=1280,2400", url],
                       capture_output=True, timeout=120)
        blank_screenshot = not shot.exists() or not non_blank(shot)
    problems = []
    images = re.findall(r'<img[^>]+src="([^"]+)"', dom)
    figures = [src for src in images if "_images/" in src or src.startswith("data:image")]
    if not figures:
        problems.append(f"{page}: the rendered page holds no figure images")
    for src in figures:
        if src.startswith("data:"):
            continue
        file = (page.parent / src).resolve()
        if not file.exists():
            problems.append(f"{page}: image {src} is missing")
        elif file.suffix == ".png" and not non_blank(file):
            problems.append(f"{page}: image {src} is blank")
    if blank_screenshot:
        problems.append(f"{page}: the screenshot is missing or blank")
    return problems


if __name__ == "__main__":
    found = check(Path(sys.argv[1]), Path(sys.argv[2]) if len(sys.argv) > 2 else None)
    print("\n".join(found) or f"ok: {sys.argv[1]} renders its figures")
    sys.exit(1 if found else 0)
