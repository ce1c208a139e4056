"""docs/gallery/index.html, written by `python docs/figures.py --gallery`: up to date with what it is made
from, static (no script, nothing from the network), and loaded by a real browser without a console error
or an image that failed to load.

The browser is headless Chromium driven over the Chrome DevTools Protocol with the standard library
alone: `--remote-debugging-pipe` makes Chromium read NUL-terminated JSON commands on its file
descriptor 3 and write its answers and events on 4, so no websocket, port, driver or package is needed.
The test skips, saying why, only where no Chromium is installed (`.ci/run` installs Debian's `chromium`
where it can)."""
import fcntl
import importlib.util
import json
import os
import re
import select
import shutil
import signal
import tempfile
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
PAGE = DOCS / "gallery" / "index.html"
BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")

_spec = importlib.util.spec_from_file_location("figures", DOCS / "figures.py")
figures = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(figures)


def pictures(folder):
    return sorted(p for p in Path(folder).iterdir() if p.suffix in (".png", ".gif"))


# ---------------------------------------------------------------------- the page and what it is made from
def test_the_committed_page_is_what_gallery_writes(tmp_path):
    for p in pictures(DOCS):
        shutil.copy(p, tmp_path / p.name)
    figures.main(["--gallery", "--out", str(tmp_path)])
    fresh = (tmp_path / "gallery" / "index.html").read_text(encoding="utf-8")
    assert PAGE.read_text(encoding="utf-8") == fresh, \
        "docs/gallery/index.html is stale: run python docs/figures.py --gallery and commit it"


def test_the_page_shows_every_picture_and_needs_no_script_and_no_network():
    page = PAGE.read_text(encoding="utf-8")
    shown = re.findall(r'<img src="\.\./([^"]+)"', page)
    assert sorted(shown) == [p.name for p in pictures(DOCS)]
    assert len(shown) == len(set(shown))
    assert "<script" not in page.lower() and not re.search(r"""(src|href)=["']?(https?:)?//""", page)
    assert "ddpm_trajectory.gif" in shown and "dalle.png" in shown
    links = re.findall(r'href="([^"#]+)[^"]*"', page)
    assert len(links) > 40
    for link in links:
        assert (PAGE.parent / link).exists(), f"the gallery links to {link}, which does not exist"
    readme_rows = figures.course_table((ROOT / "README.md").read_text(encoding="utf-8"))
    assert page.count('<section class="model"') == len(readme_rows)
    for row in readme_rows:                                   # each row's headline figure, as README has it
        assert figures.inline_html(row["headline figure"]) in page


def test_the_headline_figures_command_is_read_from_its_row():
    results = ("# Part\n\n## Model A\n\nProse with `python -m tinygen sweep-a`.\n\n"
               "| recipe | figure | command |\n| --- | --- | --- |\n"
               "| other | **114.15** | `python other` |\n| recipe | **114.1** / 2.3 | `python -m tinygen train a` |\n\n"
               "| n | FID-judge |\n| --- | --- |\n| 10 | 47.7 |\n\n## Model B\n\n| x | command |\n| --- | --- |\n"
               "| 99.6% | `python b` |\n")
    assert figures.headline_command(results, "model-a", "FID-judge 114.1") == "`python -m tinygen train a`"
    assert figures.headline_command(results, "model-a", "FID-judge 47.7 (n = 1,000)") == "`python -m tinygen sweep-a`"
    assert figures.headline_command(results, "model-a", "99.6%") is None        # Model B's, not A's
    assert figures.headline_command(results, "model-b", "judge accuracy 99.6% at s = 2") == "`python b`"
    assert figures.headline_command(results, "model-c", "1.0") is None
    assert figures.lecture_title("4", "# Results\n# Lesson 4: gen\n") == "Lesson 4: gen"
    assert figures.lecture_title("overview", "# Overview: deep\n") == "Overview: deep"
    assert figures.page_href("docs/results.md#gan") == "../results.md#gan"
    assert figures.page_href("tinygen/models/gan.py") == "../../tinygen/models/gan.py"
    assert figures.page_href("#ddpm", "docs/results.md") == "../results.md#ddpm"
    assert figures.page_href("models/vae.md", "docs/results.md") == "../models/vae.md"
    assert figures.inline_html("**1.5** / `a<b` [x](docs/cli.md)") == \
        '<b>1.5</b> / <code>a&lt;b</code> <a href="../cli.md">x</a>'
    assert figures.picture_captions(DOCS / "models")["vit_rollout.png"] == \
        "ViT: test images beside their attention rollout from [CLS]"
    assert figures.picture_key("dvae_rolfe_c64_prior_samples") == "dvae_rolfe_c64"
    assert figures.picture_key("vae_manifold") == "vae2d" and figures.picture_key("nothing") is None


