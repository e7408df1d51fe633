"""The report in a real browser: headless Chromium loads it from a copied folder, offline.

Talks the Chrome DevTools protocol over ``--remote-debugging-pipe`` (file descriptors 3/4,
NUL-separated JSON), so no websocket client, npm or browser download is needed; only
Debian's ``chromium`` package (installed by .ci/run). Skips with the reason when it is absent.
"""

from __future__ import annotations

import base64
import json
import os
import queue
import shutil
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import pytest
from _report_data import make_report_dataset

from mcpvs_bidsapp.reports.layout import VIEWER, load_layout
from mcpvs_bidsapp.reports.participant import build_participant_report

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = pytest.mark.skipif(
    CHROMIUM is None, reason="chromium not installed (apt-get install -y chromium)"
)
ARTEFACTS = Path(os.environ.get("MCPVS_CI_ARTEFACTS") or tempfile.gettempdir())


def _high_fd(fd: int) -> int:
    import fcntl

    high = fcntl.fcntl(fd, fcntl.F_DUPFD, 10)
    os.close(fd)
    return high


class Chromium:
    """A headless Chromium driven over the DevTools pipe."""

    def __init__(self, timeout: float = 60.0):
        self.timeout = timeout
        self.profile = tempfile.mkdtemp(prefix="mcpvs-chromium-")
        to_child_r, self._to_child = os.pipe()
        self._from_child, from_child_w = os.pipe()
        # 10 and up, so that the shell's "3<&N 4>&M" cannot clobber one with the other
        to_child_r, from_child_w = (_high_fd(to_child_r), _high_fd(from_child_w))
        args = [
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-extensions",
            "--allow-file-access-from-files",
            f"--user-data-dir={self.profile}",
            "--remote-debugging-pipe",
            "about:blank",
        ]
        # the pipe must be fds 3 (commands in) and 4 (replies out) in the browser
        script = (
            f'exec "$0" "$@" 3<&{to_child_r} 4>&{from_child_w} {to_child_r}<&- {from_child_w}>&-'
        )
        self.proc = subprocess.Popen(
            ["bash", "-c", script, CHROMIUM, *args],  # bash: dash redirects fds 0-9 only
            pass_fds=(to_child_r, from_child_w),
            stdout=subprocess.DEVNULL,
            stderr=open(os.environ.get("MCPVS_CHROMIUM_LOG", os.devnull), "w"),
        )
        os.close(to_child_r)
        os.close(from_child_w)
        self.messages: queue.Queue = queue.Queue()
        self.events: list[dict] = []
        self._next_id = 0
        threading.Thread(target=self._reader, daemon=True).start()

    def _reader(self) -> None:
        buffer = b""
        while True:
            chunk = os.read(self._from_child, 1 << 16)
            if not chunk:
                self.messages.put(None)
                return
            buffer += chunk
            while b"\0" in buffer:
                raw, buffer = buffer.split(b"\0", 1)
                self.messages.put(json.loads(raw))

    def send(self, method: str, session: str | None = None, **params) -> dict:
        self._next_id += 1
        msg = {"id": self._next_id, "method": method, "params": params}
        if session:
            msg["sessionId"] = session
        os.write(self._to_child, json.dumps(msg).encode() + b"\0")
        while True:
            reply = self._get()
            if reply.get("id") == self._next_id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply.get("result", {})
            self.events.append(reply)

    def wait_event(self, method: str) -> dict:
        for event in self.events:
            if event.get("method") == method:
                return event
        while True:
            event = self._get()
            self.events.append(event)
            if event.get("method") == method:
                return event

    def _get(self) -> dict:
        msg = self.messages.get(timeout=self.timeout)
        if msg is None:
            raise RuntimeError("chromium closed the DevTools pipe")
        return msg

    def close(self) -> None:
        try:
            self.send("Browser.close")
        except Exception:
            pass
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        os.close(self._to_child)
        shutil.rmtree(self.profile, ignore_errors=True)


