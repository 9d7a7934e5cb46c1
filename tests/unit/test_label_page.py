"""The labelling page, driven in a real headless Chromium (Playwright over Debian's chromium) against
`slmtune label serve` run as a process: keys label, accept the suggestion, skip and undo; a reload shows the same
item; a stale answer from a second tab is refused and loses nothing; SIGTERM stops the server with every answer
on disk, a restart picks them up (a truncated last line skipped and kept); a second server is refused. The labels
file is checked after every step."""

import json
import os
import shutil
import signal
import socket
import subprocess
import sys

import pytest

from conftest import synthetic_rows, wait_until, write_csv

httpx = pytest.importorskip("httpx")
pytest.importorskip("fastapi")
playwright = pytest.importorskip("playwright.sync_api")
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="headless Chromium not installed (apt-get install chromium)")

LABELS = ["World", "Sports", "Business", "Sci/Tech"]


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _answers(project) -> list[dict]:
    return [json.loads(line) for line in open(project / "labels.jsonl") if line.strip().endswith("}")]


class Server:
    def __init__(self, project, port):
        self.project, self.port, self.url = project, port, f"http://127.0.0.1:{port}"
        self.proc = subprocess.Popen([sys.executable, "-m", "slmtune.cli", "label", "serve", str(project), "--port",
                                      str(port)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                     env={**os.environ, "PYTHONUNBUFFERED": "1"})
        wait_until(self.up, 120, "the labelling server answering")
        assert self.proc.poll() is None, self.proc.communicate()[0].decode()[-2000:]

    def up(self) -> bool:
        if self.proc.poll() is not None:
            return True
        try:
            return httpx.get(f"{self.url}/api/item", timeout=5).status_code == 200
        except httpx.TransportError:
            return False

    def stop(self) -> str:
        self.proc.send_signal(signal.SIGTERM)
        output = self.proc.communicate(timeout=60)[0].decode()
        assert self.proc.returncode in (0, 130) and "Traceback" not in output, output  # 130: stopped by a signal
        return output


@pytest.fixture
def project(tmp_path, tiny_models):
    from slmtune.cli import main

    pool = write_csv(tmp_path / "pool.csv", synthetic_rows(10, seed=9))
    folder = tmp_path / "project"
    assert main(["label", "init", str(folder), "--data", str(pool), "--labels", ",".join(LABELS), "--model",
                 tiny_models["bert"], "--audit-share", "0.2"]) == 0
    return folder


def _shown(page) -> str:
    return page.evaluate("document.body.dataset.item")


def _wait_labelled(page, n: int) -> None:
    page.wait_for_function(f"document.body.dataset.labelled === '{n}'", timeout=60_000)


def _wait_item_not(page, item: str) -> None:
    page.wait_for_function(f"document.body.dataset.item !== {json.dumps(item)}", timeout=60_000)


def test_labelling_in_a_browser_loses_nothing(project):
    port = _free_port()
    server = Server(project, port)
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            page = browser.new_page()
            page.goto(server.url)
            page.wait_for_function("document.body.dataset.ready === '1'", timeout=60_000)
            first = _shown(page)
            page.keyboard.press("2")  # label 2 = Sports
            _wait_labelled(page, 1)
            assert [(a["id"], a["kind"], a["label"]) for a in _answers(project)] == [(first, "label", "Sports")]

            second = _shown(page)
            suggested = page.locator("button.suggested").get_attribute("data-label")
            page.keyboard.press("Enter")  # take the suggestion
            _wait_labelled(page, 2)
            assert _answers(project)[-1]["id"] == second and _answers(project)[-1]["label"] == suggested

            third = _shown(page)
            page.keyboard.press("s")
            _wait_item_not(page, third)
            assert _answers(project)[-1] == {**_answers(project)[-1], "id": third, "kind": "skip"}
            page.keyboard.press("u")  # the skip is taken back: the skipped text is shown again
            page.wait_for_function(f"document.body.dataset.item === {json.dumps(third)}", timeout=60_000)
            assert [a["kind"] for a in _answers(project)] == ["label", "label", "skip", "undo"]

            page.reload()
            page.wait_for_function("document.body.dataset.ready === '1'", timeout=60_000)
            assert _shown(page) == third and page.evaluate("document.body.dataset.labelled") == "2"

            other = browser.new_page()  # a second tab shows the same item
            other.goto(server.url)
            other.wait_for_function("document.body.dataset.ready === '1'", timeout=60_000)
            assert _shown(other) == third
            page.keyboard.press("3")
            _wait_labelled(page, 3)
            other.keyboard.press("1")  # stale: answered in the first tab meanwhile
            other.wait_for_function("document.getElementById('message').textContent.includes('meanwhile')",
                                    timeout=60_000)
            labels = {a["id"]: a["label"] for a in _answers(project) if a["kind"] == "label"}
            assert labels[third] == "Business" and len(_answers(project)) == 5
            other.wait_for_function(f"document.body.dataset.item !== {json.dumps(third)}", timeout=60_000)

            server.stop()  # SIGTERM: every answer is on disk already
            before = (project / "labels.jsonl").read_bytes()
            assert [a["id"] for a in _answers(project)] == [first, second, third, third, third]
            with open(project / "labels.jsonl", "ab") as f:
                f.write(b'{"id": "x", "kind": "la')  # as if a writer had died mid-line
            server = Server(project, port)
            page.reload()
            page.wait_for_function("document.body.dataset.ready === '1'", timeout=60_000)
            _wait_labelled(page, 3)
            page.keyboard.press("4")
            _wait_labelled(page, 4)
            after = (project / "labels.jsonl").read_bytes()
            assert after.startswith(before + b'{"id": "x", "kind": "la')
            assert _answers(project)[-1]["label"] == "Sci/Tech"

            refused = subprocess.run([sys.executable, "-m", "slmtune.cli", "label", "serve", str(project), "--port",
                                      str(_free_port())], capture_output=True, text=True, timeout=120)
            assert refused.returncode == 2 and "already being served" in refused.stderr
            assert len(refused.stderr.strip().splitlines()) == 1
            output = server.stop()
            assert "incomplete last line" in output
        finally:
            browser.close()
            if server.proc.poll() is None:
                server.proc.kill()
