"""agegender-serve: each endpoint and each error through the ASGI app, bounds under
concurrent requests, and the real server as a user starts it (a browser test where Debian's
chromium is installed). The toy project's models answer by hand-known rules, so the tests
are fast and exact."""

from __future__ import annotations

import asyncio
import hashlib
import io
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import httpx2 as httpx
import numpy as np
import pytest
import skimage.data
from fastapi.testclient import TestClient
from PIL import Image

from agegender.serve import api, health, http, predict
from agegender.serve.limits import Limits


@pytest.fixture(scope="module")
def astronaut(tmp_path_factory) -> Path:
    """scikit-image's astronaut photo (public domain), as a JPEG: one face."""
    path = tmp_path_factory.mktemp("photos") / "astronaut.jpg"
    Image.fromarray(skimage.data.astronaut()).save(path, quality=92)
    return path


@pytest.fixture
def in_toy(toy_project, monkeypatch):
    monkeypatch.setenv(api.HOME, str(toy_project))
    monkeypatch.setattr(api, "_loaded", {})
    return toy_project


@pytest.fixture
def analyzers(in_toy):
    return {name: api.Analyzer(name) for name in ("A", "B", "ensemble")}


def client_for(analyzers, **limits) -> TestClient:
    return TestClient(http.create_app(analyzers, "B", Limits(**limits)))


def png(array: np.ndarray) -> bytes:
    out = io.BytesIO()
    Image.fromarray(array).save(out, "PNG")
    return out.getvalue()


def test_analyze_answers_the_records_agegender_predict_prints(analyzers, astronaut, capsys):
    assert predict.cli([str(astronaut)]) == 0
    printed = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    (expected,) = [{k: v for k, v in r.items() if k != "path"} for r in printed]
    client = client_for(analyzers)
    upload = client.post("/analyze", files={"image": astronaut.read_bytes()})
    raw = client.post("/analyze", content=astronaut.read_bytes())
    assert upload.status_code == raw.status_code == 200
    assert (
        upload.json()
        == raw.json()
        == {
            "model": "B",
            "image": {"width": 512, "height": 512},
            "faces": [expected],
        }
    )


def test_options_in_the_query_or_the_form(analyzers):
    """A grey 30 crop: A says 30 and male; the ensemble 37.5 (ages weighed 1:3)."""
    grey = png(np.full((64, 48, 3), 30, np.uint8))
    client = client_for(analyzers)
    by_query = client.post("/analyze?model=A&crops=true", content=grey).json()
    by_form = client.post("/analyze", files={"image": grey}, data={"model": "A", "crops": "1"})
    assert by_query == by_form.json()
    assert by_query["image"] == {"width": 48, "height": 64}
    ((face),) = by_query["faces"]
    assert face["age"] == 30.0 and face["gender"] == "male" and "box" not in face
    ensemble = client.post("/analyze?model=ensemble&crops=yes", content=grey).json()
    assert ensemble["model"] == "ensemble" and ensemble["faces"][0]["age"] == 37.5
    none = client.post("/analyze", content=grey).json()  # looked for a face: none
    assert none == {"model": "B", "image": {"width": 48, "height": 64}, "faces": []}


def truncated_jpeg(astronaut: Path) -> bytes:
    return astronaut.read_bytes()[:3000]


BAD = [  # (what is sent, status, the error's start)
    (lambda a: {"content": b""}, 400, "an empty upload"),
    (lambda a: {"content": b"hello, not an image"}, 415, "the upload is not an image"),
    (lambda a: {"files": {"image": b"GIF89a broken"}}, 415, "the upload is not an image"),
    (lambda a: {"content": truncated_jpeg(a)}, 422, "the upload cannot be used: unreadable image"),
    (
        lambda a: {"content": png(np.zeros((6000, 7000), np.uint8))},
        422,
        "the upload cannot be used: too large",
    ),
    (lambda a: {"content": a.read_bytes(), "params": {"model": "C"}}, 422, "model: Input"),
    (lambda a: {"content": a.read_bytes(), "params": {"crops": "maybe"}}, 422, "crops: Input"),
    (lambda a: {"files": {"image": b"x"}, "data": {"crops": "maybe"}}, 422, "crops='maybe'"),
    (lambda a: {"files": {"image": b"x"}, "data": {"path": "/etc"}}, 400, "unknown form field"),
    (lambda a: {"files": {"a": b"x", "b": b"y"}}, 400, "no image in the form"),
    (
        lambda a: {"content": b"--x\r\nbroken", "headers": {"content-type": "multipart/form-data"}},
        400,
        "a multipart upload without a boundary",
    ),
]


