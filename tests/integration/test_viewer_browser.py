"""The viewer in a real browser: Debian's chromium (headless, SwiftShader WebGL) driven by Playwright.

`medanomaly serve` runs in a subprocess on a free 127.0.0.1 port with the committed fixture
detector (``tests/fixtures/lung_detector``: the demo lung_nodule detector trained on simulated
nodules, synthetic; its top finding on lung1 and lung2 is the real lesion). A real CT (pyradiomics
lung1 / lung2, NRRD) is uploaded through the page, the job followed to done, the study opened and
the first finding clicked. Checked: the slice shown is the finding's slice (largest area of the
mask the service wrote) and lies in the reference lesion, red contour pixels are drawn on the
canvas there and not on a slice far from the lesion, and the table shows the finding's volume and partial volume.
Screenshots are kept in each test's tmp folder (the artefacts).
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytestmark = [pytest.mark.browser, pytest.mark.slow, pytest.mark.xdist_group("service")]
CHROMIUM = "/usr/bin/chromium"
PAGE_MS = 180_000  # every page action: a WebGL (SwiftShader, CPU) frame on 2 busy cores can take tens of seconds
CHROMIUM_ARGS = ["--no-sandbox", "--use-angle=swiftshader", "--enable-unsafe-swiftshader"]


def free_port() -> int:
    """A TCP port free on 127.0.0.1 now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def serving(tmp: Path, run: Path, *options: str) -> Iterator[tuple[str, str]]:
    """``medanomaly serve`` on ``run`` in a subprocess (with ``options``): (base URL, token)."""
    import httpx

    from medanomaly.deploy.service.tokens import new_token

    tokens = tmp / "tokens.json"
    token = new_token(tokens)
    port = free_port()
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    with open(tmp / "serve.log", "wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "medanomaly.cli.app", "serve", str(run), "--port", str(port),
                                 "--tokens", str(tokens), "--data", str(tmp / "data"), *options],
                                stdout=out, stderr=subprocess.STDOUT, env=env)  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        try:
            if httpx.get(base + "/docs", timeout=2).status_code == 200:
                break
        except httpx.HTTPError:
            time.sleep(0.5)
    else:
        proc.kill()
        raise AssertionError((tmp / "serve.log").read_text()[-2000:])
    try:
        yield base, token
    finally:  # a failed test stops it too (it outlived a failing test)
        proc.terminate()
        try:
            proc.wait(40)
        except subprocess.TimeoutExpired:
            proc.kill()
    log = (tmp / "serve.log").read_text()
    assert "lung1" not in log and "lung2" not in log, "client file names never reach the log"


@pytest.fixture(scope="module")
def server(tmp_path_factory, fixture_lung_run):
    """``medanomaly serve`` on the fixture run in a subprocess: (base URL, token, tmp folder)."""
    tmp = tmp_path_factory.mktemp("viewer")
    with serving(tmp, fixture_lung_run) as (base, token):
        yield base, token, tmp


def red_pixels(png: bytes) -> int:
    """Pure-red pixels (the contour colour) in a PNG screenshot."""
    from io import BytesIO

    from PIL import Image

    rgb = np.asarray(Image.open(BytesIO(png)).convert("RGB")).astype(int)
    return int(((rgb[..., 0] > 180) & (rgb[..., 1] < 80) & (rgb[..., 2] < 80)).sum())


def sign_in(page, base: str, token: str) -> list[str]:
    """Open the viewer and give it the token; returns the list the page's uncaught errors are collected in."""
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(base + "/")
    page.fill("#token", token)
    page.dispatch_event("#token", "change")
    return errors


def upload_and_open(page, list_shot: Path | None = None) -> str:
    """Submit the upload form (its files already chosen), follow the job to done (``list_shot``: a screenshot of the
    job list then), open its study; the job id."""
    page.click("#upload button")
    page.wait_for_function("() => document.querySelector('#upload-status').dataset.job")  # a function: CSP blocks eval of an expression
    job = page.eval_on_selector("#upload-status", "e => e.dataset.job")
    page.wait_for_selector(f"tr[data-id='{job}'][data-status='done']", state="attached", timeout=300_000)
    if list_shot is not None:
        page.screenshot(path=str(list_shot))
    page.click(f"tr[data-id='{job}'] a")
    return job


