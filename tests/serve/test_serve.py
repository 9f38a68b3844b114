"""`hyperseg serve`: every format equals Predictor's output, bad input is a JSON 4xx, limits and the
bounded queue hold, nothing touches the disk, one log line per request, SIGTERM exits 0."""
import io
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import hyperseg
import torch
from hyperseg.errors import HypersegError

pytest.importorskip("fastapi", reason="the serve extra is not installed: pip install -e '.[serve]'")
pytest.importorskip("httpx", reason="FastAPI's TestClient needs httpx (the test extra)")
from fastapi.testclient import TestClient  # noqa: E402

from hyperseg.infer.predictor import Predictor  # noqa: E402
from hyperseg.serve import create_app  # noqa: E402

SAMPLE = Path(hyperseg.__file__).resolve().parent / "assets" / "camvid_sample_1.png"


def _wait_ready(client, seconds=120):
    deadline = time.time() + seconds
    while time.time() < deadline:
        if client.get("/healthz").status_code == 200:
            return
        time.sleep(0.1)
    raise AssertionError("the model did not load")


@pytest.fixture(scope="module")
def client():
    # as a real client sees it: a server error is a response, not an exception raised in the test
    with TestClient(create_app("camvid", runtime="torch"), raise_server_exceptions=False) as c:
        _wait_ready(c)
        yield c


@pytest.fixture(scope="module")
def reference():
    """The oracle: Predictor on the same model, runtime and image."""
    predictor = Predictor("camvid", runtime="torch")
    image = np.asarray(Image.open(SAMPLE).convert("RGB"))
    return predictor, image, predictor(image)


def _png_bytes(array, mode=None):
    buffer = io.BytesIO()
    Image.fromarray(array, mode).save(buffer, format="PNG")
    return buffer.getvalue()


def test_label_png_multipart_equals_predictor(client, reference):
    _, _, labels = reference
    r = client.post("/v1/segment", files={"file": ("street.png", SAMPLE.read_bytes(), "image/png")})
    assert r.status_code == 200 and r.headers["content-type"] == "image/png"
    png = Image.open(io.BytesIO(r.content))
    assert png.mode == "P" and np.array_equal(np.asarray(png), labels)
    assert float(r.headers["x-latency-ms"]) > 0 and r.headers["x-image-size"] == "480x360"


def test_json_summary_from_a_raw_jpeg_body(client, reference):
    predictor, image, _ = reference
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="JPEG", quality=95)
    r = client.post("/v1/segment?format=json", content=buffer.getvalue(), headers={"content-type": "image/jpeg"})
    assert r.status_code == 200
    body = r.json()
    jpeg_labels = predictor(np.asarray(Image.open(io.BytesIO(buffer.getvalue())).convert("RGB")))
    counts = np.bincount(jpeg_labels.ravel(), minlength=11) / jpeg_labels.size
    assert (body["width"], body["height"]) == (480, 360) and body["latency_ms"] > 0
    assert [c["name"] for c in body["classes"]] == predictor.class_names
    assert [c["pixel_share"] for c in body["classes"]] == pytest.approx(counts.tolist(), abs=1e-12)
    assert body["classes"][3]["color"] == [128, 64, 128] and body["runtime"] == "torch"


def test_overlay_equals_predictor_overlay(client, reference):
    predictor, image, labels = reference
    r = client.post("/v1/segment?format=overlay&alpha=0.3", files={"file": ("a.png", SAMPLE.read_bytes())})
    assert r.status_code == 200
    assert np.array_equal(np.asarray(Image.open(io.BytesIO(r.content))), predictor.overlay(image, labels, 0.3))


def test_model_health_samples_and_schema(client):
    info = client.get("/v1/model").json()
    assert info["name"] == "camvid" and info["classes"][0] == "sky" and len(info["palette"]) == 11
    assert info["input_size"] == [360, 480] and info["runtime"] == "torch"
    # the client fixture asks for no precision: --precision auto chose it, and says why
    from hyperseg.runtime.precision import choose_precision

    expected = choose_precision(hyperseg.get_weights("camvid").metrics, "torch", has_calibration=True)
    assert (info["precision"], info["precision_reason"]) == (expected.precision, expected.reason)
    assert info["val_miou"] == round(hyperseg.get_weights("camvid").metrics["val_miou"] * 100, 2)
    assert client.get("/healthz").json() == {"status": "ok", "model_loaded": True}
    assert client.get("/v1/samples").json() == ["camvid_sample_1.png", "camvid_sample_2.png", "camvid_sample_3.png"]
    assert client.get("/v1/samples/camvid_sample_2.png").content[:4] == b"\x89PNG"
    schema = client.get("/openapi.json").json()
    body = schema["paths"]["/v1/segment"]["post"]["requestBody"]["content"]
    assert {"multipart/form-data", "image/png", "image/jpeg"} <= set(body)
    page = client.get("/")
    assert page.status_code == 200 and "drop-zone" in page.text and "http" not in page.text.replace("http-equiv", "")