def test_a_page_it_did_not_write_is_left_alone(tmp_path, capsys):
    (tmp_path / "gallery").mkdir()
    mine = tmp_path / "gallery" / "index.html"
    mine.write_text("<p>my own page</p>")
    with pytest.raises(SystemExit) as e:
        figures.main(["--gallery", "--out", str(tmp_path)])
    assert e.value.code == 2 and mine.read_text() == "<p>my own page</p>"
    err = capsys.readouterr().err.strip()
    assert "was not written by --gallery" in err and len(err.splitlines()) == 1
    with pytest.raises(SystemExit) as e:
        figures.main(["--gallery", "--out", str(tmp_path / "missing")])
    assert e.value.code == 2 and "no folder" in capsys.readouterr().err


# ---------------------------------------------------------------------- a real browser
def find_browser():
    for name in BROWSERS:
        path = shutil.which(name)
        if path:
            return path
    return None


class Chromium:
    """Headless Chromium over the DevTools protocol on a pipe: send(method, params) -> result; the events
    of the page (console calls, exceptions, log entries) are kept in self.events."""

    def __init__(self, executable, timeout=30.0):
        self.timeout, self.buffer, self.events, self.next_id = timeout, b"", [], 0
        self.profile = tempfile.mkdtemp(prefix="tinygen-chromium-")
        to_browser, self.out = os.pipe()          # we write commands to self.out; it reads fd 3
        self.inp, from_browser = os.pipe()        # it writes fd 4; we read self.inp
        # the child's ends copied to free descriptors above 4 first, so that the dup2s into 3 and 4 below
        # cannot overwrite one another
        ends = [fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 5) for fd in (to_browser, from_browser)]
        os.close(to_browser)
        os.close(from_browser)
        args = [executable, "--headless", "--disable-gpu", "--no-first-run", "--no-default-browser-check",
                "--disable-dev-shm-usage", "--remote-debugging-pipe", f"--user-data-dir={self.profile}"]
        if os.geteuid() == 0:
            args.append("--no-sandbox")           # Chromium refuses to run as root with its sandbox
        actions = [(os.POSIX_SPAWN_DUP2, ends[0], 3), (os.POSIX_SPAWN_DUP2, ends[1], 4),
                   (os.POSIX_SPAWN_OPEN, 1, os.devnull, os.O_WRONLY, 0),
                   (os.POSIX_SPAWN_OPEN, 2, os.devnull, os.O_WRONLY, 0)]
        self.pid = os.posix_spawn(executable, args, os.environ, file_actions=actions)
        for fd in ends:
            os.close(fd)

    def _message(self, deadline):
        while b"\0" not in self.buffer:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self.inp], [], [], left)[0]:
                raise TimeoutError("Chromium did not answer in time")
            chunk = os.read(self.inp, 1 << 16)
            if not chunk:
                raise ConnectionError("Chromium closed its pipe")
            self.buffer += chunk
        message, self.buffer = self.buffer.split(b"\0", 1)
        return json.loads(message)

    def send(self, method, params=None, session=None):
        self.next_id += 1
        command = {"id": self.next_id, "method": method, "params": params or {}}
        if session:
            command["sessionId"] = session
        os.write(self.out, json.dumps(command).encode() + b"\0")
        deadline = time.monotonic() + self.timeout
        while True:
            message = self._message(deadline)
            if message.get("id") == self.next_id:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                return message["result"]
            self.events.append(message)

    def wait_for(self, method, session):
        deadline = time.monotonic() + self.timeout
        while True:
            message = self._message(deadline)
            self.events.append(message)
            if message.get("method") == method and message.get("sessionId") == session:
                return message

    def load(self, url):
        """Open `url` in a new tab and wait for its load event: (the page's errors, its images as
        [src, complete, naturalWidth])."""
        target = self.send("Target.createTarget", {"url": "about:blank"})["targetId"]
        session = self.send("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        for domain in ("Page", "Runtime", "Log"):
            self.send(f"{domain}.enable", session=session)
        start = len(self.events)
        self.send("Page.navigate", {"url": url}, session=session)
        self.wait_for("Page.loadEventFired", session)
        images = self.send("Runtime.evaluate", {
            "expression": "JSON.stringify(Array.from(document.images, i => [i.getAttribute('src'), i.complete, "
                          "i.naturalWidth]))", "returnByValue": True}, session=session)["result"]["value"]
        return page_errors(self.events[start:], session), json.loads(images)

    def close(self):
        try:
            self.send("Browser.close")
        except (OSError, TimeoutError, ConnectionError, RuntimeError):
            pass
        for _ in range(50):
            if os.waitpid(self.pid, os.WNOHANG)[0]:
                break
            time.sleep(0.1)
        else:
            os.kill(self.pid, signal.SIGKILL)
            os.waitpid(self.pid, 0)
        os.close(self.out)
        os.close(self.inp)
        shutil.rmtree(self.profile, ignore_errors=True)


def page_errors(events, session):
    """The console errors, uncaught exceptions and error log entries (failed loads) among `events`."""
    errors = []
    for e in events:
        if e.get("sessionId") != session:
            continue
        p = e.get("params", {})
        if e.get("method") == "Runtime.consoleAPICalled" and p.get("type") in ("error", "assert"):
            errors.append("console: " + " ".join(str(a.get("value", a.get("description", ""))) for a in p["args"]))
        elif e.get("method") == "Runtime.exceptionThrown":
            errors.append("exception: " + p["exceptionDetails"].get("text", ""))
        elif e.get("method") == "Log.entryAdded" and p["entry"].get("level") == "error":
            entry = p["entry"]
            errors.append(f"{entry.get('source')}: {entry.get('text')} {entry.get('url', '')}".strip())
    return errors


@pytest.fixture(scope="module")
def browser():
    executable = find_browser()
    if executable is None:
        pytest.skip(f"no Chromium found (looked for {', '.join(BROWSERS)}); on Debian: apt-get install chromium")
    chromium = Chromium(executable)
    yield chromium
    chromium.close()


def test_the_browser_check_sees_a_broken_image_and_a_console_error(browser, tmp_path):
    """The check below can fail: a page with a missing picture and a console.error is caught on both."""
    shutil.copy(DOCS / "gan.png", tmp_path / "gan.png")
    (tmp_path / "bad.html").write_text('<!DOCTYPE html><html><head><meta charset="utf-8"><title>t</title></head>'
                                       '<body><img src="gan.png" alt="a"><img src="missing.png" alt="b">'
                                       '<script>console.error("boom")</script></body></html>')
    errors, images = browser.load((tmp_path / "bad.html").as_uri())
    assert any("boom" in e for e in errors), errors
    assert any("missing.png" in e or "ERR_FILE_NOT_FOUND" in e for e in errors), errors
    widths = {src: width for src, _, width in images}
    assert widths["gan.png"] > 0 and widths["missing.png"] == 0


def test_the_gallery_loads_in_a_browser_without_errors_and_with_every_image(browser):
    errors, images = browser.load(PAGE.as_uri())
    assert errors == [], f"the gallery's console errors: {errors}"
    assert len(images) == len(pictures(DOCS))
    broken = [src for src, complete, width in images if not complete or width == 0]
    assert broken == [], f"images that did not load: {broken}"