@pytest.mark.parametrize("send, status, start", BAD, ids=[b[2] for b in BAD])
def test_each_bad_upload_gets_a_4xx_json_error_of_one_line(
    analyzers, astronaut, send, status, start
):
    response = client_for(analyzers).post("/analyze", **send(astronaut))
    assert response.status_code == status
    assert response.headers["content-type"] == "application/json"
    error = response.json()["error"]
    assert error.startswith(start) and "\n" not in error and "Traceback" not in error


def test_too_large_uploads_get_413_and_wrong_paths_json(analyzers, astronaut):
    client = client_for(analyzers, upload_mb=0.01)  # 10 KiB
    big = client.post("/analyze", content=astronaut.read_bytes())
    assert big.status_code == 413 and big.json()["error"].startswith("upload over the 0.01 MB")
    chunks = (b"x" * 4096 for _ in range(4))  # no Content-Length: refused while reading
    assert client.post("/analyze", content=chunks).status_code == 413
    assert client.get("/nothing").json() == {"error": "Not Found"}
    assert client.get("/analyze").status_code == 405
    assert client.post("/analyze", content=astronaut.read_bytes()[:5000]).status_code == 422


def test_a_failure_inside_is_a_500_without_a_traceback(analyzers, monkeypatch):
    def broken(*args):
        raise RuntimeError("secret detail /srv/models")

    monkeypatch.setattr(http, "answer", broken)
    app = http.create_app(analyzers, "B", Limits())
    response = TestClient(app, raise_server_exceptions=False).post("/analyze", content=b"x")
    assert response.status_code == 500
    assert response.json() == {"error": "internal error; the server's log has the details"}


def test_uploads_are_never_written_to_disk(analyzers, astronaut, monkeypatch):
    def no_disk(*args, **kwargs):
        raise AssertionError("an upload went to a temporary file")

    for name in ("SpooledTemporaryFile", "TemporaryFile", "NamedTemporaryFile", "mkstemp"):
        monkeypatch.setattr(tempfile, name, no_disk)
    big = astronaut.read_bytes() + b"\0" * 3_000_000  # over Starlette's 1 MB spooling size
    response = client_for(analyzers).post("/analyze", files={"image": big})
    assert response.status_code == 200 and len(response.json()["faces"]) == 1


def slow_answers(monkeypatch, seconds: float) -> None:
    real = http.answer

    def slow(*args):
        time.sleep(seconds)
        return real(*args)

    monkeypatch.setattr(http, "answer", slow)


async def upload_grey(client: httpx.AsyncClient, delay: float = 0.0) -> httpx.Response:
    await asyncio.sleep(delay)
    grey = png(np.full((32, 32, 3), 30, np.uint8))
    return await client.post("/analyze?crops=true", content=grey, timeout=30)


def concurrently(app, scenario) -> list:
    """Run `scenario(client)` against the app in one event loop, as uvicorn serves it."""

    async def main() -> list:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            return await scenario(client)

    return asyncio.run(main())


def test_requests_past_the_bound_get_503_at_once(analyzers, monkeypatch):
    slow_answers(monkeypatch, 0.5)
    app = http.create_app(analyzers, "B", Limits(in_flight=1, waiting=1))

    async def four(client):
        return await asyncio.gather(*(upload_grey(client) for _ in range(4)))

    answers = concurrently(app, four)
    assert sorted(r.status_code for r in answers) == [200, 200, 503, 503]
    busy = next(r for r in answers if r.status_code == 503)
    assert busy.headers["retry-after"] == "2" and busy.json()["error"].startswith("busy")


