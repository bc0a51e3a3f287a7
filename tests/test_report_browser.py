"""report.html and an interactive figure in a real browser: headless Chromium with the network off renders the
key-number tables above the fold and the plotly figure from the run folder's own plotly.min.js; the screenshot is
kept as a test artifact (pytest's tmp dir, and $SWEEPKIT_ARTIFACTS when set).

Needs a chromium binary (Debian: ``apt-get install chromium``; or $SWEEPKIT_CHROMIUM): skipped without one."""
from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

BROWSERS = ("chromium", "chromium-browser", "google-chrome", "chrome")
FOLD_PX = 900


def find_chromium() -> str | None:
    """The chromium binary: $SWEEPKIT_CHROMIUM, else the first of BROWSERS on the PATH."""
    explicit = os.environ.get("SWEEPKIT_CHROMIUM")
    if explicit:
        return explicit if Path(explicit).exists() or shutil.which(explicit) else None
    return next((found for found in map(shutil.which, BROWSERS) if found), None)


CHROMIUM = find_chromium()
pytestmark = [pytest.mark.browser, pytest.mark.skipif(CHROMIUM is None, reason="no chromium binary (apt-get install chromium)")]


def chromium(page: Path, profile: Path, *args: str, timeout: float = 120) -> str:
    """Run headless Chromium on a local page with every network request refused; return its stdout."""
    command = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--no-first-run",
               "--disable-background-networking", "--disable-component-update", "--disable-sync",
               "--host-resolver-rules=MAP * ~NOTFOUND", "--proxy-server=http://127.0.0.1:9",
               f"--user-data-dir={profile}", "--window-size=1280,900", "--virtual-time-budget=15000", *args,
               page.resolve().as_uri()]
    proc = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stdout


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    """A real run of the bundled example sweep: minima and regressions (which writes an interactive 3-D figure)."""
    from hydra import compose, initialize_config_dir

    from toolkit import pipeline
    from toolkit.settings import CONF_DIR, register_schemas

    out = tmp_path_factory.mktemp("browser") / "run"
    register_schemas(CONF_DIR)
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose("config", overrides=["analysis=[minima,regressions]", "analysis.minima.bootstrap.n=20",
                                           "analysis.regressions.bootstrap.n=5", "progress=false",
                                           f"cache.dir={out.parent / 'cache'}"])
    status = pipeline.run(cfg, out)
    assert pipeline.exit_code(status) == 0, status
    return out


def _artifact(src: Path, name: str) -> None:
    folder = os.environ.get("SWEEPKIT_ARTIFACTS")
    if folder:
        Path(folder).mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src, Path(folder) / name)


def test_report_key_numbers_render_above_the_fold(run_dir, tmp_path):
    # a copy of the report that writes, once laid out, where its first key-number table ends
    probe = run_dir / "report_probe.html"
    script = ("<script>window.addEventListener('load',()=>{const t=document.querySelector('table.keys');"
              "document.body.setAttribute('data-keys-bottom',t?Math.round(t.getBoundingClientRect().bottom):-1);});</script>")
    probe.write_text((run_dir / "report.html").read_text(encoding="utf-8").replace("</body>", script + "</body>"),
                     encoding="utf-8")
    dom = chromium(probe, tmp_path / "profile", "--dump-dom")
    probe.unlink()
    assert '<table class="keys pivot" data-analysis="minima">' in dom
    assert 'data-analysis="regressions"' in dom and "lr_vs_bs_horizon" in dom
    assert re.search(r"<dt>runs</dt><dd>96 read, 96 kept</dd>", dom)
    bottom = int(re.search(r'data-keys-bottom="(-?\d+)"', dom).group(1))
    assert 0 < bottom <= FOLD_PX, f"the minima table ends at {bottom} px"
    shot = tmp_path / "report.png"
    chromium(run_dir / "report.html", tmp_path / "profile", f"--screenshot={shot}")
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 10_000
    _artifact(shot, "report_default.png")
    print(f"screenshot: {shot}")


def test_interactive_figure_renders_offline(run_dir, tmp_path):
    figures = sorted((run_dir / "regressions").glob("*.html"))
    assert figures, "regressions wrote no interactive figure"
    report = (run_dir / "report.html").read_text(encoding="utf-8")
    assert f'<iframe class="plot" src="regressions/{figures[0].name}"' in report
    assert 'src="../plotly.min.js"' in figures[0].read_text(encoding="utf-8")  # the run folder's shared copy
    dom = chromium(figures[0], tmp_path / "profile", "--dump-dom")
    assert 'class="plot-container plotly"' in dom or "plot-container" in dom
    assert "main-svg" in dom  # plotly drew its layers, so plotly.min.js ran without the network
    shot = tmp_path / "figure.png"
    chromium(figures[0], tmp_path / "profile", f"--screenshot={shot}")
    assert shot.stat().st_size > 5_000
    _artifact(shot, f"figure_{figures[0].stem}.png")