@pytest.mark.parametrize("raw, name", [("%2E%2E", ".."), ("..%5Ccli.py", "..\\cli.py"),
                                       ("%2E%2E%5C..%5Chyperseg%5Ccli.py", "..\\..\\hyperseg\\cli.py")])
def test_the_samples_handler_refuses_names_outside_its_folder(client, raw, name):
    # httpx removes ../ segments before sending, so these are percent-encoded: the request reaches
    # /v1/samples/{name}, and the handler's own refusal (naming the sample) is the answer
    r = client.get(f"/v1/samples/{raw}")
    assert r.request.url.raw_path == f"/v1/samples/{raw}".encode()
    assert (r.status_code, r.json()) == (404, {"error": f"no sample named {name!r}; see /v1/samples", "status": 404})


def test_an_encoded_slash_in_a_sample_name_serves_no_file(client):
    # Starlette matches routes on the decoded path, where ..%2F is a real "/", so no {name} takes
    # it: whichever route answers, no file outside the samples is sent
    r = client.get("/v1/samples/..%2Fcli.py")
    assert r.request.url.raw_path == b"/v1/samples/..%2Fcli.py"
    assert r.status_code == 404 and r.headers["content-type"] == "application/json" and r.json()["status"] == 404
    assert b"argparse" not in r.content


def _truncated_png():
    data = _png_bytes(np.full((64, 64, 3), 7, np.uint8))
    return data[: len(data) // 2]


@pytest.mark.parametrize("content, content_type, status, words", [
    (b"GIF89a? no, just text", "image/png", 400, "cannot read the image"),
    (None, "image/png", 400, "cannot read the image"),  # truncated
    (b"", "image/png", 400, "is empty"),
    (b"name,value\n", "text/csv", 415, "content type 'text/csv'"),
    ("float", "image/tiff", 415, "floating-point images are not supported"),
])
def test_bad_input_is_a_json_4xx_naming_the_problem(client, content, content_type, status, words):
    if content is None:
        content = _truncated_png()
    elif content == "float":
        buffer = io.BytesIO()
        Image.fromarray(np.zeros((8, 8), np.float32), "F").save(buffer, format="TIFF")
        content = buffer.getvalue()
    r = client.post("/v1/segment", content=content, headers={"content-type": content_type})
    assert r.status_code == status
    body = r.json()
    assert words in body["error"] and body["status"] == status and "Traceback" not in r.text


def test_multipart_boundary_keeps_its_case(client, reference):
    # browsers send boundaries like ----WebKitFormBoundaryAbC: the parameter is case-sensitive
    body = (b"------WebKitFormBoundaryAbC\r\nContent-Disposition: form-data; name=\"file\"; filename=\"s.png\"\r\n"
            b"Content-Type: image/png\r\n\r\n" + SAMPLE.read_bytes() + b"\r\n------WebKitFormBoundaryAbC--\r\n")
    r = client.post("/v1/segment", content=body,
                    headers={"content-type": "multipart/form-data; boundary=----WebKitFormBoundaryAbC"})
    assert r.status_code == 200 and np.array_equal(np.asarray(Image.open(io.BytesIO(r.content))), reference[2])


def test_multipart_without_a_file_field(client):
    # a form without files goes urlencoded, as an HTML form without enctype sends it: not an upload
    r = client.post("/v1/segment", data={"note": "no file"}, files={})
    assert r.request.headers["content-type"] == "application/x-www-form-urlencoded"
    assert r.status_code == 415 and "content type 'application/x-www-form-urlencoded'" in r.json()["error"]
    r = client.post("/v1/segment", content=b"--x\r\nContent-Disposition: form-data; name=\"a\"\r\n\r\n1\r\n--x--\r\n",
                    headers={"content-type": "multipart/form-data; boundary=x"})
    assert r.status_code == 400 and "no file field" in r.json()["error"]


def test_size_limits_refuse_before_decoding(tmp_path):
    with TestClient(create_app("camvid", runtime="torch", max_upload_mb=0.05, max_megapixels=0.1)) as c:
        _wait_ready(c)
        noise = np.random.default_rng(0).integers(0, 255, (200, 200, 3), dtype=np.uint8)  # ~120 kB as PNG
        r = c.post("/v1/segment", content=_png_bytes(noise), headers={"content-type": "image/png"})
        assert r.status_code == 413 and "limit" in r.json()["error"]
        big = _png_bytes(np.zeros((400, 400, 3), np.uint8))  # small file, 0.16 megapixels
        r = c.post("/v1/segment", files={"file": ("big.png", big, "image/png")})
        assert r.status_code == 413 and "big.png: 400x400 is 0.16 megapixels; the limit is 0.1" in r.json()["error"]
    # a decompression bomb: a tiny PNG whose header claims 100000 x 100000 pixels
    import struct
    import zlib

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    bomb = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 100000, 100000, 8, 2, 0, 0, 0)) + \
        chunk(b"IDAT", zlib.compress(b"\0" * 1000)) + chunk(b"IEND", b"")
    with TestClient(create_app("camvid", runtime="torch")) as c:
        _wait_ready(c)
        r = c.post("/v1/segment", content=bomb, headers={"content-type": "image/png"})
        assert r.status_code == 413 and "decompression bomb" in r.json()["error"]


