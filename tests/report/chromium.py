"""Headless Chromium checks of report pages at a given width (flags: infrastructure notes §6).

:func:`check_page` loads a copy of a page with a small measuring script appended (same folder, so
relative links resolve), dumps the DOM and reads back what the script measured: the page's own
horizontal overflow (it must be 0: only tables may scroll sideways, inside their wrappers),
elements sticking out of the viewport that are not inside a scrolling table, the number of
tables and images, and whether the images loaded. :func:`screenshot` writes a PNG of the page.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-quic", "--hide-scrollbars"]

# Appended to a copy of the page: measures after load, writes JSON into <pre id="lb-check">.
_PROBE = """
<script>
window.addEventListener("load", () => {
  const vw = document.documentElement.clientWidth;
  const out = {viewport: vw, scroll_width: document.documentElement.scrollWidth, outside: [],
               tables: document.querySelectorAll("table").length, images: 0, broken: []};
  for (const img of document.querySelectorAll("img")) {
    out.images += 1;
    if (!(img.complete && img.naturalWidth > 0)) out.broken.push(img.getAttribute("src"));
  }
  const scrolls = (el) => { for (let p = el; p; p = p.parentElement) {
      const s = getComputedStyle(p); if (p !== el && /(auto|scroll)/.test(s.overflowX)) return true; }
    return false; };
  for (const el of document.querySelectorAll("body *")) {
    const r = el.getBoundingClientRect();
    if (r.width > 0 && r.right > vw + 1 && !scrolls(el)) out.outside.push(el.tagName + "." + el.className);
  }
  const pre = document.createElement("pre"); pre.id = "lb-check"; pre.textContent = JSON.stringify(out);
  document.body.appendChild(pre);
});
</script>
"""


def chromium() -> str | None:
    """Path of a Chromium binary, or None."""
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if shutil.which(name):
            return shutil.which(name)
    return None


def _run(browser: str, profile: Path, *args: str, timeout: int = 120) -> subprocess.CompletedProcess:
    return subprocess.run([browser, *FLAGS, f"--user-data-dir={profile}", *args], capture_output=True, text=True,
                          timeout=timeout, check=True)


def check_page(browser: str, page: Path, profile: Path, width: int = 1400, height: int = 1000) -> dict:
    """What the probe measured on ``page`` at ``width`` px (lazy images made eager for the check)."""
    html = page.read_text().replace('loading="lazy"', 'loading="eager"')
    probe = page.with_name(f"_probe-{page.name}")
    probe.write_text(html.replace("</body>", _PROBE + "</body>"))
    try:
        dom = _run(browser, profile, f"--window-size={width},{height}", "--virtual-time-budget=10000",
                   "--dump-dom", probe.as_uri()).stdout
    finally:
        probe.unlink()
    match = re.search(r'<pre id="lb-check">(.*?)</pre>', dom, re.DOTALL)
    if match is None:
        raise AssertionError(f"{page.name}: the probe did not run (no #lb-check in the dumped DOM)")
    return json.loads(match.group(1).replace("&quot;", '"').replace("&amp;", "&"))


def screenshot(browser: str, page: Path, out: Path, profile: Path, width: int = 1400, height: int = 1600) -> Path:
    """A PNG of the top ``height`` px of ``page`` at ``width`` px."""
    _run(browser, profile, f"--window-size={width},{height}", f"--screenshot={out}", page.as_uri())
    return out
