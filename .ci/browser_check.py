"""Open every page of a built book in headless Chromium, offline, and check that it renders.

Usage: python .ci/browser_check.py _build/html [screenshot_folder] [--summary FILE]   (or one page: .../book/x.html)

Chromium runs with a proxy to nowhere and every host name unresolvable, so a page that needs the network
fails. It is driven through the DevTools protocol over a pipe (--remote-debugging-pipe: NUL-terminated JSON
on file descriptors 3 and 4; standard library only). For each page, after the load event and MathJax's
startup promise:
- figures: every <img> has naturalWidth > 0;
- maths: every `.math` element of the page holds a rendered `mjx-container`, none is a TeX error, and no
  TeX delimiter ($$, \\(, \\[, \\begin{...}, $ before a TeX command) is left in the text outside code;
- no resource is requested from the network and no local file fails to load (scripts, fonts, CSS);
- no table or display equation sticks out of the text column (a wide one must sit in a sideways-scrolling box);
- no code line is cut: every code block (folded ones unfolded for the measure) fits its box or scrolls sideways;
- figures are not shrunk below readable text: a notebook figure shown at less than its natural width would put
  its smallest text (FIGURE_TEXT_PX at natural size, ke/book/plots.py) under MIN_TEXT_PX;
- the page is no wider than the window (nothing makes the whole page scroll sideways);
- the results at a glance (tables whose last column, "verdict", holds `.verdict` badges): its rows equal the
  claims of the book's summary.json
  (the build's _build/stage/book/summary.json, or --summary FILE), and every badge links to an existing anchor;
- a screenshot (top of the page, at most MAX_SHOT_HEIGHT px, scrolled to the top left) is saved and is not
  blank.
Prints one line per page; exits 1 with one line per problem.
"""
from __future__ import annotations

import base64
import json
import fcntl
import os
import re
import select
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--hide-scrollbars", "--mute-audio",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-default-apps", "--disable-extensions",
         # offline: every request goes to a proxy port nobody listens on, and no host name resolves
         "--proxy-server=127.0.0.1:9", "--proxy-bypass-list=<-loopback>", "--host-resolver-rules=MAP * ~NOTFOUND",
         "--remote-debugging-pipe"]
WIDTH, HEIGHT = 1280, 1000
MAX_SHOT_HEIGHT = 8000
PAGE_TIMEOUT = 90.0        # seconds for one page to load, typeset and report
LOCAL_SCHEMES = ("file:", "data:", "blob:", "about:", "chrome:", "devtools:")
MIN_TEXT_PX = 10.0
FIGURE_TEXT_PX = 8 * 100 / 72   # ke/book/plots.py: SMALLEST_PT * DPI / 72, the smallest text of a figure