def test_nothing_is_written_to_disk(client, file_opens):
    payload = np.random.default_rng(1).integers(0, 255, (900, 1200, 3), dtype=np.uint8)  # a ~3 MB PNG
    upload = {"file": ("noise.png", _png_bytes(payload), "image/png")}  # encoded before the watch
    with file_opens.watch():
        with tempfile.SpooledTemporaryFile(max_size=1) as spooled:  # the guard sees a spooled upload's rollover
            spooled.write(b"xy")
    assert file_opens.writes(), "the guard saw no write-mode open"
    with file_opens.watch():
        r = client.post("/v1/segment?format=json", files=upload)
    assert r.status_code == 200 and r.json()["width"] == 1200
    assert file_opens.writes() == []


def test_a_crash_is_a_500_without_the_traceback(client, monkeypatch, caplog):
    def broken(self, image):
        raise RuntimeError("secret internal detail")

    monkeypatch.setattr(Predictor, "__call__", broken)
    with caplog.at_level(logging.ERROR, logger="hyperseg.serve"):
        r = client.post("/v1/segment", content=SAMPLE.read_bytes(), headers={"content-type": "image/png"})
    assert r.status_code == 500 and r.json()["error"].startswith("internal server error")
    assert "secret" not in r.text and "Traceback" not in r.text
    assert any("secret internal detail" in str(rec.exc_info[1]) for rec in caplog.records if rec.exc_info)


def test_one_log_line_per_request(client, caplog):
    with caplog.at_level(logging.INFO, logger="hyperseg.serve"):
        client.get("/healthz")
        client.post("/v1/segment", content=b"x", headers={"content-type": "image/png"})
    lines = [rec.getMessage() for rec in caplog.records if rec.name == "hyperseg.serve"]
    assert len(lines) == 2
    assert lines[0].startswith("GET /healthz 200 ") and lines[0].endswith(" ms")
    assert lines[1].startswith("POST /v1/segment 400 ")


def test_a_full_queue_answers_503_with_retry_after(monkeypatch):
    started, release = threading.Event(), threading.Event()
    real = Predictor.__call__

    def slow(self, image):
        started.set()
        assert release.wait(60)
        return real(self, image)

    with TestClient(create_app("camvid", runtime="torch", workers=1, max_queue=1)) as c:
        _wait_ready(c)
        monkeypatch.setattr(Predictor, "__call__", slow)
        answers = []

        def post():
            answers.append(c.post("/v1/segment", content=SAMPLE.read_bytes(), headers={"content-type": "image/png"}))

        running, queued = threading.Thread(target=post), threading.Thread(target=post)
        running.start()
        assert started.wait(30)
        queued.start()  # waits for the worker: the queue holds one
        deadline = time.time() + 30
        while c.app.state.pool.in_flight < 2 and time.time() < deadline:
            time.sleep(0.01)
        refused = c.post("/v1/segment", content=SAMPLE.read_bytes(), headers={"content-type": "image/png"})
        assert refused.status_code == 503 and refused.headers["retry-after"] == "1"
        assert "busy" in refused.json()["error"]
        release.set()
        running.join(60)
        queued.join(60)
        assert [a.status_code for a in answers] == [200, 200]


@pytest.mark.parametrize("kind", ["checkpoint", "onnx"])
def test_serves_a_checkpoint_and_an_onnx_file(kind, tmp_path):
    model = hyperseg.create_model("hyperseg", encoder_name="tf_efficientnet_lite0", num_classes=3,
                                  weight_groups=[16, 16, 8, 8, 4])
    source = hyperseg.save_model(model, tmp_path / "tiny.pt")
    if kind == "onnx":
        pytest.importorskip("onnxruntime", reason="the onnx extra is not installed")
        from hyperseg.runtime import export_onnx

        source = export_onnx(hyperseg.load_model(source), tmp_path / "tiny.onnx", size=(128, 160))
    image = np.random.default_rng(2).integers(0, 255, (128, 160, 3), dtype=np.uint8)
    runtime = "onnxruntime" if kind == "onnx" else "torch"
    expected = Predictor(str(source), runtime=runtime)(image)
    with TestClient(create_app(str(source), runtime=runtime)) as c:
        _wait_ready(c)
        assert c.get("/v1/model").json()["classes"] == ["0", "1", "2"]
        r = c.post("/v1/segment", content=_png_bytes(image), headers={"content-type": "image/png"})
        assert r.status_code == 200 and np.array_equal(np.asarray(Image.open(io.BytesIO(r.content))), expected)