def test_a_slow_analysis_gets_504_and_frees_its_turn_when_done(analyzers, monkeypatch):
    slow_answers(monkeypatch, 1.0)
    app = http.create_app(analyzers, "B", Limits(seconds=0.4, in_flight=1))

    async def three(client):
        late = await upload_grey(client)  # answered 504 at 0.4 s; its analysis goes on
        http.answer = lambda *args: {"done": True}  # monkeypatch undoes it after the test
        return [late, *await asyncio.gather(upload_grey(client), upload_grey(client, 0.7))]

    late, waited, after = concurrently(app, three)
    assert late.status_code == 504 and "took over 0.4 s" in late.json()["error"]
    assert waited.status_code == 503 and "no turn within 0.4 s" in waited.json()["error"]
    assert after.json() == {"done": True}  # the slow analysis ended at 1 s: its turn is free


def test_an_upload_slower_than_the_limit_gets_408(analyzers):
    app = http.create_app(analyzers, "B", Limits(seconds=0.3))

    async def trickle():
        yield b"\xff\xd8"
        await asyncio.sleep(1.0)  # a client that stalls mid-upload
        yield b"\xff\xd9"

    async def slow_upload(client):
        return await client.post("/analyze", content=trickle(), timeout=10)

    answer = concurrently(app, slow_upload)
    assert answer.status_code == 408 and answer.json()["error"] == "the upload took over 0.3 s"


def test_health_names_the_models_versions_and_limits(analyzers, in_toy):
    health = client_for(analyzers, in_flight=3).get("/health").json()
    assert health["models"]["ensemble"]["files"] == [
        str(in_toy / "models" / "age_gender_A.keras"),
        str(in_toy / "models" / "age_gender_B.keras"),
    ]
    assert health["default_model"] == "B" and health["project"] == str(in_toy)
    assert health["provenance"] == {"commit": None, "why": "no readable dvc.lock beside the models"}
    assert health["limits"]["in_flight"] == 3 and health["versions"]["keras"]


def git(folder: Path, *args: str) -> str:
    done = subprocess.run(["git", "-C", str(folder), *args], capture_output=True, text=True)
    return done.stdout.strip()


def test_provenance_is_the_commit_whose_dvc_lock_records_the_models(tmp_path):
    if shutil.which("git") is None:
        pytest.skip("git is not installed")
    model = tmp_path / "models" / "m.keras"
    model.parent.mkdir()
    model.write_bytes(b"weights")
    out = {"path": "models/m.keras", "md5": hashlib.md5(b"weights").hexdigest()}
    lock = {"stages": {"train": {"outs": [out]}}}
    (tmp_path / "dvc.lock").write_text(json.dumps(lock))
    assert health.provenance(tmp_path, [str(model)])["why"].startswith("the project folder is not")
    git(tmp_path, "init", "-q")
    git(tmp_path, "add", "dvc.lock")
    git(tmp_path, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "lock")
    head = git(tmp_path, "rev-parse", "HEAD")
    assert health.provenance(tmp_path, [str(model)]) == {"commit": head}
    model.write_bytes(b"retrained")
    assert (
        "models/m.keras is not the model dvc.lock records"
        in (health.provenance(tmp_path, [str(model)])["why"])
    )


def test_the_page_and_the_api_docs_need_nothing_from_another_host(analyzers):
    client = client_for(analyzers)
    page = client.get("/")
    assert page.status_code == 200 and "Drop a photo" in page.text
    docs = client.get("/docs").text
    assert "swagger-ui" in docs
    for html in (page.text, docs):
        links = re.findall(r'(?:src|href)="([^"]+)"', html)
        assert not [link for link in links if "//" in link], "a CDN link: offline it fails"
    for link in re.findall(r'(?:src|href)="([^"]+)"', docs):
        assert client.get(link).status_code == 200, link
    spec = client.get("/openapi.json").json()
    assert {"/analyze", "/health"} <= set(spec["paths"])
    assert "multipart/form-data" in spec["paths"]["/analyze"]["post"]["requestBody"]["content"]