# Runs inside the page after the load event; returns what the checks need as one JSON-able object.
INSPECT = r"""
(async () => {
  const sleep = ms => new Promise(resolve => setTimeout(resolve, ms));
  for (const img of document.images) img.loading = 'eager';
  await Promise.all([...document.images].map(img => img.complete ? null :
    new Promise(resolve => { img.addEventListener('load', resolve); img.addEventListener('error', resolve); })));
  const wantsMathJax = [...document.scripts].some(s => /mathjax/i.test(s.src));
  let waited = 0;
  while (wantsMathJax && !(window.MathJax && MathJax.startup && MathJax.startup.promise) && waited < 3000) {
    await sleep(50); waited += 50;
  }
  let mathjax = null;
  if (window.MathJax && MathJax.startup && MathJax.startup.promise) {
    await MathJax.startup.promise;
    mathjax = MathJax.version;
  }
  const skip = 'pre, code, script, style, textarea, mjx-container, .highlight';
  const walker = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
  const text = [];
  for (let node = walker.nextNode(); node; node = walker.nextNode())
    if (!node.parentElement.closest(skip)) text.push(node.textContent);
  const column = document.querySelector('article') || document.querySelector('main') || document.body;
  const right = column.getBoundingClientRect().right;
  const scrollBox = el => { for (let e = el; e && e !== column; e = e.parentElement) {
      const o = getComputedStyle(e).overflowX; if (o === 'auto' || o === 'scroll') return e; } return null; };
  const fits = el => {   // a table or a display equation: inside the column, or in a sideways-scrolling box
    const box = scrollBox(el);
    return {sticksOut: !box && el.getBoundingClientRect().right > right + 1,
            scrolls: !!box && box.scrollWidth > box.clientWidth + 1};
  };
  const tables = [...column.querySelectorAll('table')].map(fits);
  // code: unfold the folded cells for the measure (and fold them again before the screenshot)
  const folded = [...column.querySelectorAll('details:not([open])')];
  folded.forEach(d => d.open = true);
  const code = [...column.querySelectorAll('pre')].filter(pre => pre.clientWidth > 0).map(pre => {
    const box = scrollBox(pre);
    const wide = pre.scrollWidth > pre.clientWidth + 1;
    return {cut: (wide && !box) || (!box && pre.getBoundingClientRect().right > right + 1),
            line: (pre.textContent.split('\n').sort((a, b) => b.length - a.length)[0] || '').slice(0, 80)};
  });
  folded.forEach(d => d.open = false);
  const figures = [...column.querySelectorAll('.cell_output img')].filter(img => img.naturalWidth > 0)
    .map(img => ({src: img.getAttribute('src') || '', scale: img.getBoundingClientRect().width / img.naturalWidth}));
  const badges = [...column.querySelectorAll('a.verdict')].map(a => a.href);
  const lastHead = t => ([...t.querySelectorAll('thead th')].pop() || {textContent: ''}).textContent.trim();
  const glance = [...column.querySelectorAll('table')]   // claims with badges (not the list of figures)
    .filter(t => t.querySelector('td .verdict') && lastHead(t) === 'verdict')
    .flatMap(t => [...t.querySelectorAll('tbody tr')].map(tr => ({
      cells: [...tr.children].map(td => td.textContent.trim()),
      href: (tr.querySelector('a.verdict') || {}).href || ''})));
  const displays = [...column.querySelectorAll('mjx-container[display="true"]')].map(fits);
  const maths = [...document.querySelectorAll('.math')];
  return {
    title: document.title,
    mathjax,
    images: [...document.images].map(img => ({src: img.getAttribute('src') || '', width: img.naturalWidth})),
    math: maths.length,
    rendered: document.querySelectorAll('mjx-container').length,
    unrendered: maths.filter(m => !m.querySelector('mjx-container')).map(m => m.textContent.trim().slice(0, 60)),
    errors: [...document.querySelectorAll('mjx-merror')].map(e => e.textContent.slice(0, 60)),
    text: text.join(' '),
    tables,
    displays,
    code,
    figures,
    badges,
    glance,
    wide: document.documentElement.scrollWidth - document.documentElement.clientWidth,
    height: Math.ceil(document.documentElement.scrollHeight),
  };
})()
"""
RAW_TEX = ("$$", "\\(", "\\)", "\\[", "\\]", "\\begin{", "\\end{")
# a single $ that opens TeX the Markdown parser did not take as maths (e.g. a table cell cut at a "|")
RAW_DOLLAR = re.compile(r"\$[^\s$][^$]{0,80}?(\\[A-Za-z]+|[_^]\{)")


def chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")


def _above_9(fd: int) -> int:
    high = fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 10)
    os.close(fd)
    return high


class Browser:
    """Headless Chromium spoken to over the DevTools pipe: `call(method, params)` returns the result and
    keeps the events that arrived in between in `events`."""

    def __init__(self, executable: str):
        self.profile = tempfile.TemporaryDirectory()
        to_browser, self._commands = os.pipe()
        self._replies, from_browser = os.pipe()
        # The protocol reads commands from descriptor 3 and writes replies to 4. Move the child's ends above 9
        # first, so that placing them on 3 and 4 cannot overwrite one another (under pytest the pipes can land
        # anywhere, including on 3 and 4). Every other descriptor Python opens is closed on exec.
        to_browser, from_browser = (_above_9(fd) for fd in (to_browser, from_browser))

        def place_descriptors():
            os.dup2(to_browser, 3)
            os.dup2(from_browser, 4)

        self.process = subprocess.Popen([executable, *FLAGS, f"--user-data-dir={self.profile.name}", "about:blank"],
                                        preexec_fn=place_descriptors, close_fds=False,  # dup2 leaves 3, 4 open
                                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        os.close(to_browser)
        os.close(from_browser)
        self._buffer, self._next_id, self.events = b"", 0, []

    def send(self, method: str, params: dict | None = None, session: str | None = None) -> int:
        self._next_id += 1
        message = {"id": self._next_id, "method": method, "params": params or {}}
        if session:
            message["sessionId"] = session
        os.write(self._commands, json.dumps(message).encode() + b"\0")
        return self._next_id

    def receive(self, deadline: float) -> dict:
        while b"\0" not in self._buffer:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self._replies], [], [], left)[0]:
                raise TimeoutError("Chromium did not answer in time")
            chunk = os.read(self._replies, 1 << 20)
            if not chunk:
                raise EOFError("Chromium closed the DevTools pipe")
            self._buffer += chunk
        message, self._buffer = self._buffer.split(b"\0", 1)
        return json.loads(message)

    def call(self, method: str, params: dict | None = None, session: str | None = None,
             timeout: float = PAGE_TIMEOUT) -> dict:
        number, deadline = self.send(method, params, session), time.monotonic() + timeout
        while True:
            message = self.receive(deadline)
            if message.get("id") == number:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error'].get('message')}")
                return message.get("result", {})
            self.events.append(message)

    def wait_for(self, event: str, session: str, timeout: float = PAGE_TIMEOUT) -> None:
        deadline = time.monotonic() + timeout
        while not any(e.get("method") == event and e.get("sessionId") == session for e in self.events):
            self.events.append(self.receive(deadline))

    def close(self) -> None:
        try:
            self.send("Browser.close")
            self.process.wait(timeout=20)
        except (OSError, subprocess.TimeoutExpired):
            self.process.kill()
            self.process.wait()
        os.close(self._commands)
        os.close(self._replies)
        self.profile.cleanup()