def open_first_finding(page, base: str, token: str, case: str, shots: Path) -> tuple[dict, str]:
    """Upload ``case`` through the page, wait for done, open the study, click finding 1."""
    import httpx

    from medanomaly.data.sources import pyradiomics_case

    errors = sign_in(page, base, token)
    page.wait_for_selector("#model option", state="attached")  # <option>s are never "visible"
    page.set_input_files("#files", str(pyradiomics_case(case)[0]))
    job = upload_and_open(page, shots / "list.png")
    page.wait_for_selector("body[data-ready='1']", state="attached", timeout=PAGE_MS)
    result = httpx.get(f"{base}/v1/studies/{job}/results", headers={"Authorization": f"Bearer {token}"}).json()
    assert result["findings"], f"the fixture detector finds something on {case}"
    page.click("#findings tbody tr:first-child")
    page.wait_for_selector("#slice-info[data-finding='1']", state="attached", timeout=PAGE_MS)
    assert not errors, errors
    return result, job


def overlay_pixels(png: bytes) -> int:
    """Pixels of the mask / contour overlay in a canvas screenshot: red to yellow, blended over the grey
    CT (red well above blue); the CT itself is grey and the crosshair green."""
    from io import BytesIO

    from PIL import Image

    rgb = np.asarray(Image.open(BytesIO(png)).convert("RGB")).astype(int)
    return int((rgb[..., 0] - rgb[..., 2] > 80).sum())


def lesion_slices(case: str) -> set[int]:
    """Axial slices (z index) of the reference lesion of a pyradiomics case."""
    from medanomaly.data.sources import pyradiomics_case
    from medanomaly.io import read

    ref = np.asarray(read(pyradiomics_case(case)[1]).array) > 0
    return {int(z) for z in np.flatnonzero(ref.reshape(ref.shape[0], -1).any(1))}


