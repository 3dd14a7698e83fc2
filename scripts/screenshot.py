"""Screenshots of the HTML report: its top, middle and end, as PNG files.

    python scripts/screenshot.py reports/report.html [--out DIR] [--width 1280] [--height 1000]

Headless Chromium renders the page in one window taller than the page (grown until the
page fits), and the three views are cropped from that with Pillow: no scrolling, no page
script. Exits non-zero when Chromium fails or the page logs anything to its console (the
report has no script, so any console message is a fault). Writes DIR/top.png,
DIR/middle.png and DIR/end.png (DIR defaults to a folder in the system temp directory).
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
FLAGS = [  # offline, no first-run work, no sandbox (runs as root in containers)
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--hide-scrollbars",
    "--enable-logging=stderr",
    "--v=0",
]
MAX_HEIGHT = 64000  # px; Chromium renders taller windows, but slowly
CONSOLE = re.compile(r":CONSOLE[:(]\d*\)?\]?\s*(.*)")


def find_browser(name: str | None) -> str:
    for candidate in [name] if name else BROWSERS:
        path = shutil.which(candidate) if candidate else None
        if path:
            return path
    sys.exit(
        f"error: no Chromium found (tried {', '.join(BROWSERS)}); install it or pass --browser"
    )


def render(browser: str, html: Path, width: int, height: int, png: Path) -> list[str]:
    """One headless screenshot of `html` in a width x height window; returns console lines."""
    with tempfile.TemporaryDirectory(prefix="chromium-profile-") as profile:
        done = subprocess.run(
            [
                browser,
                *FLAGS,
                f"--user-data-dir={profile}",
                f"--screenshot={png}",
                f"--window-size={width},{height}",
                html.resolve().as_uri(),
            ],
            capture_output=True,
            text=True,
            timeout=300,
        )
    if done.returncode != 0 or not png.is_file():
        tail = "\n".join(done.stderr.splitlines()[-5:])
        sys.exit(f"error: Chromium failed (exit {done.returncode}):\n{tail}")
    return [m.group(1) for line in done.stderr.splitlines() if (m := CONSOLE.search(line))]


def content_end(image: Image.Image) -> int:
    """Index of the last row that is not plain background (the colour of the bottom row)."""
    pixels = np.asarray(image.convert("RGB"), dtype=np.int16)
    background = pixels[-1, 0]
    rows = np.flatnonzero((np.abs(pixels - background).sum(axis=2) > 24).any(axis=1))
    return int(rows[-1]) if len(rows) else 0


def full_page(
    browser: str, html: Path, width: int, height: int, png: Path
) -> tuple[Image.Image, int, list[str]]:
    """Render taller and taller until the page ends above the window's bottom edge."""
    window = max(4 * height, 8000)
    while True:
        console = render(browser, html, width, window, png)
        image = Image.open(png)
        image.load()
        end = content_end(image)
        if end < window - 40 or window >= MAX_HEIGHT:
            return image, min(end + 40, window), console
        window = min(2 * window, MAX_HEIGHT)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("html", type=Path)
    parser.add_argument("--out", type=Path, default=Path(tempfile.gettempdir()) / "report-shots")
    parser.add_argument("--width", type=int, default=1280)
    parser.add_argument("--height", type=int, default=1000, help="height of each view, px")
    parser.add_argument("--browser", help="Chromium executable (default: found on PATH)")
    args = parser.parse_args()
    if not args.html.is_file():
        sys.exit(f"error: {args.html}: no such file")
    browser = find_browser(args.browser)
    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as scratch:
        image, end, console = full_page(
            browser, args.html, args.width, args.height, Path(scratch) / "page.png"
        )
    view = min(args.height, end)
    middle = max(0, min(end // 2 - view // 2, end - view))
    for name, top in (("top", 0), ("middle", middle), ("end", end - view)):
        path = args.out / f"{name}.png"
        image.crop((0, top, image.width, top + view)).save(path)
        print(f"{path}: rows {top}-{top + view} of a {end} px page")
    if end >= MAX_HEIGHT - 40:
        print(f"warning: the page is taller than {MAX_HEIGHT} px; the end view is cut there")
    for line in console:
        print(f"console: {line}", file=sys.stderr)
    if console:
        sys.exit(f"error: the page logged {len(console)} console message(s)")


if __name__ == "__main__":
    main()