def test_health_reports_a_model_that_failed_to_load():
    with TestClient(create_app("no-such-weights.pt")) as c:
        deadline = time.time() + 30
        while c.get("/healthz").json()["status"] == "loading" and time.time() < deadline:
            time.sleep(0.05)
        r = c.get("/healthz")
        assert r.status_code == 503 and r.json()["status"] == "error" and "no-such-weights.pt" in r.json()["error"]
        r = c.post("/v1/segment", content=SAMPLE.read_bytes(), headers={"content-type": "image/png"})
        assert r.status_code == 503 and r.json()["error"].startswith("the model is not loaded: ")


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start_server(*args):
    port = _free_port()
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    proc = subprocess.Popen([sys.executable, "-m", "hyperseg", "serve", "--port", str(port), "--runtime", "torch",
                             *args], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    deadline = time.time() + 120
    while time.time() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as r:
                if r.status == 200:
                    return proc, port
        except OSError:
            if proc.poll() is not None:
                raise AssertionError(proc.stdout.read())
            time.sleep(0.2)
    proc.kill()
    raise AssertionError("the server did not start")


def test_sigterm_lets_the_request_in_flight_finish_then_exits_0():
    proc, port = _start_server()
    try:
        body = SAMPLE.read_bytes()
        head = (f"POST /v1/segment?format=json HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: image/png\r\n"
                f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n").encode()
        with socket.create_connection(("127.0.0.1", port), timeout=60) as conn:
            conn.sendall(head + body[:1000])  # the request is in flight: half its body has arrived
            time.sleep(0.5)
            proc.send_signal(signal.SIGTERM)
            time.sleep(0.5)
            conn.sendall(body[1000:])
            answer = b""
            while chunk := conn.recv(65536):
                answer += chunk
        status, _, payload = answer.partition(b"\r\n\r\n")
        assert status.startswith(b"HTTP/1.1 200") and json.loads(payload)["width"] == 480
        assert proc.wait(60) == 0
        log = proc.stdout.read()
        assert "POST /v1/segment 200" in log and "Traceback" not in log
    finally:
        if proc.poll() is None:
            proc.kill()


def test_cli_refuses_a_busy_port_and_bad_numbers_and_knows_loopback(capsys):
    from hyperseg.cli import main as cli_main
    from hyperseg.serve import is_loopback

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert cli_main(["serve", "--port", str(port)]) == 2
    assert f"--port {port}: cannot listen on 127.0.0.1:{port}" in capsys.readouterr().err
    assert cli_main(["serve", "--workers", "0"]) == 2
    assert "--workers 0" in capsys.readouterr().err
    # off loopback it warns before it loads anything (here the model is missing, so it stops there)
    assert cli_main(["serve", "--host", "0.0.0.0", "--port", str(_free_port()), "-m", "missing.pt"]) == 2
    err = capsys.readouterr().err
    assert "warning: listening on 0.0.0.0" in err and "missing.pt" in err
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost")
    assert not is_loopback("0.0.0.0") and not is_loopback("192.168.1.5")


# -- the web page, in a real headless Chromium -------------------------------------------------------

ARTIFACTS = Path(os.environ.get("HYPERSEG_TEST_ARTIFACTS", Path(__file__).resolve().parents[2] / "test-artifacts"))


def _system_chromium():
    from conftest import system_chromium

    return system_chromium()


def test_web_page_segments_an_uploaded_image_in_chromium(request):
    playwright_api = pytest.importorskip("playwright.sync_api", reason="pip install playwright (the test extra)")
    browser_path = _system_chromium()
    camvid = Path(os.environ.get("HYPERSEG_SHARED", Path(__file__).resolve().parents[3] / "shared")) / "data/camvid"
    upload = min((camvid / "val").glob("*.png")) if (camvid / "val").is_dir() else SAMPLE  # a CamVid val image
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the server runs with one thread: the same summation order, the same labels
    try:
        predictor = Predictor("camvid", runtime="torch")
        expected = predictor(np.asarray(Image.open(upload).convert("RGB")))
    finally:
        torch.set_num_threads(threads)

    proc, port = _start_server()
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    try:
        with playwright_api.sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=browser_path, args=["--no-sandbox"])
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            offline = []  # the page must not reach past the server (no CDN)
            page.on("request", lambda r: offline.append(r.url) if f"127.0.0.1:{port}" not in r.url
                    and not r.url.startswith(("blob:", "data:")) else None)
            page.goto(f"http://127.0.0.1:{port}/")
            page.wait_for_function("document.getElementById('model-info').textContent.startsWith('camvid')")
            page.set_input_files("#file-input", str(upload))
            page.wait_for_selector("body[data-state=done]", timeout=120_000)

            data_url = page.evaluate("document.getElementById('overlay').toDataURL('image/png')")
            import base64

            drawn = np.asarray(Image.open(io.BytesIO(base64.b64decode(data_url.split(",", 1)[1]))).convert("RGB"))
            assert np.array_equal(drawn, predictor.palette[expected])  # every pixel: the class Predictor gives

            rows = page.locator("#legend tbody tr")
            assert rows.count() == 11
            assert [rows.nth(i).locator("td").first.inner_text().strip() for i in range(11)] == predictor.class_names
            shares = np.bincount(expected.ravel(), minlength=11) / expected.size
            road = rows.nth(3).locator("td").nth(1).inner_text()
            assert road == f"{shares[3] * 100:.1f} %"
            assert "model " in page.inner_text("#latency") and " ms" in page.inner_text("#latency")

            page.locator("#opacity").fill("0.2")
            assert page.evaluate("getComputedStyle(document.getElementById('overlay')).opacity") == "0.2"
            page.locator("#opacity").fill("0.6")
            page.screenshot(path=str(ARTIFACTS / "serve_page.png"), full_page=True)

            page.set_viewport_size({"width": 390, "height": 844})  # a phone
            assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")
            page.screenshot(path=str(ARTIFACTS / "serve_page_phone.png"), full_page=True)

            page.locator("#samples button").first.click()  # a bundled sample works the same way
            page.wait_for_selector("body[data-state=done]")
            bad = ARTIFACTS / "not_an_image.png"
            bad.write_bytes(b"plain text, not an image")
            page.set_input_files("#file-input", str(bad))
            page.wait_for_selector("body[data-state=error]")
            assert "cannot read the image" in page.inner_text("#status")
            browser.close()
        assert offline == []
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) == 0


