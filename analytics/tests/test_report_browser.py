"""The static HTML report, rendered from the built models and opened in headless Chromium (Debian's
package): the DOM Chromium parsed holds the scripted sequence's figures, and the screenshot has
the window's size and is not blank."""

import os
import re
import shutil
import struct
import subprocess
import tempfile
import zlib
from datetime import datetime, timezone

import pytest
from hypothesis import given, settings, strategies as st

from conftest import MODELS_SCHEMA
from synthralos_analytics import report

WINDOW = (1280, 1400)
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--hide-scrollbars", "--window-size=%d,%d" % WINDOW]


def chromium():
    for name in ("chromium", "chromium-browser"):
        path = shutil.which(name)
        if path:
            return path
    pytest.fail("Debian's chromium is not installed (analytics/run-tests.sh installs it)")


@pytest.fixture(scope="module")
def rendered(built):
    work = tempfile.mkdtemp(prefix="synthralos-report-")
    try:
        page = os.path.join(work, "report.html")
        data = report.fetch(built["dsn"], MODELS_SCHEMA)
        with open(page, "w") as handle:
            handle.write(report.render(data, generated_at=datetime(2026, 11, 16, 9, 0, tzinfo=timezone.utc)))
        yield {"page": page, "work": work}
    finally:
        shutil.rmtree(work, ignore_errors=True)


def run_chromium(work, *args):
    profile = tempfile.mkdtemp(prefix="profile-", dir=work)
    done = subprocess.run([chromium()] + CHROMIUM_FLAGS + ["--user-data-dir=%s" % profile] + list(args),
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=120)
    assert done.returncode == 0, done.stderr.decode("utf-8", "replace")[-2000:]
    return done.stdout.decode("utf-8", "replace")


def figures(dom):
    found = {}
    for match in re.finditer(r'data-metric="([^"]+)" data-value="([^"]*)"[^>]*>([^<]*)<', dom):
        found[match.group(1)] = match.group(3)
    return found


def png_size_and_colours(path):
    with open(path, "rb") as handle:
        data = handle.read()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", data[16:24])
    chunks, offset = [], 8
    while offset < len(data):
        length, kind = struct.unpack(">I4s", data[offset:offset + 8])
        if kind == b"IDAT":
            chunks.append(data[offset + 8:offset + 8 + length])
        offset += 12 + length
    raw = zlib.decompress(b"".join(chunks))
    return width, height, len(set(raw[:2000000]))


def test_the_report_is_self_contained(rendered):
    with open(rendered["page"]) as handle:
        text = handle.read()
    assert "<script" not in text
    assert not re.search(r'(src|href)="(https?:)?//', text)  # no CDN, no remote font or image
    assert text.count("<svg") == 7


def test_chromium_renders_the_figures(rendered):
    dom = run_chromium(rendered["work"], "--dump-dom", "file://" + rendered["page"])
    got = figures(dom)
    assert got["recoveries"] == "8"
    assert got["recovery_rate"] == "75.0%"
    assert got["mean_time_to_recovery_s"] == "79.5 s"
    assert got["p95_time_to_recovery_s"] == "202.5 s"
    assert got["escalated"] == "2"
    assert got["llm_cost_usd"] == "$0.0385"
    assert got["llm_cost_per_recovery_usd"] == "$0.0047"  # $0.0375 spent inside 8 recoveries
    assert got["duplicate_rows"] == "6"
    assert got["late_events"] == "8"
    assert got["recovery_rate_by_failure_type.timeout (4)"] == "100.0%"
    assert got["recovery_rate_by_failure_type.tool_failure (1)"] == "0.0%"
    assert got["recovery_rate_by_week.week of 2026-11-02"] == "75.0% (3/4)"
    assert got["repairs_by_step.timeout: reduce_max_iterations #1"] == "2 (50.0% of timeout)"
    assert got["llm_cost_by_agent.agent-b"] == "$0.0325, 3 calls, $0.0081/recovery"
    assert got["cron.nightly_export.disabled_s"] == "10800.0 s"
    assert got["guardrails.0.8.allowed"] == "3"
    assert dom.count("<rect") >= 20


def test_chromium_screenshot(rendered):
    shot = os.path.join(rendered["work"], "report.png")
    run_chromium(rendered["work"], "--screenshot=%s" % shot, "file://" + rendered["page"])
    width, height, colours = png_size_and_colours(shot)
    assert (width, height) == WINDOW
    assert colours > 50  # text, bars in four colours, anti-aliasing: far from a blank page
    keep = os.environ.get("SYNTHRALOS_REPORT_SCREENSHOT")
    if keep:  # for a person to look at
        shutil.copy(shot, keep)
        shutil.copy(rendered["page"], os.path.splitext(keep)[0] + ".html")


@settings(max_examples=50, deadline=None)
@given(st.text(max_size=40))
def test_outside_text_is_escaped(text):
    """Agent, job and event names come from outside: they never become markup."""
    hostile = "<x-hostile a='1'>" + text + "</x-hostile>&amp;\""
    data = {
        "overall": [(1, 1, 0, 1.0, 1.0, 1.0)],
        "by_type": [(hostile, 1, 1, 1.0, 1.0, 1.0)],
        "by_week": [],
        "by_source": [(hostile, 1, 1.0)],
        "steps": [(hostile, hostile, 1, 1, 1.0)],
        "cost_by_agent": [(hostile, 1, 0.5, 1, 0.5)],
        "recovery_cost": [(0.5, 1)],
        "cron": [(hostile, 1, 10, 0, 0, 0, 0, 0.0, True)],
        "guardrails": [(0.8, hostile, 1, 1, 0.9)],
        "delivery": [(hostile, 1, 1, 0, 0, 0)],
    }
    page = report.render(data, generated_at=datetime(2026, 11, 16, tzinfo=timezone.utc))
    assert "<x-hostile" not in page
    assert "&lt;x-hostile a=&#x27;1&#x27;&gt;" in page
