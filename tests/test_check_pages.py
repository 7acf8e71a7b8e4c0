"""docs/check_pages.py (make docs-check) finds what a reader would see: overflow, broken images, console errors.

Each test writes a few small HTML pages and runs the checker on them in headless Chromium; it is
skipped (per test) where selenium, chromium or chromedriver is missing.
"""

from __future__ import annotations

import importlib.util
import shutil
from pathlib import Path

import pytest

CHECKER = Path(__file__).resolve().parents[1] / "docs" / "check_pages.py"

GOOD = """<!doctype html><html><head><meta charset="utf-8"><title>good</title>
<link rel="icon" href="data:,"></head><body style="margin:0">
<pre style="width:600px;overflow:auto">short line</pre>
<table style="width:600px"><tr><td>a cell</td></tr></table>
<img src="dot.svg" alt="a dot"></body></html>"""

DOT = '<svg xmlns="http://www.w3.org/2000/svg" width="4" height="4"><rect width="4" height="4"/></svg>'


def _checker():
    if importlib.util.find_spec("selenium") is None:
        pytest.skip("selenium is not installed (the docs extra)")
    if shutil.which("chromium") is None or shutil.which("chromedriver") is None:
        pytest.skip("chromium and chromedriver are not installed (apt-get install chromium chromium-driver)")
    spec = importlib.util.spec_from_file_location("check_pages", CHECKER)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _site(tmp_path, pages):
    (tmp_path / "index.html").write_text(GOOD)
    (tmp_path / "dot.svg").write_text(DOT)
    for name, body in pages.items():
        (tmp_path / name).write_text(GOOD.replace("<img", body + "<img"))
    return tmp_path


def test_a_clean_site_passes(tmp_path, capsys):
    check = _checker()
    site = _site(tmp_path, {"other.html": "<p>nothing wrong</p>"})
    assert check.main([str(site)]) == 0
    out = capsys.readouterr().out
    assert out.strip() == "check_pages: 2 pages at 1280 px in chromium: no problems"


def test_each_kind_of_problem_is_found(tmp_path, capsys):
    check = _checker()
    wide_code = '<pre style="width:300px;overflow:auto">' + "x = 1  # " + "long " * 60 + "</pre>"
    wide_table = '<div style="width:300px;overflow-x:auto"><table><tr><td>' + "w" * 200 + "</td></tr></table></div>"
    site = _site(tmp_path, {
        "a_page_too_wide.html": '<div style="width:1500px">wide</div>',
        "b_code.html": wide_code,
        "c_table.html": wide_table,
        "d_image.html": '<img src="missing.png" alt="missing">',
        "e_console.html": "<script>console.error('boom')</script>",
        "f_script.html": "<script>undefined_function()</script>",
    })
    assert check.main([str(site)]) == 1
    lines = capsys.readouterr().out.strip().splitlines()
    found = {line.split(":", 1)[0]: line for line in lines[:-1]}
    assert "overflow: the page is 1500 px wide in a 1280 px window" in found["a_page_too_wide.html"]
    assert "clipped: <pre" in found["b_code.html"] and "shows 300 of" in found["b_code.html"]
    assert "clipped: <table" in found["c_table.html"] or "clipped: <div" in found["c_table.html"]
    problems_d = [line for line in lines if line.startswith("d_image.html")]
    assert any("image: missing.png did not load" in line for line in problems_d)
    assert any("console:" in line and "404" in line for line in problems_d)  # the failed request, too
    assert "console:" in found["e_console.html"] and "boom" in found["e_console.html"]
    assert "console:" in found["f_script.html"] and "undefined_function" in found["f_script.html"]
    assert "index.html" not in found
    assert lines[-1].startswith("check_pages: 7 pages at 1280 px") and "problem(s)" in lines[-1]


def test_the_width_is_the_viewport(tmp_path, capsys):
    check = _checker()
    site = _site(tmp_path, {"w.html": '<div style="width:1000px">a 1000 px block</div>'})
    assert check.main([str(site), "--width", "1280"]) == 0
    capsys.readouterr()
    assert check.main([str(site), "--width", "800"]) == 1
    assert "w.html: overflow: the page is 1000 px wide in a 800 px window" in capsys.readouterr().out
