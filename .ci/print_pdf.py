"""The book as one PDF, offline: Jupyter Book's one-page HTML build (`singlehtml`) of the executed book, printed by
the headless Chromium of the browser check (DevTools `Page.printToPDF`, after MathJax has typeset every equation).

Usage: python .ci/print_pdf.py [book_source] [out.pdf]    (defaults: _build/stage, written by `make book`, and
_build/book.pdf). Jupyter Book's own `pdfhtml` builder is not used: it goes through pyppeteer, which downloads a
browser of its own.
"""
from __future__ import annotations

import base64
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from browser_check import Browser, chromium, redirect_of  # noqa: E402

READY = r"""
(async () => {
  document.querySelectorAll('details').forEach(d => d.open = false);   // code stays folded on paper
  await Promise.all([...document.images].map(img => img.complete ? null :
    new Promise(resolve => { img.addEventListener('load', resolve); img.addEventListener('error', resolve); })));
  for (let waited = 0; !(window.MathJax && MathJax.startup && MathJax.startup.promise) && waited < 5000; waited += 50)
    await new Promise(resolve => setTimeout(resolve, 50));
  if (window.MathJax && MathJax.startup) await MathJax.startup.promise;
  return document.querySelectorAll('mjx-container').length;
})()
"""


def single_page(source: Path) -> Path:
    """Build the one-page HTML of a Jupyter Book source folder (execution is off in _config.yml)."""
    jupyter_book = Path(sys.executable).parent / "jupyter-book"
    done = subprocess.run([str(jupyter_book), "build", str(source), "--builder", "singlehtml"],
                          capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"jupyter-book singlehtml failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    index = source / "_build" / "singlehtml" / "index.html"
    target = redirect_of(index)   # Jupyter Book's index.html only redirects to the root page, which holds the book
    if not target:
        return index
    # that page (book/intro.html) links its scripts, styles and images as if it sat next to index.html: put it there
    page = index.parent / "book.html"
    page.write_text((index.parent / target).read_text())
    return page


def print_pdf(page: Path, out: Path, timeout: float = 300) -> int:
    """Print one HTML page to `out` (A4, backgrounds kept); returns how many equations MathJax typeset."""
    executable = chromium()
    if executable is None:
        raise RuntimeError("chromium is not installed (apt-get install chromium)")
    browser = Browser(executable)
    try:
        target = browser.call("Target.createTarget", {"url": "about:blank"})["targetId"]
        session = browser.call("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        browser.call("Page.enable", session=session)
        browser.call("Page.navigate", {"url": page.resolve().as_uri()}, session=session)
        browser.wait_for("Page.loadEventFired", session, timeout)
        equations = browser.call("Runtime.evaluate", {"expression": READY, "awaitPromise": True,
                                                      "returnByValue": True}, session=session, timeout=timeout)
        pdf = browser.call("Page.printToPDF", {"printBackground": True, "paperWidth": 8.27, "paperHeight": 11.69,
                                               "marginTop": 0.5, "marginBottom": 0.5, "marginLeft": 0.5,
                                               "marginRight": 0.5}, session=session, timeout=timeout)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_bytes(base64.b64decode(pdf["data"]))
        return equations.get("result", {}).get("value", 0)
    finally:
        browser.close()


if __name__ == "__main__":
    source = Path(sys.argv[1]) if len(sys.argv) > 1 else Path("_build/stage")
    out = Path(sys.argv[2]) if len(sys.argv) > 2 else Path("_build/book.pdf")
    if chromium() is None:
        print("printing the PDF needs Chromium, which is not installed here: apt-get install chromium",
              file=sys.stderr)
        sys.exit(2)
    if not (source / "_toc.yml").is_file():
        sys.exit(f"{source} holds no executed book: run `make book` first.")
    count = print_pdf(single_page(source), out)
    print(f"wrote {out} ({out.stat().st_size // 1024} KiB, {count} equations typeset)")