def non_blank(png: Path) -> bool:
    """True when the picture has more than one colour (matplotlib decodes PNG without extra dependencies)."""
    import matplotlib.image
    pixels = matplotlib.image.imread(str(png))
    return pixels.size > 0 and float(pixels.std()) > 0.01


def inspect(browser: Browser, url: str, shot: Path) -> tuple[dict, list[dict]]:
    """Load `url` in a fresh tab, save its screenshot to `shot`; return what INSPECT reports and the tab's
    network events."""
    target = browser.call("Target.createTarget", {"url": "about:blank"})["targetId"]
    session = browser.call("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
    try:
        for domain in ("Page.enable", "Network.enable"):
            browser.call(domain, session=session)
        browser.call("Emulation.setDeviceMetricsOverride",
                     {"width": WIDTH, "height": HEIGHT, "deviceScaleFactor": 1, "mobile": False}, session=session)
        browser.events.clear()
        navigation = browser.call("Page.navigate", {"url": url}, session=session)
        if navigation.get("errorText"):
            raise RuntimeError(f"navigation failed: {navigation['errorText']}")
        browser.wait_for("Page.loadEventFired", session)
        found = browser.call("Runtime.evaluate", {"expression": INSPECT, "awaitPromise": True,
                                                  "returnByValue": True}, session=session)
        if "exceptionDetails" in found:
            raise RuntimeError(f"the inspection script failed: {found['exceptionDetails'].get('text')}")
        page = found["result"]["value"]
        # The full-page screenshot: a window as tall as the page (at most MAX_SHOT_HEIGHT), the width unchanged.
        # Not captureBeyondViewport: that lays the page out at its scroll size, so a page that something makes
        # wider than the window came out shifted sideways (left column and line starts cut; `wide` reports it).
        height = max(HEIGHT, min(page["height"], MAX_SHOT_HEIGHT))
        browser.call("Emulation.setDeviceMetricsOverride",
                     {"width": WIDTH, "height": height, "deviceScaleFactor": 1, "mobile": False}, session=session)
        browser.call("Runtime.evaluate", {"expression": "window.scrollTo(0, 0)"}, session=session)
        picture = browser.call("Page.captureScreenshot", {
            "format": "png", "clip": {"x": 0, "y": 0, "width": WIDTH, "height": height, "scale": 1}}, session=session)
        shot.write_bytes(base64.b64decode(picture["data"]))
        network = [e for e in browser.events if e.get("sessionId") == session and e["method"].startswith("Network.")]
        return page, network
    finally:
        browser.call("Target.closeTarget", {"targetId": target})


def anchor_exists(url: str) -> bool:
    """Whether a file:// link's page exists and holds its #fragment as an id."""
    from urllib.parse import unquote, urlsplit
    parts = urlsplit(url)
    file = Path(unquote(parts.path))
    if parts.scheme != "file" or not file.is_file():
        return False
    return not parts.fragment or re.search(rf'id="{re.escape(unquote(parts.fragment))}"', file.read_text()) is not None


def chapter_of(url: str) -> str:
    """The chapter a badge links to: the stem of its page ("file:///.../entropy.html#x" -> "entropy")."""
    from urllib.parse import unquote, urlsplit
    return Path(unquote(urlsplit(url).path)).stem


def claim_rows(summary: dict) -> list[tuple[str, ...]]:
    """(chapter, figure, claim, verdict) of every claim of a summary.json, in reading order."""
    return [(chapter, c["figure"], c["statement"], c["verdict"]) for chapter, data in summary.items()
            if isinstance(data, dict) and "claims" in data for c in data["claims"]]


def squeeze(text: str) -> str:
    """Text to compare: whitespace collapsed, Sphinx's typographic quotes (smartquotes) made plain again."""
    return " ".join(text.translate(str.maketrans("‘’“”", "''\"\"")).split())


def problems_of(name: str, page: dict, network: list[dict], summary: dict | None = None) -> list[str]:
    """The checks of the module docstring, one line per problem, for a page's INSPECT report (`summary`: the
    book's summary.json, which the glance table must show)."""
    found = []
    requests = {e["params"]["requestId"]: e["params"]["request"]["url"]
                for e in network if e["method"] == "Network.requestWillBeSent"}
    external = sorted({url for url in requests.values() if not url.startswith(LOCAL_SCHEMES)})
    if external:
        found.append(f"{name}: requests {len(external)} resource(s) from the network, e.g. {external[0]}")
    failed = sorted({requests.get(e["params"]["requestId"], "?") for e in network
                     if e["method"] == "Network.loadingFailed" and not e["params"].get("canceled")} - set(external))
    if failed:
        found.append(f"{name}: {len(failed)} local file(s) failed to load, e.g. {failed[0]}")
    broken = [img["src"] for img in page["images"] if img["width"] == 0]
    if broken:
        found.append(f"{name}: {len(broken)} of {len(page['images'])} images did not load, e.g. {broken[0]}")
    if page["math"] and page["mathjax"] is None:
        found.append(f"{name}: {page['math']} equations but MathJax did not start")
    if page["unrendered"]:
        found.append(f"{name}: {len(page['unrendered'])} of {page['math']} equations not rendered, "
                     f"e.g. {page['unrendered'][0]!r}")
    if page["errors"]:
        found.append(f"{name}: {len(page['errors'])} TeX error(s), e.g. {page['errors'][0]!r}")
    raw = [(page["text"].find(token), token) for token in RAW_TEX if token in page["text"]]
    dollar = RAW_DOLLAR.search(page["text"])
    if dollar:
        raw.append((dollar.start(), "$"))
    if raw:
        at, token = min(raw)
        found.append(f"{name}: raw TeX {token!r} left in the text: {page['text'][max(0, at - 30):at + 40]!r}")
    for kind in ("tables", "displays"):
        cut = sum(1 for t in page[kind] if t["sticksOut"])
        if cut:
            what = "table(s)" if kind == "tables" else "display equation(s)"
            found.append(f"{name}: {cut} {what} stick out of the text column without a horizontal scrollbar")
    cut = [c["line"] for c in page.get("code", []) if c["cut"]]
    if cut:
        found.append(f"{name}: {len(cut)} code block(s) cut at the column's edge (no horizontal scrollbar), "
                     f"e.g. {cut[0]!r}")
    small = [f for f in page.get("figures", []) if FIGURE_TEXT_PX * f["scale"] < MIN_TEXT_PX - 0.05]
    if small:
        found.append(f"{name}: {len(small)} figure(s) shown at {min(f['scale'] for f in small):.0%} of their size, "
                     f"their smallest text under {MIN_TEXT_PX:g} px, e.g. {small[0]['src'][:60]}")
    if page.get("wide", 0) > 1:
        found.append(f"{name}: the page is {page['wide']} px wider than the window (it scrolls sideways)")
    dead = [href for href in page.get("badges", []) if not anchor_exists(href)]
    if dead:
        found.append(f"{name}: {len(dead)} verdict badge(s) link to no anchor, e.g. {dead[0]}")
    if page.get("glance") and summary is not None:
        # a row: figure, claim, paper, ours, verdict; its chapter is the page its badge links to
        shown = [tuple(squeeze(cell) for cell in (chapter_of(row["href"]), row["cells"][0], row["cells"][1],
                                                   row["cells"][-1])) for row in page["glance"]]
        expected = [tuple(squeeze(cell) for cell in row) for row in claim_rows(summary)]
        if shown != expected:
            first = next((i for i, (a, b) in enumerate(zip(shown, expected)) if a != b), min(len(shown), len(expected)))
            found.append(f"{name}: the glance table shows {len(shown)} claims, summary.json has {len(expected)}; "
                         f"first difference at row {first + 1}: "
                         f"{shown[first] if first < len(shown) else None} != "
                         f"{expected[first] if first < len(expected) else None}")
    return found


def redirect_of(file: Path) -> str | None:
    """The target of a page that only redirects (Jupyter Book's index.html), else None."""
    match = re.match(r'\s*<meta http-equiv="refresh" content="\d+;\s*url=([^"]+)"', file.read_text()[:500], re.I)
    return match.group(1) if match else None


def pages_of(path: Path) -> tuple[Path, list[Path]]:
    """(root, pages): every HTML page of a built book (not Sphinx's index and search pages), or one page."""
    if path.is_file():
        return path.parent, [path]
    pages = [p for p in sorted(path.rglob("*.html"))
             if p.name not in ("genindex.html", "search.html", "py-modindex.html")
             and not any(part.startswith("_") for part in p.relative_to(path).parts)]
    return path, pages


def check_page(browser: Browser, root: Path, file: Path, shots: Path, summary: dict | None = None,
               seen: list | None = None) -> tuple[str, list[str]]:
    """(one summary line, problems) for one page; a page with a glance table is appended to `seen`."""
    name = file.relative_to(root).as_posix()
    target = redirect_of(file)
    if target is not None:
        exists = (file.parent / target).is_file()
        return f"{'ok  ' if exists else 'FAIL'} {name}: redirects to {target}", \
            [] if exists else [f"{name}: redirects to {target}, which does not exist"]
    shot = shots / (name.replace("/", "_").removesuffix(".html") + ".png")
    try:
        page, network = inspect(browser, file.resolve().as_uri(), shot)
    except (RuntimeError, TimeoutError) as error:
        return f"FAIL {name}", [f"{name}: {error}"]
    found = problems_of(name, page, network, summary)
    if page["glance"] and seen is not None:
        seen.append(name)
    if not non_blank(shot):
        found.append(f"{name}: the screenshot {shot} is blank")
    loaded = sum(1 for img in page["images"] if img["width"] > 0)
    scrolling = sum(1 for t in page["tables"] + page["displays"] if t["scrolls"])
    return (f"{'ok  ' if not found else 'FAIL'} {name}: figures {loaded}/{len(page['images'])} loaded, "
            f"equations {page['rendered']}/{page['math']} rendered, tables {len(page['tables'])}, "
            f"{scrolling} wider than the column (scrolling)"
            + (f", glance {len(page['glance'])} claims, badges {len(page['badges'])}" if page["badges"] else "")), found


def summary_of(path: Path, summary: Path | None) -> dict | None:
    """The claims the book's glance must show: --summary FILE, else the summary.json the build staged next to the
    HTML (_build/stage/book/summary.json for _build/html), else None (the glance is not compared)."""
    if summary is None and Path(path).is_dir():
        staged = Path(path).parent / "stage" / "book" / "summary.json"
        summary = staged if staged.is_file() else None
    return json.loads(Path(summary).read_text()) if summary else None


def check(path: Path, screenshots: Path | None = None, report=print, summary: Path | None = None) -> list[str]:
    """Check a built book (a folder) or one page; return one line per problem (empty: every page renders).
    `report` receives one summary line per page; screenshots go to `screenshots` (default: a new temporary
    folder); `summary`: the summary.json the glance table must equal (default: see summary_of)."""
    path = Path(path)
    executable = chromium()
    if executable is None:
        return ["chromium is not installed (apt-get install chromium)"]
    if not path.exists():
        return [f"{path} does not exist (build the book first: make book)"]
    root, pages = pages_of(path)
    if not pages:
        return [f"{path} holds no HTML pages"]
    shots = Path(screenshots) if screenshots else Path(tempfile.mkdtemp(prefix="browser-check-"))
    shots.mkdir(parents=True, exist_ok=True)
    problems, seen = [], []
    claims = summary_of(path, summary)
    browser = Browser(executable)
    try:
        for file in pages:
            line, found = check_page(browser, root, file, shots, claims, seen)
            report(line)
            problems += found
        if claims and claim_rows(claims) and path.is_dir() and not seen:
            problems.append(f"{path}: no page shows the results at a glance (a table of verdict badges)")
    except EOFError as error:  # the browser died: the remaining pages cannot be checked
        problems.append(f"{path}: {error}")
    finally:
        browser.close()
    report(f"screenshots in {shots}")
    return problems


if __name__ == "__main__":
    arguments = sys.argv[1:]
    summary_file = None
    if "--summary" in arguments:
        at = arguments.index("--summary")
        summary_file = Path(arguments[at + 1]) if at + 1 < len(arguments) else None
        arguments = arguments[:at] + arguments[at + 2:]
    if len(arguments) not in (1, 2) or ("--summary" in sys.argv and summary_file is None):
        sys.exit(__doc__.split("\n\n")[1])
    found = check(Path(arguments[0]), Path(arguments[1]) if len(arguments) > 1 else None, summary=summary_file)
    print("\n".join(found) or f"ok: every page of {sys.argv[1]} renders its figures and equations offline")
    sys.exit(1 if found else 0)
