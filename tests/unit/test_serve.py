"""The prediction server, run as `slmtune serve` (uvicorn) and asked over HTTP with a real client: the same
predictions as `slmtune predict` (a blended run), concurrent requests each answered with their own rows, clear
4xx answers to bad requests, a port in use refused in one line, SIGTERM ending it cleanly."""

import os
import signal
import socket
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import pytest

from conftest import crashed, tiny_overrides, wait_until

httpx = pytest.importorskip("httpx")
pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")

TEXTS = ["stock market shares profit", "match goal team coach", "software internet chip", "president election war"]


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="module")
def run_dir(tiny_models, synthetic_files, tmp_path_factory):
    from slmtune.config import from_dict
    from slmtune.train import train

    folder = tmp_path_factory.mktemp("serve") / "run"
    train(from_dict(tiny_overrides(tiny_models["bert"], synthetic_files, **{"model.blend": "tfidf"})),
          run_dir=folder)
    return folder


def _up(url: str, proc) -> bool:
    if proc.poll() is not None:
        return True
    try:
        return httpx.get(f"{url}/health", timeout=2).status_code == 200
    except httpx.TransportError:
        return False


@pytest.fixture(scope="module")
def server(run_dir):
    port = _free_port()
    proc = subprocess.Popen([sys.executable, "-m", "slmtune.cli", "serve", str(run_dir), "--port", str(port),
                             "--backend", "torch", "--max-texts", "8"], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    url = f"http://127.0.0.1:{port}"
    wait_until(lambda: _up(url, proc), 120, "the server answering /health")
    assert proc.poll() is None, proc.communicate()[0].decode()[-2000:]
    yield url, proc, port
    if proc.poll() is None:
        proc.kill()
        proc.wait()


def test_the_server_predicts_what_predict_does(server, run_dir):
    from slmtune.serve.inference import predict

    url, _, _ = server
    health = httpx.get(f"{url}/health").json()
    assert health["status"] == "ok" and health["blend"] is True and len(health["labels"]) == 4
    answer = httpx.post(f"{url}/predict", json={"texts": TEXTS})
    assert answer.status_code == 200
    served = answer.json()["predictions"]
    expected = predict(run_dir, TEXTS, backend="torch")
    assert [p["label"] for p in served] == [p["label"] for p in expected]
    for got, want in zip(served, expected):
        assert got["probabilities"] == pytest.approx(want["probabilities"], abs=2e-3)


def test_concurrent_requests_each_get_their_own_rows(server, run_dir):
    from slmtune.serve.inference import predict

    url, _, _ = server
    alone = {t: p["label"] for t, p in zip(TEXTS, predict(run_dir, TEXTS, backend="torch"))}
    requests = [[TEXTS[i % 4], TEXTS[(i + 1) % 4]] for i in range(24)]
    with httpx.Client() as client, ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(lambda texts: client.post(f"{url}/predict", json={"texts": texts}), requests))
    for texts, answer in zip(requests, answers):
        assert answer.status_code == 200
        assert [p["label"] for p in answer.json()["predictions"]] == [alone[t] for t in texts]


@pytest.mark.parametrize("body, status, message", [
    (b"{not json", 400, "not JSON"),
    (b'{"text": "one"}', 400, "non-empty list of texts"),
    (b'{"texts": []}', 400, "non-empty list of texts"),
    (b'{"texts": ["fine", "  "]}', 400, "texts[1] is not a non-empty string"),
    (b'{"texts": ["fine", 3]}', 400, "texts[1] is not a non-empty string"),
    (b'{"texts": ["a", "b", "c", "d", "e", "f", "g", "h", "i"]}', 413, "9 texts; at most 8"),
    (b'{"texts": ["' + b"x" * 1_100_000 + b'"]}', 413, "at most 1000000"),
])
def test_bad_requests_get_a_clear_4xx(server, body, status, message):
    url, _, _ = server
    answer = httpx.post(f"{url}/predict", content=body, headers={"content-type": "application/json"})
    assert answer.status_code == status and message in answer.json()["error"]


def test_a_port_in_use_is_one_line(server, run_dir):
    _, _, port = server
    done = subprocess.run([sys.executable, "-m", "slmtune.cli", "serve", str(run_dir), "--port", str(port)],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and f"cannot listen on 127.0.0.1:{port}" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1 and not crashed(done.stderr)


def test_sigterm_ends_the_server_cleanly(server):
    url, proc, _ = server
    proc.send_signal(signal.SIGTERM)
    out = proc.communicate(timeout=60)[0].decode()
    assert proc.returncode in (0, 130) and not crashed(out), out[-2000:]