def test_the_command_line_checks_its_arguments_before_loading_anything(tmp_path):
    from agegender.serve.serve_cli import parse_args

    assert parse_args([]).host == "127.0.0.1"  # this machine only, unless told
    for bad in (["--port", "0"], ["--in-flight", "0"], ["--upload-mb", "-1"], ["--model", "x"]):
        with pytest.raises(SystemExit) as stopped:
            parse_args(bad)
        assert stopped.value.code == 2


# --- the real server, as a user starts it ----------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def served(toy_project, tmp_path_factory):
    """`agegender-serve` over the toy project, run from another folder; its base URL."""
    port = free_port()
    command = [sys.executable, "-m", "agegender.serve.serve_cli", "--port", str(port)]
    env = {**os.environ, api.HOME: str(toy_project)}
    log = tmp_path_factory.mktemp("serve") / "log.txt"
    with open(log, "w") as out:
        server = subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT, cwd="/")
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(240):
            try:
                urllib.request.urlopen(f"{url}/health", timeout=1)
                break
            except OSError:
                if server.poll() is not None:
                    pytest.fail(f"agegender-serve stopped: {log.read_text()[-2000:]}")
                time.sleep(0.5)
        yield url
    finally:
        server.terminate()
        server.wait(20)


def test_the_server_answers_curl_style_uploads(served, astronaut):
    request = urllib.request.Request(
        f"{served}/analyze?model=A", data=astronaut.read_bytes(), method="POST"
    )
    answer = json.load(urllib.request.urlopen(request, timeout=60))
    assert answer["model"] == "A" and len(answer["faces"]) == 1
    other = outward_address()  # 127.0.0.1 only: not on the machine's other addresses
    if other is None:
        pytest.skip("this machine has no address but loopback")
    with socket.socket() as s:
        s.settimeout(1)
        assert s.connect_ex((other, int(served.rsplit(":", 1)[1]))) != 0


def outward_address() -> str | None:
    """The address this machine would reach others from (a UDP connect sends nothing)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.connect(("192.0.2.1", 9))
        except OSError:
            return None
        address = s.getsockname()[0]
    return None if address.startswith("127.") else address


BROWSERS = ("chromium", "chromium-browser", "google-chrome")  # Debian's; GitHub's runners'
CHROMIUM = next(filter(None, map(shutil.which, BROWSERS)), None)
CHROMEDRIVER = shutil.which("chromedriver")


@pytest.mark.skipif(not (CHROMIUM and CHROMEDRIVER), reason="Debian's chromium not installed")
def test_the_page_in_a_real_browser_draws_a_box_per_face(served, astronaut, tmp_path):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (
        "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
        "--disable-background-networking", "--disable-component-update", "--no-first-run",
        "--disable-sync", f"--user-data-dir={tmp_path / 'profile'}", "--window-size=1000,900",
    ):  # fmt: skip
        options.add_argument(flag)
    browser = webdriver.Chrome(options=options, service=Service(CHROMEDRIVER))
    try:
        browser.get(served)
        WebDriverWait(browser, 30).until(
            lambda b: "Models A, B" in b.find_element(By.ID, "about").text
        )
        browser.find_element(By.ID, "file").send_keys(str(astronaut))
        wait = WebDriverWait(browser, 60)
        wait.until(lambda b: b.find_elements(By.CSS_SELECTOR, ".box .label"))
        (label,) = [e.text for e in browser.find_elements(By.CSS_SELECTOR, ".box .label")]
        record = json.loads(browser.find_element(By.ID, "json").text)["faces"][0]
        low, high = round(record["age_low"]), round(record["age_high"])
        assert label.startswith(f"{round(record['age'])} ({low}–{high}) · {record['gender']} ")
        assert browser.find_element(By.ID, "status").text == "1 face, model B"
        box = browser.find_element(By.CSS_SELECTOR, ".box").rect
        photo = browser.find_element(By.ID, "photo").rect
        scale = photo["width"] / 512  # the box sits on the face, in the shown image's scale
        assert box["x"] - photo["x"] == pytest.approx(record["box"][0] * scale, abs=2)
        assert box["width"] == pytest.approx(record["box"][2] * scale, abs=2)
        shot = os.environ.get("SERVE_SCREENSHOT")  # docs/serve.md's picture: set to keep one
        if shot:
            browser.save_screenshot(shot)
    finally:
        browser.quit()