VIEWERS_JS = """(async () => {
  const out = [];
  for (const box of document.querySelectorAll('.mcpvs-viewer')) {
    box.scrollIntoView({block: 'center'});
    await window.mcpvsViewer.open(box);
    const c = box.querySelector('canvas').getBoundingClientRect();
    out.push({prefix: box.dataset.prefix, state: box.dataset.state,
              status: (box.querySelector('.viewer-status') || {}).textContent || ''});
  }
  return JSON.stringify(out);
})()"""


def _canvas_shot(browser, session, index: int, path: Path) -> None:
    """Screenshot of the ``index``-th viewer's canvas, scrolled into view and drawn."""
    rect = browser.send(
        "Runtime.evaluate",
        session,
        expression=f"(() => {{ const c = document.querySelectorAll('.mcpvs-viewer canvas')"
        f"[{index}]; c.scrollIntoView({{block: 'center'}}); const r = c.getBoundingClientRect(); "
        "return JSON.stringify([r.x + window.scrollX, r.y + window.scrollY, r.width, r.height]);"
        " })()",
        returnByValue=True,
    )["result"]["value"]
    x, y, w, h = json.loads(rect)
    time.sleep(1.0)  # a few animation frames for WebGL
    shot = browser.send(
        "Page.captureScreenshot",
        session,
        format="png",
        captureBeyondViewport=True,
        clip={"x": x, "y": y, "width": w, "height": h, "scale": 1},
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(base64.b64decode(shot["data"]))


def render(page: Path, screenshot: Path | None = None, viewer_shots: Path | None = None) -> dict:
    """Load ``page``; return its images' load state, its viewers' state and every
    console/network error. With ``viewer_shots`` (a folder), every viewer is started and its
    canvas saved as ``viewer-<n>.png`` there."""
    browser = Chromium()
    try:
        target = browser.send("Target.createTarget", url="about:blank")["targetId"]
        session = browser.send("Target.attachToTarget", targetId=target, flatten=True)["sessionId"]
        for domain in ("Page", "Runtime", "Log", "Network"):
            browser.send(f"{domain}.enable", session)
        browser.send(
            "Emulation.setDeviceMetricsOverride",
            session,
            width=1280,
            height=900,
            deviceScaleFactor=1,
            mobile=False,
        )
        browser.send("Page.navigate", session, url=page.resolve().as_uri())
        browser.wait_event("Page.loadEventFired")
        images = browser.send(
            "Runtime.evaluate",
            session,
            expression="JSON.stringify(Array.from(document.images).map("
            "i => [i.getAttribute('src'), i.complete, i.naturalWidth]))",
            returnByValue=True,
        )["result"]["value"]
        viewers = []
        if viewer_shots is not None:
            viewers = json.loads(
                browser.send(
                    "Runtime.evaluate",
                    session,
                    expression=VIEWERS_JS,
                    awaitPromise=True,
                    returnByValue=True,
                )["result"]["value"]
            )
            for n in range(len(viewers)):
                _canvas_shot(browser, session, n, viewer_shots / f"viewer-{n}.png")
        if screenshot is not None:
            browser.send("Runtime.evaluate", session, expression="window.scrollTo(0, 0)")
            size = browser.send("Page.getLayoutMetrics", session)["cssContentSize"]
            shot = browser.send(
                "Page.captureScreenshot",
                session,
                format="png",
                captureBeyondViewport=True,
                clip={"x": 0, "y": 0, "width": 1280, "height": min(size["height"], 12000),
                      "scale": 1},
            )  # fmt: skip
            screenshot.parent.mkdir(parents=True, exist_ok=True)
            screenshot.write_bytes(base64.b64decode(shot["data"]))
        time.sleep(0.2)  # let late console messages arrive
        browser.send("Runtime.evaluate", session, expression="1")
    finally:
        browser.close()
    errors = []
    for event in browser.events:
        method, params = event.get("method"), event.get("params", {})
        if method == "Runtime.consoleAPICalled" and params.get("type") in ("error", "assert"):
            errors.append(" ".join(str(a.get("value")) for a in params.get("args", [])))
        elif method == "Runtime.exceptionThrown":
            errors.append(params["exceptionDetails"].get("text", "exception"))
        elif method == "Log.entryAdded" and params["entry"]["level"] == "error":
            errors.append(params["entry"].get("text", ""))
        elif method == "Network.loadingFailed":
            errors.append(f"load failed: {params.get('errorText')}")
    return {"images": json.loads(images), "errors": errors, "viewers": viewers}


def _not_blank(png: Path) -> bool:
    """A drawn viewer: many distinct colours and real contrast, not one flat colour."""
    import numpy as np
    from PIL import Image

    pixels = np.asarray(Image.open(png).convert("RGB"))
    colours = len(np.unique(pixels.reshape(-1, 3), axis=0))
    return colours > 64 and float(pixels.std()) > 10 and (pixels.sum(-1) > 60).mean() > 0.05


@pytest.mark.slow
def test_report_renders_in_chromium(tmp_path_factory, shared_data):
    tmp = tmp_path_factory.mktemp("browser")
    bids, out = make_report_dataset(tmp, shared_data)
    for label in ("01", "02"):
        build_participant_report(out, label, bids)
    copy = tmp / "copied"  # opened from a copied folder: nothing may point back
    shutil.copytree(out, copy)
    shutil.rmtree(out)
    n_figures = len([r for r in load_layout().participant if r.key != VIEWER])
    for label, n_images in (("01", n_figures), ("02", 1)):
        shot = ARTEFACTS / f"report-sub-{label}.png" if label == "02" else ARTEFACTS / "report.png"
        shots = tmp / f"viewer-{label}"
        result = render(copy / f"sub-{label}.html", screenshot=shot, viewer_shots=shots)
        assert len(result["images"]) == n_images
        broken = [src for src, complete, width in result["images"] if not (complete and width)]
        assert not broken, f"images that did not load: {broken}"
        assert not result["errors"], result["errors"]
        assert shot.stat().st_size > 10_000
        if label == "01":  # the viewer started and drew the head
            assert [v["state"] for v in result["viewers"]] == ["ready"], result["viewers"]
            shutil.copyfile(shots / "viewer-0.png", ARTEFACTS / "report-viewer.png")
            assert _not_blank(shots / "viewer-0.png")
        else:
            assert result["viewers"] == []


@pytest.mark.slow
def test_group_report_renders_in_chromium(tmp_path):
    from mcpvs_bidsapp.config import Settings
    from mcpvs_bidsapp.group.run import run_group
    from mcpvs_bidsapp.synthetic.cohort import write_cohort

    write_cohort(tmp_path / "out", tmp_path / "bids", n=24, seed=3, n_failed=1, n_manual=3)
    settings = Settings.from_options(
        tmp_path / "bids", tmp_path / "out", "group", work_dir=tmp_path / "work",
        covariates=["age"], visual_score_columns=["BG=bg_score", "WM=wm_score"],
        manual_masks=tmp_path / "bids" / "derivatives" / "manual",
    )  # fmt: skip
    assert run_group(settings) == 0
    result = render(tmp_path / "out" / "group.html", screenshot=ARTEFACTS / "group.png")
    broken = [src for src, complete, width in result["images"] if not (complete and width)]
    assert not broken and len(result["images"]) >= 6, result["images"]
    assert not result["errors"], result["errors"]


def test_checker_sees_broken_images_and_console_errors(tmp_path):
    """The browser check itself can fail: a page with a missing image and a console error."""
    page = tmp_path / "broken.html"
    page.write_text(
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>x</title></head>"
        "<body><img src='nowhere.png' alt='x'><script>console.error('boom')</script>"
        "</body></html>"
    )
    result = render(page)
    assert result["images"] == [["nowhere.png", True, 0]]
    assert any("boom" in e for e in result["errors"])
    assert any("ERR_FILE_NOT_FOUND" in e for e in result["errors"])
