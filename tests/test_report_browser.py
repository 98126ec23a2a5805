"""The report as a person sees it: rendered by headless Chromium (Debian's `chromium`) at a
laptop's and a phone's width, the screenshots are not blank and the page logs nothing to the
console. Skipped, with the reason, where Chromium is not installed."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from training_fixtures import one_thread, run_cli, write_tiny_dataset  # noqa: F401 (fixture)

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        CHROMIUM is None, reason="needs Debian's chromium on PATH (apt-get install chromium)"
    ),
]
LAPTOP, PHONE = (1280, 2000), (390, 2000)


def render(page: Path, size: tuple[int, int], folder: Path) -> tuple[Path, list[str]]:
    """Screenshot of `page` at `size` -> (PNG, the console lines Chromium logged)."""
    shot = folder / f"shot-{size[0]}.png"
    command = [
        CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
        "--no-first-run", "--disable-background-networking", "--disable-component-update",
        "--disable-sync", "--hide-scrollbars", "--force-device-scale-factor=1",
        f"--user-data-dir={folder / 'profile'}", "--enable-logging=stderr", "--v=0",
        f"--screenshot={shot}", f"--window-size={size[0]},{size[1]}", page.as_uri(),
    ]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert shot.exists(), done.stderr[-2000:]
    return shot, [line for line in done.stderr.splitlines() if ":CONSOLE" in line]


def assert_not_blank(shot: Path) -> None:
    from PIL import Image

    pixels = Image.open(shot).convert("RGB")
    colours = pixels.getcolors(maxcolors=1 << 20) or []
    background = max(colours)[1]
    drawn = sum(n for n, colour in colours if colour != background)
    assert len(colours) > 50 and drawn > 0.05 * pixels.width * pixels.height, (len(colours), drawn)


def test_console_errors_are_seen(tmp_path):
    """The check below can fail: a page that logs an error shows up in the console lines."""
    page = tmp_path / "broken.html"
    page.write_text("<!DOCTYPE html><title>x</title><script>console.error('boom')</script>")
    _, console = render(page, PHONE, tmp_path)
    assert any("boom" in line for line in console)


def test_the_report_renders_on_a_laptop_and_a_phone(tmp_path):
    data = write_tiny_dataset(tmp_path / "data")
    results = []
    for kind, extra in (("pop", []), ("sasrec", ["--epochs", "2"])):
        run = tmp_path / "runs" / kind
        assert run_cli(["baseline", kind, "--data", str(data), "-o", str(run), *extra]) == 0
        results.append(str(tmp_path / "results" / kind))
        assert run_cli(["evaluate", "--run", str(run), "--data", str(data), "-o", results[-1]]) == 0
    page = tmp_path / "report.html"
    assert run_cli(["report", *results, "-o", str(page), "--resamples", "200"]) == 0
    for size in (LAPTOP, PHONE):
        shot, console = render(page, size, tmp_path)
        assert console == []
        assert_not_blank(shot)
