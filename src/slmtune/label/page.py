"""`slmtune label serve`: the labelling page on 127.0.0.1 (FastAPI on uvicorn, the `serve` extra).

One text at a time with the model's suggestion and its confidence; keys 1-9 label, Enter takes the suggestion,
s skips, u (or Backspace) undoes. Each answer is written to the labels file before the reply leaves, so a
stopped server loses nothing given. An answer for an item answered meanwhile (a second tab) is refused with a 409
and changes nothing. One server per project (a lock a killed process lets go of)."""

import threading
from pathlib import Path
from typing import Any

from slmtune.errors import SlmtuneError
from slmtune.label.loop import DEFAULTS, LoopConfig
from slmtune.label.session import Session, Stale

PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>slmtune label: __NAME__</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>
body{font-family:system-ui,sans-serif;max-width:52rem;margin:2rem auto;padding:0 1rem;color:#222}
#text{font-size:1.25rem;line-height:1.5;padding:1.2rem;border:1px solid #ccc;border-radius:.5rem;min-height:4rem;
white-space:pre-wrap}
#labels button{margin:.25rem;padding:.5rem .8rem;font-size:1rem;border-radius:.4rem;border:1px solid #888;
background:#fff;cursor:pointer}
#labels button.suggested{border:2px solid #1a7f37;background:#eaf7ee}
#meta,#counts,#estimate{color:#555;font-size:.9rem;margin:.5rem 0}#message{color:#a40;min-height:1.2rem}
kbd{border:1px solid #aaa;border-radius:3px;padding:0 .3rem;font-size:.8rem}
</style></head><body>
<h1 style="font-size:1.2rem">__NAME__</h1>
<div id="meta"></div><div id="text">loading...</div>
<div id="labels"></div>
<p style="font-size:.85rem;color:#666"><kbd>1</kbd>-<kbd>9</kbd> label, <kbd>Enter</kbd> take the suggestion,
<kbd>s</kbd> skip, <kbd>u</kbd> undo</p>
<div id="message"></div><div id="counts"></div><div id="estimate"></div>
<script>
const LABELS = __LABELS__;
let item = null, busy = false;
const $ = id => document.getElementById(id);
function show(data) {
  item = data.item;
  $("counts").textContent = data.counts;
  $("estimate").textContent = data.estimate || "";
  document.body.dataset.labelled = data.labelled;
  if (!item) { $("text").textContent = "Every text is answered."; $("meta").textContent = ""; render(); return; }
  $("text").textContent = item.text;
  $("meta").textContent = `suggested: ${item.suggested} (${Math.round(item.confidence * 100)}%)`;
  document.body.dataset.item = item.id;
  render();
}
function render() {
  const box = $("labels"); box.innerHTML = "";
  LABELS.forEach((name, i) => {
    const b = document.createElement("button");
    b.textContent = `${i + 1} ${name}`; b.dataset.label = name;
    if (item && item.suggested === name) b.className = "suggested";
    b.onclick = () => send(name); box.appendChild(b);
  });
}
async function call(path, body) {
  busy = true;
  try {
    const post = {method: "POST", headers: {"content-type": "application/json"}, body: JSON.stringify(body)};
    const r = await fetch(path, body === undefined ? {} : post);
    const data = await r.json();
    if (!r.ok) { $("message").textContent = data.error || r.statusText; if (r.status === 409) await load(); return; }
    $("message").textContent = data.message || "";
    show(data);
  } catch (e) { $("message").textContent = "the server does not answer: " + e; }
  finally { busy = false; }
}
async function load() { const r = await fetch("/api/item"); show(await r.json()); }
function send(label) { if (item && !busy) call("/api/answer", {id: item.id, hash: item.hash, label: label}); }
document.addEventListener("keydown", e => {
  if (busy || e.ctrlKey || e.metaKey || e.altKey) return;
  const n = parseInt(e.key, 10);
  if (n >= 1 && n <= LABELS.length) send(LABELS[n - 1]);
  else if (e.key === "Enter" && item) send(item.suggested);
  else if (e.key === "s" && item) call("/api/answer", {id: item.id, hash: item.hash, label: null});
  else if (e.key === "u" || e.key === "Backspace") { e.preventDefault(); call("/api/undo", {}); }
});
load().then(() => { document.body.dataset.ready = "1"; });
</script></body></html>
"""


def create_app(session: Session):
    """The FastAPI app of the labelling page over an opened session."""
    import json

    from fastapi import FastAPI, Request
    from fastapi.responses import HTMLResponse, JSONResponse

    app = FastAPI(title="slmtune label", version="1")
    lock = threading.Lock()  # one answer at a time: the loop refits between them
    page = PAGE.replace("__NAME__", session.project.folder.name).replace("__LABELS__", json.dumps(session.labels))

    def state(message: str = "") -> dict[str, Any]:
        item = session.current()
        status = session.status(with_stability=False)
        audit = status["audit"]
        estimate = (f"estimated accuracy {audit['accuracy']:.0%} ({audit['low']:.0%}-{audit['high']:.0%}, "
                    f"{audit['n']} audit items)") if audit["n"] else ""
        counts = f"{status['labelled']} labelled: " + ", ".join(f"{k} {v}" for k, v in status["per_class"].items())
        return {"item": item.as_dict() if item else None, "labelled": status["labelled"], "counts": counts,
                "estimate": estimate, "message": message}

    def error(status: int, message: str):
        return JSONResponse({"error": message}, status_code=status)

    @app.get("/", response_class=HTMLResponse)
    def index() -> str:
        return page

    @app.get("/api/item")
    def current():
        with lock:
            return state()

    @app.get("/api/status")
    def status():
        with lock:
            return session.status()

    @app.post("/api/answer")
    async def answer(request: Request):
        try:
            body = json.loads(await request.body())
            id_, hash_, label = str(body["id"]), str(body["hash"]), body.get("label")
        except (ValueError, KeyError, TypeError):
            return error(400, 'send {"id": ..., "hash": ..., "label": "A" or null}')
        if label is not None and not isinstance(label, str):
            return error(400, "label must be a string or null")
        with lock:
            try:
                session.answer(id_, hash_, label)
            except Stale as exc:
                return error(409, str(exc))
            except SlmtuneError as exc:
                return error(400, str(exc))
            return state()

    @app.post("/api/undo")
    def undo():
        with lock:
            undone = session.undo()
            return state(f"took back the answer for {undone.id}" if undone else "nothing to undo")

    return app


def serve_project(folder: str | Path, host: str = "127.0.0.1", port: int = 8080, config: LoopConfig = DEFAULTS,
                  ready=print) -> None:
    """Serve the labelling page until stopped; a second server on the same project is refused."""
    from filelock import Timeout

    from slmtune.label.project import Project
    from slmtune.serve.http import port_free, require_server

    _, uvicorn = require_server()
    if not (Path(folder) / "project.json").is_file():
        Project(folder)  # says what is wrong, in one line
    lock = Project.lock_of(folder)  # taken before the labels file is read
    try:
        lock.acquire(timeout=0)
    except Timeout:
        raise SlmtuneError(f"{folder} is already being served (another slmtune label serve holds its lock)") from None
    try:
        port_free(host, port)
        session = Session(folder, config, say=ready)
        app = create_app(session)
        ready(f"slmtune label: {folder} on http://{host}:{port} ({session.status(False)['labelled']} labelled); "
              "Ctrl-C stops, every answer is already saved")
        uvicorn.Server(uvicorn.Config(app, host=host, port=port, log_level="warning")).run()
    finally:
        lock.release()