def test_missing_serve_extra_names_the_install_line(monkeypatch, capsys):
    from hyperseg.cli import main as cli_main

    monkeypatch.setitem(sys.modules, "uvicorn", None)
    assert cli_main(["serve", "--port", str(_free_port())]) == 2
    assert "pip install 'hyperseg[serve]'" in capsys.readouterr().err


# ------------------------------------------------------------------------ third audit: hangs and growth

def test_an_image_smaller_than_the_model_takes_is_a_422(client):
    reply = client.post("/v1/segment", content=_png_bytes(np.zeros((20, 20, 3), np.uint8)),
                        headers={"content-type": "image/png"})
    assert reply.status_code == 422 and "at least 32" in reply.json()["error"]


def test_a_form_of_many_tiny_parts_is_refused(client):
    boundary = "b0undary"
    part = f"--{boundary}\r\nContent-Disposition: form-data; name=\"x\"\r\n\r\n1\r\n"
    body = (part * 5000 + f"--{boundary}--\r\n").encode()
    reply = client.post("/v1/segment", content=body,
                        headers={"content-type": f"multipart/form-data; boundary={boundary}"})
    assert reply.status_code == 400 and "more than 16 parts" in reply.json()["error"]
    assert client.get("/healthz").status_code == 200


def _tiny_checkpoint(path):
    model = hyperseg.create_model("hyperseg", encoder_name="tf_efficientnet_lite0", num_classes=3,
                                  weight_groups=[16, 16, 8, 8, 4])
    return hyperseg.save_model(model, path)


class _ServerInThread:
    """A real uvicorn on 127.0.0.1 in a thread of this process; it stops when the block ends."""

    def __init__(self, app):
        import uvicorn

        self.port = _free_port()
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self):
        self.thread.start()
        for _ in range(600):
            if self.server.started:
                return self
            time.sleep(0.05)
        raise AssertionError("uvicorn did not start")

    def __exit__(self, *exc):
        self.server.should_exit = True
        self.thread.join(30)


def _read_until_closed(conn):
    """What the server sends until it closes the connection (the socket's timeout bounds each wait)."""
    answer = b""
    while chunk := conn.recv(65536):
        answer += chunk
    return answer


def test_a_stalled_upload_gets_408_and_frees_its_place(tmp_path):
    """A real client sends the headers and part of the body, then stops: the server answers 408 and
    closes the connection, and with room for one upload only, the next client is served (not 503)."""
    app = create_app(str(_tiny_checkpoint(tmp_path / "tiny.pt")), runtime="torch", workers=1, max_queue=0,
                     upload_timeout_s=0.5)
    app.state.pool.load()
    image = _png_bytes(np.random.default_rng(3).integers(0, 255, (64, 64, 3), dtype=np.uint8))
    with _ServerInThread(app) as server:
        with socket.create_connection(("127.0.0.1", server.port), timeout=30) as conn:
            conn.sendall(f"POST /v1/segment HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: image/png\r\n"
                         f"Content-Length: {len(image)}\r\n\r\n".encode() + image[:100])
            answer = _read_until_closed(conn)  # the client sends nothing more
        head, _, body = answer.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 408") and b"connection: close" in head.lower()
        assert json.loads(body) == {"error": "the upload stalled: nothing arrived for 0.5 s", "status": 408}
        with urllib.request.urlopen(urllib.request.Request(
                f"http://127.0.0.1:{server.port}/v1/segment", data=image, headers={"Content-Type": "image/png"}),
                timeout=60) as reply:
            assert reply.status == 200 and reply.headers["Content-Type"] == "image/png"


def test_an_upload_timeout_must_be_a_positive_number():
    for value in (0, -1, float("nan"), float("inf"), "30", True):
        with pytest.raises(HypersegError, match="upload_timeout_s"):
            create_app("camvid", upload_timeout_s=value)


