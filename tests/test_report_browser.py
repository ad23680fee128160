"""Render the HTML report in headless Chromium (Debian's `chromium`) and check the screenshot shows its content.

Run by `nox -s browser` (which needs `apt-get install chromium`); skipped when no Chromium is installed.
"""

import shutil
import subprocess

import numpy as np
import pytest
from PIL import Image

from mars_eval.io import atomic_write_jsonl
from mars_eval.report.build import build_report

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = [pytest.mark.browser,
              pytest.mark.skipif(CHROMIUM is None, reason="needs Debian's chromium (apt-get install chromium)")]


def test_report_renders_in_headless_chromium(tmp_path):
    run = tmp_path / "run"
    (run / "imgs").mkdir(parents=True)
    colours = [(255, 0, 0), (0, 0, 255)]
    for i, c in enumerate(colours):
        Image.new("RGB", (16, 16), c).save(run / "imgs" / f"{i:05d}_000.png")
    atomic_write_jsonl(run / "imgs" / "manifest.jsonl",
                       [{"file": f"{i:05d}_000.png", "prompt": f"<script>document.body.innerHTML=''</script>{i}"}
                        for i in range(2)])
    atomic_write_jsonl(run / "results.jsonl", [
        {"kind": "metric", "table": "T", "label": "a", "metric": "fid", "value": 1.0},
        {"kind": "samples", "label": "grid", "images_dir": "imgs"}])
    build_report([run], tmp_path / "out")
    shot = tmp_path / "shot.png"
    subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                    "--disable-background-networking", "--disable-component-update", "--disable-sync",
                    f"--user-data-dir={tmp_path / 'profile'}", "--window-size=1100,1400",
                    f"--screenshot={shot}", (tmp_path / "out" / "report.html").as_uri()],
                   check=True, capture_output=True, timeout=120)
    px = np.asarray(Image.open(shot).convert("RGB")).astype(int)
    # the sample grid's images are drawn (the escaped script did not wipe the page)
    red = ((px[..., 0] > 200) & (px[..., 1] < 60) & (px[..., 2] < 60)).sum()
    blue = ((px[..., 2] > 200) & (px[..., 0] < 60) & (px[..., 1] < 60)).sum()
    assert red > 64 * 64 and blue > 64 * 64
    # text and the chart are drawn too: plenty of dark pixels
    assert (px.sum(-1) < 200).sum() > 2000
