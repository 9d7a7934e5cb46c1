"""The prediction server: `slmtune serve RUN` answers `POST /predict` with what `slmtune predict` gives for the same
texts (the run's precision and engine, its blend, label sets on multi-label runs) and `GET /health` for a load
balancer. FastAPI on uvicorn, the `serve` extra.

Concurrent requests are batched: a request's texts wait up to `batch_wait_ms` for others, then one inference pass
scores them all (off the event loop, so the server keeps accepting), and each request gets its own rows back.
Requests are bounded (bytes and texts); bad JSON, a wrong shape or an empty text is a 400 with a one-line
`error`, an oversized request a 413.
"""

import asyncio
import json
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from slmtune.errors import SlmtuneError


def require_server():
    """FastAPI and uvicorn, or a one-line error naming the extra."""
    try:
        import fastapi
        import uvicorn
    except ImportError:
        raise SlmtuneError("the prediction server needs the extra: pip install 'slmtune[serve]'") from None
    return fastapi, uvicorn


@dataclass(frozen=True)
class ServerConfig:
    """How the prediction server answers."""

    backend: str = "auto"
    """Inference engine, as `slmtune predict --backend` (auto: a kept choice, else torch)."""
    max_change: float = 0.005
    """`auto`'s budget of predictions allowed to change against fp32 torch's."""
    max_texts: int = 256
    """Texts one request may hold."""
    max_bytes: int = 1_000_000
    """Bytes one request body may hold."""
    batch_texts: int = 256
    """Texts one inference pass scores at most (requests are gathered up to this)."""
    batch_wait_ms: float = 5.0
    """How long a request waits for others to share its pass."""


class _Batcher:
    """Gathers the texts of concurrent requests into inference passes, one at a time."""

    def __init__(self, run_dir: Path, config: ServerConfig):
        self.run_dir, self.config = run_dir, config
        self.queue: asyncio.Queue = asyncio.Queue()
        self.task: asyncio.Task | None = None

    async def predict(self, texts: list[str]) -> list[dict[str, Any]]:
        if self.task is None or self.task.done():
            self.task = asyncio.get_running_loop().create_task(self._serve())
        done = asyncio.get_running_loop().create_future()
        await self.queue.put((texts, done))
        return await done

    def _predict(self, predict, texts: list[str]) -> list[dict[str, Any]]:
        return predict(self.run_dir, texts, backend=self.config.backend, max_change=self.config.max_change)

    async def _serve(self) -> None:
        from slmtune.serve.inference import predict

        loop = asyncio.get_running_loop()
        while True:
            batch = [await self.queue.get()]
            size = len(batch[0][0])
            deadline = loop.time() + self.config.batch_wait_ms / 1000
            while size < self.config.batch_texts:
                try:
                    item = await asyncio.wait_for(self.queue.get(), max(0.0, deadline - loop.time()))
                except asyncio.TimeoutError:
                    break
                batch.append(item)
                size += len(item[0])
            texts = [t for request, _ in batch for t in request]
            try:
                rows = await loop.run_in_executor(None, self._predict, predict, texts)
            except Exception as exc:  # every waiting request hears of it; the server goes on
                for _, done in batch:
                    if not done.done():
                        done.set_exception(exc)
                continue
            start = 0
            for request, done in batch:
                if not done.done():
                    done.set_result(rows[start:start + len(request)])
                start += len(request)


DEFAULTS = ServerConfig()


def create_app(run_dir: str | Path, config: ServerConfig = DEFAULTS):
    """The FastAPI app serving `run_dir`; the run is loaded (and checked) before the app is returned."""
    fastapi, _ = require_server()
    from fastapi.responses import JSONResponse

    from slmtune import runs
    from slmtune.serve.loading import load_run

    run_dir = Path(run_dir)
    run = load_run(run_dir)  # a missing, unfinished or damaged run fails here, in one line
    result = runs.read_result(run_dir)
    batcher = _Batcher(run_dir, config)
    app = fastapi.FastAPI(title="slmtune prediction server", version="1")

    def error(status: int, message: str):
        return JSONResponse({"error": message}, status_code=status)

    @app.get("/health")
    async def health() -> dict[str, Any]:
        return {"status": "ok", "run": result.get("name"), "labels": run.label_names,
                "multi_label": run.multi_label, "blend": run.blend is not None}

    @app.post("/predict")  # no `from __future__ import annotations` here: FastAPI reads this annotation
    async def predict(request: fastapi.Request):
        declared = request.headers.get("content-length")
        if declared and declared.isdigit() and int(declared) > config.max_bytes:
            return error(413, f"the request holds {declared} bytes; at most {config.max_bytes}")
        body = await request.body()
        if len(body) > config.max_bytes:
            return error(413, f"the request holds {len(body)} bytes; at most {config.max_bytes}")
        try:
            payload = json.loads(body)
        except (ValueError, UnicodeDecodeError) as exc:
            return error(400, f"the body is not JSON: {exc}")
        texts = payload.get("texts") if isinstance(payload, dict) else None
        if not isinstance(texts, list) or not texts:
            return error(400, 'send {"texts": ["a text", ...]}: a non-empty list of texts')
        if len(texts) > config.max_texts:
            return error(413, f"the request holds {len(texts)} texts; at most {config.max_texts}")
        bad = next((i for i, t in enumerate(texts) if not isinstance(t, str) or not t.strip()), None)
        if bad is not None:
            return error(400, f"texts[{bad}] is not a non-empty string")
        try:
            return {"predictions": await batcher.predict(texts)}
        except SlmtuneError as exc:
            return error(400, str(exc))

    return app


def port_free(host: str, port: int) -> None:
    """A one-line error when `host:port` cannot be bound (in use, or not this machine's)."""
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM) as probe:
        # as uvicorn binds: a port whose last server just stopped (connections in TIME_WAIT) is free to reuse,
        # one with a listener is not
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as exc:
            raise SlmtuneError(f"cannot listen on {host}:{port}: {exc.strerror or exc} (choose another --port)"
                               ) from None


def serve(run_dir: str | Path, host: str = "127.0.0.1", port: int = 8000, config: ServerConfig = DEFAULTS,
          ready=print) -> None:
    """Serve `run_dir` until stopped (Ctrl-C or SIGTERM end it cleanly)."""
    _, uvicorn = require_server()
    port_free(host, port)
    app = create_app(run_dir, config)
    ready(f"slmtune serve: {run_dir} on http://{host}:{port} (POST /predict, GET /health); Ctrl-C stops")
    uvicorn.Server(uvicorn.Config(app, host=host, port=port, log_level="warning")).run()
