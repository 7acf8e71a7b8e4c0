"""Load every built documentation page in a real headless browser and check what a reader sees.

    python docs/check_pages.py docs/_build/html [--width 1280]      (``make docs-check``)

The pages are served over HTTP from a local server (as a reader's browser gets
them, so scripts that fetch files behave as they will online) and opened in
Chromium through chromedriver (Debian's ``chromium`` and ``chromium-driver``;
selenium from the ``docs`` extra) with a viewport exactly ``--width`` pixels
wide.  A page fails when

* it overflows horizontally: the page itself scrolls sideways, or a table or
  code block is wider than its box, so that part of it is clipped or hidden
  behind a scroll bar;
* an image does not load (a missing file, a broken reference);
* the browser console reports an error (a failed request, a script error).

Every problem is one line ``page: what``; the exit status is 1 if there is any.
"""

from __future__ import annotations

import argparse
import functools
import http.server
import os
import shutil
import sys
import tempfile
import threading
from pathlib import Path

#: Chromium flags that work headless, as root, in a container, offline.
CHROMIUM_FLAGS = (
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--disable-dev-shm-usage",
)

#: Elements whose content must fit their box: tables and code blocks (and the wrappers themes put around them).
CLIPPABLE = "pre, table, div.highlight, .table-wrapper, .pst-scrollable-table-container, div.math, .MathJax"

# Runs in the page: every problem it can see, as [kind, detail] pairs.
INSPECT = """
const done = arguments[arguments.length - 1];
const selector = arguments[0];
// Math typeset first (MathJax changes widths), then measure.
const typeset = (window.MathJax && MathJax.startup && MathJax.startup.promise) || Promise.resolve();
typeset.catch(() => null).then(() => {
  const problems = [];
  const width = window.innerWidth;
  const page = document.documentElement.scrollWidth;
  if (page > width) problems.push(["overflow", `the page is ${page} px wide in a ${width} px window`]);
  for (const el of document.querySelectorAll(selector)) {
    if (el.closest("[hidden]") || el.offsetParent === null) continue;  // not displayed
    // a box narrower than its content; or a table wider than the box that holds it
    let inner = el.scrollWidth, box = el.clientWidth;
    if (el.tagName === "TABLE" && el.parentElement) {
      const outer = el.parentElement.clientWidth, wide = el.getBoundingClientRect().width;
      if (wide > outer + 1 && wide - outer > inner - box) { inner = Math.round(wide); box = outer; }
    }
    if (inner > box + 1) {
      const text = (el.innerText || "").trim().split("\\n")[0].slice(0, 60);
      problems.push(["clipped", `<${el.tagName.toLowerCase()} class="${el.className}"> shows ${box} of ${inner} px: "${text}"`]);
    }
  }
  const images = Array.from(document.images);
  images.forEach(img => { img.loading = "eager"; });
  return Promise.all(images.map(img => img.complete ? Promise.resolve() :
      new Promise(ok => { img.addEventListener("load", ok); img.addEventListener("error", ok); })))
    .then(() => {
      for (const img of images) {
        if (!img.naturalWidth) problems.push(["image", `${img.getAttribute("src")} did not load`]);
      }
      done(problems);
    });
});
"""


def pages(root: Path) -> list[Path]:
    """Every HTML page of the build, in a stable order (theme and source folders left out)."""
    skip = {"_static", "_sources", "_images", "_downloads"}
    found = []
    for folder, dirs, files in os.walk(root):
        dirs[:] = sorted(d for d in dirs if d not in skip)
        found += [Path(folder) / f for f in sorted(files) if f.endswith(".html")]
    return found


def serve(root: Path):
    """A quiet HTTP server for ``root`` on a free local port, in a daemon thread; returns (server, base URL)."""

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):  # the browser console reports failed requests
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Quiet, directory=str(root)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}/"


def browser(width: int, profile: str, chromium: str, chromedriver: str):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={profile}")
    options.add_argument(f"--window-size={width},900")
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(options=options, service=Service(executable_path=chromedriver))
    # The viewport exactly `width` CSS pixels wide (the window size includes no chrome headless, but be exact).
    driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride",
                           {"width": width, "height": 900, "deviceScaleFactor": 1, "mobile": False})
    driver.set_script_timeout(30)
    driver.set_page_load_timeout(60)
    return driver


def check_page(driver, url: str, width: int) -> list[str]:
    driver.get(url)
    got = driver.execute_script("return window.innerWidth")
    if got != width:
        return [f"the window is {got} px wide, not {width}: the check cannot run"]
    problems = [f"{kind}: {detail}" for kind, detail in driver.execute_async_script(INSPECT, CLIPPABLE)]
    for entry in driver.get_log("browser"):
        if entry.get("level") == "SEVERE":
            problems.append(f"console: {entry.get('message', '').strip()}")
    return problems


def find(program: str, option: str) -> str:
    path = shutil.which(program)
    if path is None:
        raise SystemExit(
            f"check_pages: {program} not found on PATH (give {option}); on Debian: "
            f"apt-get install chromium chromium-driver"
        )
    return path


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("build", type=Path, help="the built HTML, e.g. docs/_build/html")
    parser.add_argument("--width", type=int, default=1280, help="viewport width in CSS pixels (default 1280)")
    parser.add_argument("--chromium", help="the Chromium binary (default: chromium on PATH)")
    parser.add_argument("--chromedriver", help="chromedriver (default: chromedriver on PATH)")
    args = parser.parse_args(argv)
    if not (args.build / "index.html").is_file():
        parser.error(f"{args.build} has no index.html: build the docs first (make docs)")
    chromium = args.chromium or find("chromium", "--chromium")
    chromedriver = args.chromedriver or find("chromedriver", "--chromedriver")
    found = pages(args.build)
    server, base = serve(args.build)
    failures = 0
    with tempfile.TemporaryDirectory(prefix="convmat-docs-check-") as profile:
        driver = browser(args.width, profile, chromium, chromedriver)
        try:
            for page in found:
                rel = page.relative_to(args.build).as_posix()
                for problem in check_page(driver, base + rel, args.width):
                    print(f"{rel}: {problem}")
                    failures += 1
        finally:
            driver.quit()
            server.shutdown()
    verdict = "no problems" if not failures else f"{failures} problem(s)"
    print(f"check_pages: {len(found)} pages at {args.width} px in {Path(chromium).name}: {verdict}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