@pytest.mark.slow  # several conversions: over 10 s
def test_two_threads_converting_at_once_both_succeed(tmp_path, monkeypatch):
    """serve --workers 2 with two new sizes: the exporter is not thread-safe, so conversions take turns."""
    pytest.importorskip("onnxscript")
    from hyperseg.runtime.cache import cached_onnx

    monkeypatch.setenv("HYPERSEG_CACHE", str(tmp_path))
    model = hyperseg.create_model("hyperseg", encoder_name="tf_efficientnet_lite0", num_classes=3,
                                  weight_groups=[16, 16, 8, 8, 4]).eval()
    results, errors = {}, []

    def convert(size):
        try:
            results[size] = cached_onnx(model, size, "fp32")[0]
        except Exception as exc:  # collected: the assertion below shows it
            errors.append(repr(exc))

    threads = [threading.Thread(target=convert, args=(size,)) for size in ((64, 64), (64, 128))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=600)
    assert not errors and sorted(results) == [(64, 64), (64, 128)]
    assert all(path.is_file() for path in results.values())


def test_prune_cache_deletes_the_least_recently_used_files_first(tmp_path, monkeypatch):
    from hyperseg.runtime.cache import OPENVINO_FOLDER, OWNER_MARK, openvino_cache_dir, prune_cache

    monkeypatch.setenv("HYPERSEG_CACHE", str(tmp_path))
    assert openvino_cache_dir() == tmp_path / OPENVINO_FOLDER  # made and marked as ours
    a, b, d = (f"hyperseg-{size}-fp32-{digit * 20}.onnx" for size, digit in (("64x64", "a"), ("dynamic", "b"),
                                                                              ("32x64", "d")))
    sizes = {a: 100, b: 200, f"{OPENVINO_FOLDER}/123.blob": 300, d: 50}  # oldest first
    for i, (name, size) in enumerate(sizes.items()):
        path = tmp_path / name
        path.write_bytes(b"x" * size)
        os.utime(path, (1000 + i, 1000 + i))
    # 650 bytes, limit 400: a (-> 550) and b (-> 350) go, oldest first; the blob and d stay
    assert sorted(p.name for p in prune_cache(400, root=tmp_path)) == [a, b]
    assert sorted(p.name for p in _all_files(tmp_path)) == sorted([OWNER_MARK, "123.blob", d])
    # a kept file is never deleted, even when it is the oldest and the limit is 0
    blob = tmp_path / OPENVINO_FOLDER / "123.blob"
    os.utime(blob, (1, 1))
    assert [p.name for p in prune_cache(0, keep=(blob,), root=tmp_path)] == [d]
    assert sorted(p.name for p in _all_files(tmp_path)) == sorted([OWNER_MARK, "123.blob"])


def _all_files(root):
    return [p for p in root.rglob("*") if p.is_file()]


@pytest.mark.slow  # several conversions: over 10 s
def test_a_converted_model_keeps_a_bounded_number_of_sizes_in_memory_and_on_disk(tmp_path, monkeypatch):
    """serve fed a new image size per request: memory holds a few compiled sizes, the disk cache stays
    under HYPERSEG_CACHE_MAX_MB, and every answer still equals the PyTorch model's."""
    pytest.importorskip("onnxruntime", reason="the onnx extra is not installed")
    pytest.importorskip("onnxscript")
    import hyperseg.runtime.onnx_runtimes as onnx_runtimes
    from hyperseg.runtime import load_runtime

    monkeypatch.setenv("HYPERSEG_CACHE", str(tmp_path))
    monkeypatch.setattr(onnx_runtimes, "MAX_COMPILED_SIZES", 2)
    model = hyperseg.create_model("hyperseg", encoder_name="tf_efficientnet_lite0", num_classes=3,
                                  weight_groups=[16, 16, 8, 8, 4]).eval()
    runtime = load_runtime(model, runtime="onnxruntime")
    one_file = None
    for size in ((64, 64), (64, 128), (128, 64)):
        x = torch.randn(1, 3, *size)
        with torch.no_grad():
            assert torch.allclose(runtime(x), model(x), atol=1e-4)
        one_file = one_file or sum(p.stat().st_size for p in _all_files(tmp_path))
        monkeypatch.setenv("HYPERSEG_CACHE_MAX_MB", str(1.5 * one_file / 2**20))  # room for one file and a half
    assert list(runtime.engines) == [(64, 128), (128, 64)]  # the least recently used size went first
    on_disk = _all_files(tmp_path)
    assert len(on_disk) == 1 and on_disk[0].name.startswith("hyperseg-128x64-")
    runtime(torch.randn(1, 3, 64, 128))  # a hit moves its size to the end
    assert list(runtime.engines) == [(128, 64), (64, 128)]


@pytest.fixture(scope="module")
def dynamic_cache(tmp_path_factory):
    """One cache folder for the dynamic-shape tests: the second runtime finds the first one's file."""
    return tmp_path_factory.mktemp("dynamic-cache")


