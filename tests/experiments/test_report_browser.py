"""``report.html`` in a real browser: headless Chromium loads it without console messages,
renders the run, and every embedded plot decodes.

Skipped when no ``chromium`` / ``chromium-browser`` binary is on ``PATH`` (``.ci/run``
installs Debian's ``chromium`` when it can). No Python browser driver is needed: Chromium's
own logging (``--enable-logging=stderr``) writes each console message of the page to stderr as
``...:CONSOLE:<line>] "<message>", source: <url> (<line>)`` -- console.log/warn/error alike,
uncaught exceptions as ``"Uncaught Error: ..."``. The report has no scripts, so *any* console
message from it is a finding. A control page with a deliberate ``console.error``, an uncaught
``throw`` and a broken image checks that the detector does catch them, so the test cannot
pass vacuously (e.g. if a Chromium release changes its log format).
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from velocity.experiments import RunResult, write_outputs

MakeResult = Callable[..., RunResult]

_BROWSER = shutil.which("chromium") or shutil.which("chromium-browser")

pytestmark = pytest.mark.skipif(
    _BROWSER is None, reason="no chromium binary (apt-get install chromium)"
)

_CONSOLE = re.compile(r":CONSOLE[:(]\d+\)?\]\s*(?P<message>.*)$")
"""A console line of Chromium's log, old (``INFO:CONSOLE(3)]``) and new (``INFO:CONSOLE:3]``)."""

_PROBE_TAG = "velocity-probe "
_PROBE = (
    '<script>window.addEventListener("load", () => {'
    " const images = Array.from(document.images);"
    " const broken = images.filter((i) => !i.complete || i.naturalWidth === 0)"
    ".map((i) => i.alt);"
    f' console.log("{_PROBE_TAG}" + JSON.stringify({{images: images.length, broken: broken,'
    " overflow: document.documentElement.scrollWidth > window.innerWidth}));"
    " });</script>"
)
"""Appended to a copy of a page: after ``load`` it logs how many images there are, which failed
to decode, and whether the page overflows the window horizontally."""

_CONTROL = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>control</title></head>
<body><p>control page</p>
<img alt="broken-control" src="data:image/png;base64,AAAA">
<script>console.error("deliberate console error marker");</script>
<script>throw new Error("deliberate uncaught marker");</script>
</body></html>
"""


def _chromium(url: str, *args: str, profile: Path) -> subprocess.CompletedProcess[str]:
    assert _BROWSER is not None
    command = [
        _BROWSER,
        "--headless=new",
        "--disable-gpu",
        "--no-sandbox",  # root in CI containers
        "--disable-dev-shm-usage",  # small /dev/shm in containers
        "--no-first-run",
        "--disable-extensions",
        f"--user-data-dir={profile}",  # parallel test workers must not share a profile
        "--enable-logging=stderr",
        "--v=0",
        "--window-size=1280,2000",
        *args,
        url,
    ]
    done = subprocess.run(command, capture_output=True, text=True, timeout=180, check=False)
    assert done.returncode == 0, f"chromium failed ({done.returncode}):\n{done.stderr[-4000:]}"
    return done


def console_problems(stderr: str) -> list[str]:
    """Every console message and every JavaScript error in Chromium's stderr.

    Chromium's log does not say a console message's level, so every message counts; lines
    that mention an uncaught exception or a JavaScript error outside the console format are
    included too. Chromium's own noise (D-Bus, GPU, sandbox warnings) is not.
    """
    problems = []
    for line in stderr.splitlines():
        match = _CONSOLE.search(line)
        if match is not None:
            problems.append(match["message"])
        elif "Uncaught" in line or re.search(r"javascript\W.*error", line, re.IGNORECASE):
            problems.append(line)
    return problems


def _probe(problems: list[str]) -> tuple[dict[str, Any], list[str]]:
    """Split the probe's message from the page's own: ``(probe result, the rest)``."""
    found = [p for p in problems if _PROBE_TAG in p]
    assert len(found) == 1, f"the probe did not report exactly once: {problems}"
    text = found[0].split(_PROBE_TAG, 1)[1]
    result: dict[str, Any] = json.JSONDecoder().raw_decode(text)[0]
    return result, [p for p in problems if _PROBE_TAG not in p]


def _url(path: Path) -> str:
    return path.resolve().as_uri()


@pytest.fixture(scope="module")
def report(make_result: MakeResult, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("browser_report")
    written = write_outputs(make_result(), out)
    return written["report.html"]


def test_the_detector_catches_console_errors_exceptions_and_broken_images(
    tmp_path: Path,
) -> None:
    page = tmp_path / "control.html"
    page.write_text(_CONTROL.replace("</body>", _PROBE + "</body>"), encoding="utf-8")
    done = _chromium(_url(page), "--dump-dom", profile=tmp_path / "profile")
    probe, problems = _probe(console_problems(done.stderr))
    assert any("deliberate console error marker" in p for p in problems), done.stderr
    assert any("Uncaught" in p and "deliberate uncaught marker" in p for p in problems), done.stderr
    assert probe["images"] == 1
    assert probe["broken"] == ["broken-control"]
    assert "control page" in done.stdout  # --dump-dom writes the DOM to stdout


def test_report_loads_without_console_messages_and_shows_the_run(
    report: Path, make_result: MakeResult, tmp_path: Path
) -> None:
    result = make_result()
    done = _chromium(_url(report), "--dump-dom", profile=tmp_path / "profile")
    assert console_problems(done.stderr) == []
    dom = done.stdout
    assert result.name in dom
    assert f"VelocityFL run: {result.name}" in dom
    assert "<h2>Rounds</h2>" in dom
    # the per-round table: its header and one row per round
    assert "<th>round</th>" in dom
    assert "<th>test accuracy</th>" in dom
    rows = re.findall(r"<tr><td>(\d+)</td>", dom)
    assert [int(r) for r in rows] == [r.round for r in result.rounds]
    assert dom.count('src="data:image/png;base64,') == 5


def test_report_plots_decode_and_page_fits_the_window(report: Path, tmp_path: Path) -> None:
    page = tmp_path / "probed.html"
    text = report.read_text(encoding="utf-8")
    assert text.count("</body>") == 1
    page.write_text(text.replace("</body>", _PROBE + "</body>"), encoding="utf-8")
    done = _chromium(_url(page), "--dump-dom", profile=tmp_path / "profile")
    probe, problems = _probe(console_problems(done.stderr))
    assert problems == []
    assert probe == {"images": 5, "broken": [], "overflow": False}


def test_report_screenshot(report: Path, tmp_path: Path) -> None:
    png = tmp_path / "report.png"
    done = _chromium(_url(report), f"--screenshot={png}", profile=tmp_path / "profile")
    assert console_problems(done.stderr) == []
    assert png.is_file()
    data = png.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    assert len(data) > 10_000, f"a near-empty screenshot ({len(data)} bytes)"