@contextmanager
def chromium_page(height: int) -> Iterator[Any]:
    """A page of Debian's headless chromium, 1280 px wide, with the generous action timeout; nothing the pages do
    may be blocked by their Content-Security-Policy (checked when the page closes)."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1280, "height": height})
        page.set_default_timeout(PAGE_MS)
        refused: list[str] = []  # what the pages' Content-Security-Policy blocked: none of their own work may be
        page.on("console", lambda m: refused.append(m.text) if "Content Security Policy" in m.text else None)
        page.csp_refused = refused  # a test that provokes a refusal on purpose clears it
        try:
            yield page
        finally:
            browser.close()
        assert not refused, refused


def test_viewer_lung1_first_finding_shows_lesion_slice_and_contour(server, tmp_path):
    import httpx

    from medanomaly.io import read

    base, token, _ = server
    with chromium_page(760) as page:
        result, job = open_first_finding(page, base, token, "lung1", tmp_path)
        first = result["findings"][0]
        assert first["volume_ml"] > 0
        assert page.inner_text("#findings tbody tr:first-child td.volume") == f"{first['volume_ml']:.2f}"
        assert first["partial_volume_ml"] > 0, "the lung detector measures partial volumes"
        shown_pv = page.inner_text("#findings tbody tr:first-child td.partial-volume")
        assert shown_pv == f"{first['partial_volume_ml']:.2f}"
        page.click("[data-view='axial']")
        page.wait_for_timeout(500)
        shown = int(page.get_attribute("#slice-info", "data-slice"))
        mask_file = tmp_path / "mask.nii.gz"
        mask_file.write_bytes(httpx.get(f"{base}/v1/studies/{job}/masks/1",
                                        headers={"Authorization": f"Bearer {token}"}).content)  # fmt: skip
        mask = np.asarray(read(mask_file).array) > 0
        areas = mask.reshape(mask.shape[0], -1).sum(1)
        assert shown == int(np.argmax(areas)) == first["slice"], "the slice shown is the lesion's slice"
        assert shown in lesion_slices("lung1"), "finding 1 is the real lesion of lung1"
        on_lesion = page.locator("#gl").screenshot(path=str(tmp_path / "lesion_slice.png"))
        empty = [int(z) for z in np.flatnonzero(areas == 0)]
        far = max(empty, key=lambda z: abs(z - shown))
        page.evaluate(f"state.nv.moveCrosshairInVox(0, 0, {far - shown})")
        page.wait_for_timeout(500)
        assert int(page.get_attribute("#slice-info", "data-slice")) == far
        off_lesion = page.locator("#gl").screenshot(path=str(tmp_path / "empty_slice.png"))
    assert red_pixels(on_lesion) > 20, "contour drawn on the lesion's slice"
    assert red_pixels(off_lesion) < red_pixels(on_lesion) / 10, "no contour where the lesion is not"


def test_viewer_lung2_findings_table_and_three_planes(server, tmp_path):
    base, token, _ = server
    with chromium_page(720) as page:
        result, _ = open_first_finding(page, base, token, "lung2", tmp_path)
        page.wait_for_timeout(500)
        page.screenshot(path=str(tmp_path / "viewer_lung2.png"))
        shot = page.locator("#gl").screenshot(path=str(tmp_path / "viewer_lung2_canvas.png"))
        rows = page.locator("#findings tbody tr.clickable").count()
    assert rows == len(result["findings"])
    assert result["findings"][0]["slice"] in lesion_slices("lung2"), "finding 1 is the real lesion of lung2"
    assert overlay_pixels(shot) > 50, "the lesion's mask and contour show in the three planes"


def test_the_viewer_and_the_api_page_load_nothing_from_outside_the_service(server, tmp_path):
    """In chromium, every request the viewer and the API page make goes to the service itself, and the API page
    renders (Swagger UI from the service's own files; FastAPI's default page fetched it from a CDN and stayed blank
    without internet). Their Content-Security-Policy blocks a script injected into either page (none was set: any
    script that got in would have run with the user's token in reach)."""
    from urllib.parse import urlsplit

    base, _, _ = server
    with chromium_page(760) as page:
        hosts: list[str] = []
        page.on("request", lambda r: hosts.append(urlsplit(r.url).netloc or urlsplit(r.url).scheme))
        page.goto(base + "/")
        page.wait_for_load_state("networkidle")
        page.goto(base + "/docs")
        page.wait_for_selector(".swagger-ui .info .title", state="visible")
        assert "medanomaly" in page.inner_text(".swagger-ui .info .title")
        page.wait_for_selector(".opblock-summary-path[data-path='/v1/studies']")
        page.wait_for_selector(".swagger-ui .btn.authorize", state="visible")  # the bearer scheme is declared
        page.screenshot(path=str(tmp_path / "api_page.png"))
        for where in ("/", "/docs"):  # a script injected into either page (stored text, a file name) does not run
            page.goto(base + where)
            page.wait_for_load_state("networkidle")
            page.evaluate("() => { const s = document.createElement('script'); s.textContent = 'window.injected = 1'; "
                          "document.body.appendChild(s); }")  # fmt: skip
            assert page.evaluate("() => window.injected") is None, where
            assert len(page.csp_refused) == 1 and "inline script" in page.csp_refused[0], page.csp_refused
            page.csp_refused.clear()
    outside = {h for h in hosts if h not in (urlsplit(base).netloc, "data")}
    assert not outside, outside


@contextmanager
def prefix_proxy(prefix: str, backend: str) -> Iterator[str]:
    """A reverse proxy on a free port that serves ``backend`` at ``prefix`` and strips it, as nginx's
    ``location /medanomaly/ { proxy_pass http://backend/; }`` does: its base URL."""
    import http.client
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
    from urllib.parse import urlsplit

    target = urlsplit(backend)
    hop = {"connection", "keep-alive", "transfer-encoding", "proxy-connection", "upgrade"}

    class Forward(BaseHTTPRequestHandler):
        def _forward(self) -> None:
            if not (self.path == prefix or self.path.startswith(prefix + "/")):
                self.send_error(404)  # only the prefix leads to the service
                return
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            conn = http.client.HTTPConnection(target.hostname, target.port, timeout=300)
            headers = {k: v for k, v in self.headers.items() if k.lower() not in hop}
            conn.request(self.command, self.path[len(prefix):] or "/", body=body, headers=headers)
            answer = conn.getresponse()
            data = answer.read()
            self.send_response(answer.status)
            for name, value in answer.getheaders():
                if name.lower() not in hop | {"content-length"}:
                    self.send_header(name, value)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
            conn.close()

        do_GET = do_POST = do_DELETE = _forward

        def log_message(self, *args: Any) -> None:
            pass

    proxy = ThreadingHTTPServer(("127.0.0.1", 0), Forward)
    thread = threading.Thread(target=proxy.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{proxy.server_address[1]}"
    finally:
        proxy.shutdown()


def test_the_viewer_and_the_api_page_work_behind_a_proxy_at_a_path_prefix(tmp_path, fixture_lung_run):
    """A hospital puts the service behind its reverse proxy at https://host/medanomaly/: the viewer's and the API
    page's URLs were absolute (/v1/..., /static/...) and went to the proxy's root, so nothing loaded. With
    ``serve --root-path /medanomaly`` every URL stays under the prefix, opened with or without its trailing slash."""
    from urllib.parse import urlsplit

    prefix = "/medanomaly"
    with serving(tmp_path, fixture_lung_run, "--root-path", prefix + "/") as (backend, token), \
            prefix_proxy(prefix, backend) as proxy, chromium_page(760) as page:  # fmt: skip
        paths: list[str] = []
        page.on("request", lambda r: paths.append(urlsplit(r.url).path if r.url.startswith(proxy) else r.url))
        failed: list[str] = []
        page.on("response", lambda r: failed.append(f"{r.status} {r.url}") if r.status >= 400 else None)
        result, job = open_first_finding(page, proxy + prefix, token, "lung1", tmp_path)
        assert result["findings"][0]["slice"] in lesion_slices("lung1")
        page.goto(proxy + prefix)  # no trailing slash: the page's <base> keeps its URLs under the prefix
        page.wait_for_load_state("networkidle")
        page.goto(proxy + prefix + "/docs")
        page.wait_for_selector(".opblock-summary-path[data-path='/v1/studies']")
        servers = page.evaluate("fetch('openapi.json').then(r => r.json()).then(d => d.servers)")
        page.screenshot(path=str(tmp_path / "api_page_prefix.png"))
    assert servers == [{"url": prefix}], "Swagger UI's 'Try it out' calls go through the prefix"
    assert not failed, failed
    outside = [p for p in paths if not (p.startswith(prefix + "/") or p == prefix or p.startswith("data:"))]
    assert not outside, outside
    audit = [json.loads(line) for line in (tmp_path / "data" / "audit.jsonl").read_text().splitlines()]
    assert {"POST", "GET"} <= {a["method"] for a in audit} and all(a["path"].startswith("/v1/") for a in audit)
    assert any(a["path"] == f"/v1/studies/{job}/image" for a in audit), "the API's own paths are recorded"


def test_a_dicom_upload_offers_its_seg_rtstruct_and_sr_for_download(server, tmp_path):
    """The API served a DICOM upload's SEG, RT Structure Set and SR, but the page offered none: a user had to call
    the API by hand with the token. The page's buttons fetch them with the token and save KIND.dcm."""
    import pydicom

    from medanomaly.data.sources import pyradiomics_case
    from medanomaly.io import read
    from medanomaly.io.dicom_writer import write_dicom_series

    base, token, _ = server
    files = write_dicom_series(read(pyradiomics_case("lung1")[0]).with_meta(modality="CT"), tmp_path / "ct")
    ct_series = str(pydicom.dcmread(files[0], stop_before_pixels=True).SeriesInstanceUID)
    with chromium_page(760) as page:
        errors = sign_in(page, base, token)
        page.wait_for_selector("#model option", state="attached")
        page.set_input_files("#files", [str(f) for f in files])
        upload_and_open(page)
        page.wait_for_selector("button[data-dicom='seg']", state="visible")
        kinds = page.eval_on_selector_all("button[data-dicom]", "bs => bs.map(b => b.dataset.dicom)")
        saved = {}
        for kind in ("seg", "rtstruct", "sr"):
            with page.expect_download() as download:
                page.click(f"button[data-dicom='{kind}']")
            saved[kind] = tmp_path / download.value.suggested_filename
            download.value.save_as(saved[kind])
        page.screenshot(path=str(tmp_path / "dicom_links.png"))
    assert not errors, errors
    assert kinds == ["seg", "rtstruct", "sr"] and {p.name for p in saved.values()} == {"seg.dcm", "rtstruct.dcm", "sr.dcm"}
    seg, rtstruct, sr = (pydicom.dcmread(saved[k]) for k in ("seg", "rtstruct", "sr"))
    assert (seg.Modality, rtstruct.Modality, sr.Modality) == ("SEG", "RTSTRUCT", "SR")
    assert seg.ReferencedSeriesSequence[0].SeriesInstanceUID == ct_series, "the SEG references the uploaded series"


def test_a_fusion_model_takes_one_file_field_per_modality_from_the_page(tmp_path):
    """The page had one file field, so a fusion model could not be given its modalities from it. Choosing a fusion
    model shows one field per modality (the model's names); the result shows the call and the missing one's flag."""
    from tests.integration.conftest import train_tiny_fusion
    from tests.integration.test_service_fusion import slice_nifti

    run = train_tiny_fusion(tmp_path)
    t1 = slice_nifti(tmp_path, "T1")
    with serving(tmp_path, run) as (base, token), chromium_page(700) as page:
        errors = sign_in(page, base, token)
        page.wait_for_selector("input[data-modality='PD']", state="attached")
        shown = page.eval_on_selector_all("input[data-modality]", "es => es.map(e => e.dataset.modality)")
        assert shown == ["T1", "PD"] and page.is_hidden("#files"), shown
        page.set_input_files("input[data-modality='T1']", str(t1))  # PD left empty: missing
        upload_and_open(page)
        page.wait_for_selector("#classification b", state="visible")
        decision, flags = page.inner_text("#classification"), page.inner_text("#flags")
        page.wait_for_selector("body[data-ready='1']", state="attached", timeout=PAGE_MS)
        canvas = page.locator("#gl").screenshot()
        windows_hidden = page.is_hidden("#windows")
        page.screenshot(path=str(tmp_path / "fusion.png"))
    assert not errors, errors
    assert decision.startswith("decision ") and "normal" in decision and "missing_modality:PD" in flags, (decision, flags)
    # the first modality sent (T1, a 2D slice) is shown in its own grey range, with no HU window presets
    assert windows_hidden and grey_levels(canvas) > 50, grey_levels(canvas)


def test_a_fusion_call_shows_each_modality_sent_at_the_same_place(tmp_path):
    """The viewer showed the first modality only. A study sent T1 and PD offers both: choosing PD draws the PD slice
    (another picture, the cursor where it was)."""
    from tests.integration.conftest import train_tiny_fusion
    from tests.integration.test_service_fusion import slice_nifti

    run = train_tiny_fusion(tmp_path)
    with serving(tmp_path, run) as (base, token), chromium_page(700) as page:
        errors = sign_in(page, base, token)
        page.wait_for_selector("input[data-modality='PD']", state="attached")
        for name in ("T1", "PD"):
            page.set_input_files(f"input[data-modality='{name}']", str(slice_nifti(tmp_path, name)))
        upload_and_open(page)
        page.wait_for_selector("body[data-ready='1']", state="attached", timeout=PAGE_MS)
        offered = page.eval_on_selector_all("#modality option", "es => es.map(e => e.textContent)")
        picker_shown, slice_before = page.is_visible("#modality-pick"), page.inner_text("#slice-info")
        t1_canvas = page.locator("#gl").screenshot()
        page.select_option("#modality", label="PD")
        page.wait_for_selector("#slice-info[data-modality='1']", state="attached", timeout=PAGE_MS)
        page.wait_for_selector("body[data-ready='1']", state="attached", timeout=PAGE_MS)
        pd_canvas, slice_after = page.locator("#gl").screenshot(), page.inner_text("#slice-info")
        page.screenshot(path=str(tmp_path / "fusion_pd.png"))
    assert not errors, errors
    assert offered == ["T1", "PD"] and picker_shown and slice_after == slice_before, (offered, slice_before, slice_after)
    diff = np.abs(_grey(t1_canvas) - _grey(pd_canvas))
    assert grey_levels(pd_canvas) > 50 and (diff > 40).mean() > 0.05, (grey_levels(pd_canvas), (diff > 40).mean())


def test_a_fusion_upload_of_two_grids_is_resampled_or_registered_as_chosen(tmp_path):
    """A T1 and a PD DICOM series of one session on two grids failed ("grids differ") from the page, which could not
    ask for them on one grid: "resample" sends resample_to_first and the job is done. A PD of another visit (another
    frame of reference, the anatomy moved) fails resampled and is done registered (register_to_first)."""
    from medanomaly.io import read
    from medanomaly.io.dicom_writer import write_dicom_series
    from medanomaly.types import Volume
    from tests.integration.conftest import train_tiny_fusion
    from tests.integration.test_service_fusion import slice_nifti

    run = train_tiny_fusion(tmp_path)
    frame = {"modality": "MR", "frame_of_reference_uid": "1.2.826.0.1.3680043.8.498.79"}
    t1 = np.asarray(read(slice_nifti(tmp_path, "T1")).array)
    pd = np.asarray(read(slice_nifti(tmp_path, "PD")).array)[:, 10:-10, 10:-10]
    (t1_file,) = write_dicom_series(Volume(t1, meta=frame), tmp_path / "t1")
    (pd_file,) = write_dicom_series(Volume(pd, origin=(10.5, 10.5, 0.0), meta=frame), tmp_path / "pd")
    visit = {"modality": "MR", "frame_of_reference_uid": "1.2.826.0.1.3680043.8.498.80"}
    moved = np.pad(pd, ((0, 0), (6, 0), (6, 0)), constant_values=float(pd.min()))[:, :-6, :-6]
    (visit_file,) = write_dicom_series(Volume(moved, origin=(10.0, 10.0, 0.0), meta=visit), tmp_path / "visit")
    statuses = []
    with serving(tmp_path, run) as (base, token), chromium_page(700) as page:
        errors = sign_in(page, base, token)
        page.wait_for_selector("input[data-modality='PD']", state="attached")
        for pd_upload, align in ((pd_file, ""), (pd_file, "resample_to_first"), (visit_file, "resample_to_first"),
                                 (visit_file, "register_to_first")):  # fmt: skip
            page.set_input_files("input[data-modality='T1']", str(t1_file))
            page.set_input_files("input[data-modality='PD']", str(pd_upload))
            page.select_option("#align", align)
            before = page.eval_on_selector("#upload-status", "e => e.dataset.job || ''")
            page.click("#upload button")
            page.wait_for_function(f"() => (document.querySelector('#upload-status').dataset.job || '') !== '{before}'")
            job = page.eval_on_selector("#upload-status", "e => e.dataset.job")
            page.wait_for_selector(f"tr[data-id='{job}'][data-status='done'], tr[data-id='{job}'][data-status='failed']",
                                   state="attached", timeout=PAGE_MS)  # fmt: skip
            statuses.append(page.eval_on_selector(f"tr[data-id='{job}']", "e => e.dataset.status"))
        page.click(f"tr[data-id='{job}'] a")  # the registered call: its Spatial Registration is offered
        page.wait_for_selector("button[data-dicom='reg']", state="visible")
        with page.expect_download() as download:
            page.click("button[data-dicom='reg']")
        reg = tmp_path / download.value.suggested_filename
        download.value.save_as(reg)
    assert not errors, errors
    assert statuses == ["failed", "done", "failed", "done"], statuses
    import pydicom

    assert reg.name == "reg.dcm" and pydicom.dcmread(reg).Modality == "REG"


def _grey(png: bytes) -> np.ndarray:
    from io import BytesIO

    from PIL import Image

    return np.asarray(Image.open(BytesIO(png)).convert("L"), np.float32)


def grey_levels(png: bytes) -> int:
    """Distinct grey levels in a screenshot (a blank canvas has 1; one flat window has 2 or 3)."""
    from io import BytesIO

    from PIL import Image

    return len(np.unique(np.asarray(Image.open(BytesIO(png)).convert("L"))))


def warm_pixels(png: bytes) -> int:
    """Pixels of NiiVue's warm colormap (red to yellow, little blue) in a screenshot: a map drawn over a grey image."""
    from io import BytesIO

    from PIL import Image

    rgb = np.asarray(Image.open(BytesIO(png)).convert("RGB")).astype(int)
    return int(((rgb[..., 0] > 150) & (rgb[..., 0] - rgb[..., 2] > 80)).sum())


def test_an_anomaly_map_is_drawn_over_the_image_and_follows_the_checkbox(tmp_path, tiny_anomaly_run):
    """The service wrote every anomaly map (the model's explanation) as the study's heatmap, but the page never drew
    it: the checkbox was relabelled "heatmap" and toggled nothing. brain1 (a real tumour), a tiny normative model
    trained on the normal brains: the map's upper half is drawn in warm colours, and hidden with the checkbox."""
    from medanomaly.data.sources import pyradiomics_case
    from medanomaly.io import read, write

    run = tiny_anomaly_run(tmp_path, "normative")
    brain = write(read(pyradiomics_case("brain1")[0]), tmp_path / "brain.nii.gz")
    with serving(tmp_path, run) as (base, token), chromium_page(700) as page:
        errors = sign_in(page, base, token)
        page.wait_for_selector("#model option", state="attached")
        page.set_input_files("#files", str(brain))
        upload_and_open(page)
        page.wait_for_selector("body[data-ready='1']", state="attached", timeout=PAGE_MS)
        page.click("[data-view='axial']")
        shown = page.locator("#gl").screenshot()
        label = page.inner_text("#mask-kind")
        page.screenshot(path=str(tmp_path / "anomaly_map.png"))
        page.uncheck("#show-mask")
        hidden = page.locator("#gl").screenshot()
    assert not errors, errors
    assert label.startswith("anomaly map"), label
    assert warm_pixels(shown) > 500 and warm_pixels(hidden) < warm_pixels(shown) / 20, (warm_pixels(shown),
                                                                                         warm_pixels(hidden))