@pytest.mark.slow  # a dynamic-shape export takes over a minute
@pytest.mark.parametrize("runtime", ["openvino", "onnxruntime"])
def test_dynamic_shapes_convert_once_for_every_size(runtime, dynamic_cache, monkeypatch):
    """serve's default: new image sizes never convert again, the disk holds one file (no OpenVINO
    blob per size), OpenVINO keeps at most MAX_COMPILED_SIZES reshaped graphs, and every answer
    equals the PyTorch model's (the oracle)."""
    pytest.importorskip(runtime, reason=f"{runtime} is not installed")
    pytest.importorskip("onnxscript")
    import hyperseg.runtime.onnx_runtimes as onnx_runtimes
    from hyperseg.runtime import load_runtime

    monkeypatch.setenv("HYPERSEG_CACHE", str(dynamic_cache))
    monkeypatch.setattr(onnx_runtimes, "MAX_COMPILED_SIZES", 2)
    torch.manual_seed(0)
    model = hyperseg.create_model("hyperseg", encoder_name="tf_efficientnet_lite0", num_classes=3,
                                  weight_groups=[16, 16, 8, 8, 4]).eval()
    converted = load_runtime(model, runtime=runtime, shapes="dynamic")
    for size in ((64, 64), (64, 128), (128, 64), (100, 70)):  # the last is padded inside the runtime
        x = torch.randn(1, 3, *size)
        with torch.no_grad():
            assert torch.allclose(converted(x), model(x), atol=1e-4)
    assert list(converted.engines) == [None]  # one engine for every size
    files = _all_files(dynamic_cache)
    assert len(files) == 1 and files[0].name.startswith("hyperseg-dynamic-fp32-")
    if runtime == "openvino":
        assert len(converted.engines[None].requests) == 2


def test_serve_converts_for_dynamic_shapes_and_the_other_commands_per_size():
    from hyperseg.cli import build_parser

    parser = build_parser()
    assert parser.parse_args(["serve"]).shapes == "dynamic"
    assert parser.parse_args(["predict", "x.png"]).shapes == "static"
    assert parser.parse_args(["serve", "--shapes", "static"]).shapes == "static"


def test_dynamic_shapes_fall_back_to_per_size_for_models_without_symbolic_export(tmp_path, monkeypatch):
    pytest.importorskip("onnxruntime", reason="the onnx extra is not installed")
    pytest.importorskip("onnxscript")
    from hyperseg.runtime import load_runtime

    monkeypatch.setenv("HYPERSEG_CACHE", str(tmp_path))
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3, padding=1)).eval()
    model.num_classes = 4
    converted = load_runtime(model, runtime="onnxruntime", shapes="dynamic")
    assert converted.shapes == "static"
    with pytest.raises(HypersegError, match="--shapes 'ragged'"):
        load_runtime(model, runtime="onnxruntime", shapes="ragged")


@pytest.mark.parametrize("value", ["abc", "0", "-5", "inf", "nan"])
def test_a_bad_cache_limit_is_one_line_naming_the_variable(value, monkeypatch):
    from hyperseg.runtime.cache import cache_limit_bytes

    monkeypatch.setenv("HYPERSEG_CACHE_MAX_MB", value)
    with pytest.raises(HypersegError, match="HYPERSEG_CACHE_MAX_MB"):
        cache_limit_bytes()


def test_uploads_still_arriving_are_bounded_by_workers_plus_queue(reference):
    """With --workers 1 --max-queue 0 one upload may be in progress; a second gets 503 at once,
    and once the first finishes the server takes uploads again."""
    import asyncio

    import httpx

    app = create_app("camvid", runtime="torch", workers=1, max_queue=0)
    app.state.pool.load()  # loaded here, so the lifespan starts no loader and nothing waits on a clock
    image_bytes = _png_bytes(reference[1])

    async def scenario():
        release = asyncio.Event()

        async def slow_body():
            yield image_bytes[:100]
            await release.wait()  # the client is still sending
            yield image_bytes[100:]

        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://test", timeout=60) as client:
                first = asyncio.create_task(client.post("/v1/segment", content=slow_body(),
                                                        headers={"content-type": "image/png"}))
                for _ in range(200):  # until the first upload is counted
                    await asyncio.sleep(0.01)
                    second = await client.post("/v1/segment", content=image_bytes,
                                               headers={"content-type": "image/png"})
                    if second.status_code == 503:
                        break
                release.set()
                first = await first
                third = await client.post("/v1/segment", content=image_bytes, headers={"content-type": "image/png"})
        return first, second, third

    first, second, third = asyncio.run(scenario())
    assert second.status_code == 503 and "uploads in progress" in second.json()["error"]
    assert second.headers["retry-after"]
    assert first.status_code == 200 and third.status_code == 200


@pytest.mark.slow  # a conversion in a child process; the killed-child path runs by default
def test_an_isolated_conversion_runs_in_a_child_process_and_gives_the_same_model(tmp_path, monkeypatch):
    """serve converts in a child (its memory goes when the child exits). Oracle for "in a child": the
    parent's converter is replaced by one that fails, and the conversion still succeeds; the file
    computes the PyTorch model's logits; an error in the child comes back as the same one line."""
    ort = pytest.importorskip("onnxruntime", reason="the onnx extra is not installed")
    pytest.importorskip("onnxscript")
    import hyperseg.runtime.cache as cache
    from hyperseg.runtime.onnx_export import ExportError

    monkeypatch.setenv("HYPERSEG_CACHE", str(tmp_path))
    model = hyperseg.create_model("hyperseg", encoder_name="tf_efficientnet_lite0", num_classes=3,
                                  weight_groups=[16, 16, 8, 8, 4]).eval()

    def in_the_parent(*args):
        raise AssertionError("the conversion ran in the parent process")

    monkeypatch.setattr(cache, "_convert", in_the_parent)
    cache.isolate_conversions(True)
    try:
        path, _ = cache.cached_onnx(model, (64, 128), "fp32")
        with pytest.raises(ExportError, match="too small"):
            cache.cached_onnx(model, (16, 16), "fp32")
    finally:
        cache.isolate_conversions(False)
    x = torch.randn(1, 3, 64, 128)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    with torch.no_grad():
        expected = model(x).numpy()
    np.testing.assert_allclose(session.run(None, {"image": x.numpy()})[0], expected, atol=1e-4)


def _killed_conversion_child(args, *, input=None, **kwargs):
    """subprocess.run for the conversion child: the real child, killed at once as the out-of-memory killer would."""
    child = subprocess.Popen(args, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    child.kill()
    out, err = child.communicate(input)
    return subprocess.CompletedProcess(args, child.returncode, out, err)


def test_a_killed_conversion_is_a_503_and_the_server_goes_on(tmp_path, monkeypatch):
    """The conversion process dying is the server's failure (503 naming the cause), not the client's (4xx),
    and the next request is served."""
    pytest.importorskip("onnxruntime", reason="the onnx extra is not installed")
    pytest.importorskip("onnxscript")
    monkeypatch.setenv("HYPERSEG_CACHE", str(tmp_path / "cache"))
    source = str(_tiny_checkpoint(tmp_path / "tiny.pt"))
    image = np.random.default_rng(4).integers(0, 255, (64, 96, 3), dtype=np.uint8)
    app = create_app(source, runtime="onnxruntime")
    app.state.pool.load()
    real_run = subprocess.run
    with TestClient(app, raise_server_exceptions=False) as c:
        monkeypatch.setattr(subprocess, "run", _killed_conversion_child)
        r = c.post("/v1/segment", content=_png_bytes(image), headers={"content-type": "image/png"})
        assert r.status_code == 503 and r.json()["status"] == 503
        assert "killed by SIGKILL (signal 9)" in r.json()["error"] and "Traceback" not in r.text
        monkeypatch.setattr(subprocess, "run", real_run)
        assert c.get("/healthz").status_code == 200
        r = c.post("/v1/segment", content=_png_bytes(image), headers={"content-type": "image/png"})
        assert r.status_code == 200
    expected = Predictor(source, runtime="onnxruntime")(image)  # the oracle: the library, on the same file
    assert np.array_equal(np.asarray(Image.open(io.BytesIO(r.content))), expected)


@pytest.mark.parametrize("variable", ["HYPERSEG_CACHE_MAX_MB", "HYPERSEG_CACHE"])
def test_a_bad_cache_setting_stops_serve_before_it_listens(variable, tmp_path, monkeypatch, capsys):
    import uvicorn

    from hyperseg.cli import main as cli_main

    def listening(self, *args, **kwargs):
        raise AssertionError("the server started with a bad cache setting")

    monkeypatch.setattr(uvicorn.Server, "run", listening)
    value = "0" if variable == "HYPERSEG_CACHE_MAX_MB" else str(tmp_path / "a-file")
    (tmp_path / "a-file").write_text("not a folder")
    monkeypatch.setenv(variable, value)
    assert cli_main(["serve", "--port", str(_free_port()), "--runtime", "onnxruntime"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"{variable}={value if variable == 'HYPERSEG_CACHE' else repr(value)}" in err[0]
    if variable == "HYPERSEG_CACHE_MAX_MB":  # refused when the app is made, whatever the runtime
        with pytest.raises(HypersegError, match="HYPERSEG_CACHE_MAX_MB='0'"):
            create_app("camvid", runtime="torch")
    assert (tmp_path / "a-file").read_text() == "not a folder"


def test_the_server_isolates_conversions_while_it_runs():
    import hyperseg.runtime.cache as cache

    app = create_app("camvid", runtime="torch")
    app.state.pool.load()  # loaded here: no loader thread outlives the test
    assert not cache._ISOLATED[0]
    with TestClient(app):
        assert cache._ISOLATED[0]
    assert not cache._ISOLATED[0]  # a process that ran a server in-process converts in-process again


@pytest.mark.parametrize("value", ["0", "-1", "inf"])
def test_serve_refuses_a_bad_upload_timeout_before_it_listens(value, monkeypatch, capsys):
    import uvicorn

    from hyperseg.cli import main as cli_main

    def listening(self, *args, **kwargs):
        raise AssertionError("the server started with a bad --upload-timeout")

    monkeypatch.setattr(uvicorn.Server, "run", listening)
    assert cli_main(["serve", "--port", str(_free_port()), "--runtime", "torch", "--upload-timeout", value]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--upload-timeout" in err[0], err
