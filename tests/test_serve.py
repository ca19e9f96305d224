"""`spectro serve` through FastAPI's TestClient: every endpoint, every bad input, limits, security, batching.

The model is `sharp` (conftest): the tiny trained checkpoint with its classifier's weights scaled up, so that
its probabilities move with the audio (the trained one's are nearly uniform): an answer that is not the
file's own, or a constant one, cannot match `Predictor` to 1e-5.
"""

from __future__ import annotations

import base64
import contextlib
import io
import json
import threading
import time

import numpy as np
import pytest
import soundfile
from conftest import tone, write_audio
from fastapi.testclient import TestClient

from spectro import Predictor
from spectro.inference import load_predictor
from spectro.serve.app import ServeSettings, create_app

SR = 16000


def speech_like(seconds: float, *, seed: int = 0, sr: int = SR) -> np.ndarray:
    """A voiced sound whose pitch, loudness and noise follow the seed, so each seed scores differently."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * sr)) / sr
    f0 = rng.uniform(110, 260) * (1 + 0.1 * np.sin(2 * np.pi * rng.uniform(0.5, 3) * t))
    phase = 2 * np.pi * np.cumsum(f0) / sr
    voiced = sum(np.sin(k * phase) / k for k in range(1, 6))
    envelope = 0.3 + 0.2 * np.sin(2 * np.pi * rng.uniform(1, 5) * t)
    return (0.3 * envelope * voiced + rng.uniform(0.005, 0.1) * rng.normal(size=t.size)).astype(np.float32)


@pytest.fixture(scope="module")
def predictor(sharp):
    return Predictor.load(sharp)


@contextlib.contextmanager
def serving(model, **settings):
    """A TestClient of the app for `model` (running its lifespan), once /readyz says the model is warm."""
    app = create_app(model, ServeSettings(**settings))
    with TestClient(app) as client:
        headers = {"Authorization": f"Bearer {settings['token']}"} if settings.get("token") else {}
        for _ in range(200):
            if client.get("/readyz", headers=headers).status_code == 200:
                break
            time.sleep(0.02)
        else:
            raise AssertionError("the server never became ready")
        yield client


@pytest.fixture(scope="module")
def client(predictor):
    with serving(predictor, max_bytes=2 * 2**20) as client:
        yield client


def assert_same(answer: dict, expected, *, windows: bool = True) -> None:
    """The served answer is `Predictor`'s prediction to 1e-5: label, probabilities, and each window."""
    assert answer["label"] == expected.label
    assert answer["probabilities"] == pytest.approx(expected.probabilities, abs=1e-5)
    ranked = sorted(expected.probabilities, key=lambda c: -expected.probabilities[c])
    assert [s["label"] for s in answer["top_k"]] == ranked
    assert [s["score"] for s in answer["top_k"]] == sorted(answer["probabilities"].values(), reverse=True)
    if windows:
        assert len(answer["windows"]) == len(expected.windows)
        for served, window in zip(answer["windows"], expected.windows):
            assert (served["start"], served["end"], served["label"]) == (round(window.start, 3), round(window.end, 3),
                                                                         window.label)
            assert served["probabilities"] == pytest.approx(window.probabilities, abs=1e-5)


FORMATS = [("wav", "WAV", "PCM_16", "audio/wav"), ("flac", "FLAC", "PCM_24", "audio/flac"),
           ("ogg", "OGG", "VORBIS", "audio/ogg"), ("opus", "OGG", "OPUS", "audio/ogg"),
           ("mp3", "MP3", "MPEG_LAYER_III", "audio/mpeg"), ("aiff", "AIFF", "PCM_16", "application/octet-stream"),
           ("au", "AU", "PCM_16", "application/octet-stream")]


def test_every_format_as_raw_body_or_multipart_answers_what_predictor_and_spectro_predict_give(
        client, predictor, sharp, tmp_path, capsys):
    from spectro.cli import main

    y = speech_like(4.2, seed=1, sr=22050)
    answers = {}
    for i, (suffix, container, subtype, content_type) in enumerate(FORMATS):
        path = tmp_path / f"clip{i}.{suffix}"
        stereo = np.stack([y, 0.5 * y], axis=1) if i % 2 else y  # any channel count, any rate
        soundfile.write(path, stereo, 48000 if suffix == "opus" else 22050, format=container, subtype=subtype)
        expected = predictor.predict(str(path))
        raw = client.post("/v1/predict", content=path.read_bytes(), headers={"Content-Type": content_type})
        form = client.post("/v1/predict", files={"file": (path.name, path.read_bytes(), content_type)})
        assert raw.status_code == form.status_code == 200, (suffix, raw.text)
        assert_same(raw.json(), expected)
        assert_same(form.json(), expected)
        assert form.json()["filename"] == path.name and "filename" not in raw.json() and "path" not in raw.json()
        answers[path] = raw.json()
    first = next(iter(answers))
    assert main(["predict", str(sharp), str(first), "--json", "--segments"]) == 0
    printed = json.loads(capsys.readouterr().out)
    served = {k: v for k, v in answers[first].items() if k != "top_k"}
    assert served == {k: v for k, v in printed.items() if k != "path"}  # what spectro predict printed, to the digit
    assert len({json.dumps(a["probabilities"]) for a in answers.values()}) > 1  # lossy codecs differ: not a constant


def test_concurrent_requests_share_one_forward_pass_and_each_gets_its_own_answer(predictor, tmp_path):
    paths = [write_audio(tmp_path / f"{i}.wav", speech_like(s, seed=10 + i)) for i, s in enumerate([1.0, 3.5, 2.0, 6.0,
                                                                                                     1.5, 2.5])]
    expected = [predictor.predict(p) for p in paths]
    assert len({round(e.probabilities[e.label], 5) for e in expected}) == len(paths)  # six different answers
    with serving(predictor, max_wait=1.0) as client:
        batcher = client.app.state.served.batcher
        batcher.batches.clear()
        batcher.passes.clear()
        files = [("file", (f"{i}.wav", open(p, "rb").read(), "audio/wav")) for i, p in enumerate(paths)]
        batch = client.post("/v1/predict/batch", files=files)
        assert batch.status_code == 200
        windows = sum(len(e.windows) for e in expected)
        assert batcher.batches == {windows: 1}  # every window of the six files in one micro-batch,
        assert windows == 9 and batcher.passes == {8: 1, 1: 1}  # scored in passes of power-of-two sizes
        for answer, e in zip(batch.json()["results"], expected):
            assert_same(answer, e)

        barrier, answers = threading.Barrier(len(paths)), {}

        def post(i: int) -> None:
            barrier.wait()
            answers[i] = client.post("/v1/predict", content=open(paths[i], "rb").read(),
                                     headers={"Content-Type": "audio/wav"}).json()

        threads = [threading.Thread(target=post, args=(i,)) for i in range(len(paths))]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        for i, e in enumerate(expected):
            assert_same(answers[i], e)
        assert (batcher.admitted, batcher._submitted, batcher._jobs.qsize()) == (0, 0, 0)  # nothing held afterwards


def test_the_picture_is_what_the_model_saw(client, predictor, tmp_path):
    from PIL import Image

    from spectro.audio import prepare_windows
    from spectro.features import feature_array

    path = write_audio(tmp_path / "long.wav", speech_like(20.0, seed=3))
    answer = client.post("/v1/predict?picture=1", files={"file": ("long.wav", open(path, "rb").read())}).json()
    assert "picture" not in client.post("/v1/predict", files={"file": ("long.wav", open(path, "rb").read())}).json()
    prefix = "data:image/png;base64,"
    assert answer["picture"].startswith(prefix)
    strip = np.asarray(Image.open(io.BytesIO(base64.b64decode(answer["picture"][len(prefix):]))))
    features = predictor.inputs["image"]
    windows = prepare_windows(path, features.audio)
    size = features.image.size
    assert len(windows) > 8 and strip.shape == (size, 8 * size + 7 * 2, 3)  # the first 8 windows, 2 px apart
    second = feature_array(windows[1].samples, features).transpose(1, 2, 0)
    assert np.array_equal(strip[:, size + 2:2 * size + 2], second)


def test_model_card_names_classes_features_corpora_metrics_and_transductive_steps(client, trained, sharp, tmp_path):
    from spectro.checkpoint_file import load_checkpoint, save_checkpoint
    from spectro.ensemble_file import Member, write_ensemble
    from spectro.serve.describe import describe_model

    card = client.get("/v1/model").json()
    assert card["classes"] == ["neutral", "happy", "sad", "angry"] and card["ensemble"] is False
    assert card["model"] == "tiny_efficientnet" and card["train_corpora"] == ["synth"]
    assert card["inputs"]["image"]["image"]["size"] == 32 and card["windows"]["duration"] == 3.0
    assert set(card["validation"]) >= {"accuracy", "uar", "macro_f1", "n"}
    assert card["normalisation"] == {"image": {"mode": "none", "statistics": None}} and card["transductive"] == []

    state = load_checkpoint(sharp)
    state["inputs"]["image"]["normalise"]["mode"] = "speaker"
    state["transductive"] = ["domain-adversarial training with the unlabelled audio of emodb"]
    save_checkpoint(state, tmp_path / "speaker.pt")
    speaker = describe_model(Predictor.load(tmp_path / "speaker.pt"))
    assert speaker["normalisation"]["image"] == {"mode": "speaker", "statistics": "each recording's own"}
    assert speaker["transductive"] == ["domain-adversarial training with the unlabelled audio of emodb",
                                       "speaker normalisation of input 'image' with each recording's own unlabelled "
                                       "statistics"]
    ensemble = write_ensemble(tmp_path / "e.json", [Member(str(sharp), 0.25), Member(str(tmp_path / "speaker.pt"),
                                                                                      0.75)],
                              classes=card["classes"], chosen_by={})
    both = describe_model(load_predictor([ensemble]))
    assert both["ensemble"] and [m["weight"] for m in both["members"]] == [0.25, 0.75]
    assert both["transductive"] == speaker["transductive"]
    assert str(tmp_path) not in json.dumps(both) and str(sharp.parent) not in json.dumps(card)  # no server paths


def test_speaker_normalised_models_and_ensembles_are_served_as_predictor_scores_them(sharp, tmp_path):
    from spectro.checkpoint_file import load_checkpoint, save_checkpoint
    from spectro.ensemble_file import Member, write_ensemble

    state = load_checkpoint(sharp)
    state["inputs"]["image"]["normalise"]["mode"] = "speaker"
    save_checkpoint(state, tmp_path / "speaker.pt")
    ensemble = write_ensemble(tmp_path / "e.json", [Member(str(sharp), 0.4), Member(str(tmp_path / "speaker.pt"), 0.6)],
                              classes=state["classes"], chosen_by={})
    path = write_audio(tmp_path / "clip.wav", speech_like(5.0, seed=4))
    for model, windows in ((Predictor.load(tmp_path / "speaker.pt"), True), (load_predictor([ensemble]), False)):
        with serving(model) as client:
            answer = client.post("/v1/predict", files={"file": ("clip.wav", open(path, "rb").read())}).json()
        assert_same(answer, model.predict(path), windows=windows)
        assert ("windows" in answer) == windows


def wav_bytes(y: np.ndarray, sr: int = SR, subtype: str = "PCM_16") -> bytes:
    buffer = io.BytesIO()
    soundfile.write(buffer, y, sr, format="WAV", subtype=subtype)
    return buffer.getvalue()


BAD_BODIES = [  # (what, body, content type, status, words of the reason)
    ("not audio", b"certainly not a recording " * 40, "audio/wav", 415, "Format not recognised"),
    ("a truncated header", wav_bytes(tone())[:30], "application/octet-stream", 415, "cannot decode"),
    ("text", b"hello", "text/plain", 415, "Content-Type 'text/plain'"),
    ("form-urlencoded, as curl --data-binary sends", b"RIFF", "application/x-www-form-urlencoded", 415, "audio/wav"),
    ("nothing", b"", "audio/wav", 422, "empty"),
    ("all zeros", wav_bytes(np.zeros(SR, np.float32)), "audio/wav", 422, "silent"),
    ("0.1 s of sound", wav_bytes(tone(seconds=0.1)), "audio/wav", 422, "only 0.10 s of sound"),
    ("near-silence", wav_bytes(tone(amplitude=1e-5), subtype="FLOAT"), "audio/wav", 422, "near-silent"),
    ("NaN samples", wav_bytes(np.full(SR, np.nan, np.float32), subtype="FLOAT"), "audio/wav", 422, "NaN"),
]


def test_bad_input_gets_its_status_and_reason_and_leaves_no_temporary_file(client, predictor, tmp_path, monkeypatch):
    import tempfile

    scratch = tmp_path / "tmp"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))  # where python-multipart and the fallback decoder write
    for what, body, kind, status, reason in BAD_BODIES:
        responses = [client.post("/v1/predict", content=body, headers={"Content-Type": kind})]
        if kind.startswith(("audio/", "application/octet-stream")):  # the same file as a multipart upload
            responses.append(client.post("/v1/predict", files={"file": ("x.wav", body, kind)}))
        for response in responses:
            assert response.status_code == status and reason in response.json()["error"], (what, response.text)
    good = wav_bytes(speech_like(2.0, seed=5))
    checks = [
        (client.post("/v1/predict", files={"other": ("x.wav", good)}), 422, "no multipart field 'file'"),
        (client.post("/v1/predict", data={"file": "a path/on/the/server.wav"}, files={"x": ("x", b"")}), 422,
         "must hold a file"),
        (client.post("/v1/predict", files=[("file", ("a.wav", good)), ("file", ("b.wav", good))]), 400, "files"),
        (client.post("/v1/predict?picture=maybe", content=good, headers={"Content-Type": "audio/wav"}), 422, "picture"),
        (client.post("/v1/predict/batch", content=good, headers={"Content-Type": "audio/wav"}), 415, "multipart"),
        (client.get("/v1/nothing"), 404, "Not Found"),
        (client.get("/v1/predict"), 405, "Method Not Allowed"),
    ]
    for response, status, reason in checks:
        assert response.status_code == status and reason in response.json()["error"], response.text
    y = speech_like(40.0, seed=6)
    big = wav_bytes(y)  # 1.3 MB: python-multipart spools it to a temporary file
    assert 2**20 < len(big) < 2 * 2**20
    spooled = client.post("/v1/predict", files={"file": ("big.wav", big)})
    assert spooled.status_code == 200
    assert_same(spooled.json(), predictor.predict(soundfile.read(io.BytesIO(big), dtype="float32")[0], SR))
    assert list(scratch.iterdir()) == []
    assert client.post("/v1/predict", content=good, headers={"Content-Type": "audio/wav"}).status_code == 200


def test_bodies_over_the_limit_get_413_by_length_or_while_streaming(client):
    too_big = b"\0" * (2 * 2**20 + 1)
    declared = client.post("/v1/predict", content=too_big, headers={"Content-Type": "audio/wav"})
    streamed = client.post("/v1/predict", content=iter([too_big[:2**20], too_big[2**20:]]),
                           headers={"Content-Type": "audio/wav"})  # chunked: no Content-Length
    multipart = client.post("/v1/predict", files={"file": ("big.wav", too_big)})
    for response in (declared, streamed, multipart):
        assert response.status_code == 413 and "limit of 2 MB (--max-mb)" in response.json()["error"]
    assert "content-length" not in streamed.request.headers
    ok = client.post("/v1/predict", content=wav_bytes(speech_like(1.0)), headers={"Content-Type": "audio/wav"})
    assert ok.status_code == 200


def test_a_batch_gives_each_file_its_own_result_in_order(client, predictor, tmp_path):
    good = [wav_bytes(speech_like(s, seed=20 + i)) for i, s in enumerate([2.0, 4.0])]
    files = [("file", ("one.wav", good[0])), ("file", ("junk.wav", b"junk" * 100)),
             ("file", ("quiet.wav", wav_bytes(np.zeros(SR, np.float32)))), ("files", ("two.wav", good[1]))]
    results = client.post("/v1/predict/batch", files=files).json()["results"]
    assert [r["filename"] for r in results] == ["one.wav", "junk.wav", "quiet.wav", "two.wav"]
    assert [r.get("status") for r in results] == [None, 415, 422, None]
    for result, body in zip((results[0], results[3]), good):
        y, sr = soundfile.read(io.BytesIO(body), dtype="float32")
        assert_same(result, predictor.predict(y, sr))


def test_a_full_queue_gets_503_with_retry_after(predictor):
    with serving(predictor, max_requests=2) as client:
        body = wav_bytes(speech_like(1.0))
        batcher = client.app.state.served.batcher
        with batcher.admit(2):
            busy = client.post("/v1/predict", content=body, headers={"Content-Type": "audio/wav"})
        with batcher.admit(1):
            files = [("file", (f"{i}.wav", body)) for i in range(2)]
            overfull = client.post("/v1/predict/batch", files=files)
        for response in (busy, overfull):
            assert response.status_code == 503 and response.headers["Retry-After"] == "1"
            assert "busy" in response.json()["error"]
        assert client.post("/v1/predict/batch", files=files).status_code == 200


def test_the_token_guards_every_endpoint_but_healthz_and_cors_is_off_unless_asked(predictor):
    body = wav_bytes(speech_like(1.0))
    with serving(predictor, token="s3cret-token") as client:
        assert client.get("/healthz").json() == {"status": "alive"}
        right, wrong = {"Authorization": "Bearer s3cret-token"}, {"Authorization": "Bearer s3cret-tokem"}
        for method, path in (("GET", "/readyz"), ("GET", "/v1/model"), ("POST", "/v1/predict"),
                             ("POST", "/v1/predict/batch")):
            for headers in ({}, wrong, {"Authorization": "s3cret-token"}, {"Authorization": "Basic s3cret-token"}):
                refused = client.request(method, path, headers={**headers, "Content-Type": "audio/wav"}, content=body)
                assert refused.status_code == 401 and refused.headers["WWW-Authenticate"] == "Bearer", (path, headers)
        assert client.get("/v1/model", headers=right).status_code == 200
        answer = client.post("/v1/predict", content=body, headers={**right, "Content-Type": "audio/wav"})
        assert answer.status_code == 200 and answer.json()["label"] in predictor.classes
        assert client.get("/", headers={"Origin": "https://elsewhere.example"}).status_code == 200  # the page itself
        assert "access-control-allow-origin" not in client.get("/healthz", headers={"Origin": "https://a.example"}).headers
    with serving(predictor, cors=("https://app.example",)) as client:
        asked = {"Origin": "https://app.example", "Access-Control-Request-Method": "POST",
                 "Access-Control-Request-Headers": "authorization,content-type"}
        preflight = client.options("/v1/predict", headers=asked)
        assert preflight.status_code == 200 and preflight.headers["access-control-allow-origin"] == "https://app.example"
        other = client.options("/v1/predict", headers={**asked, "Origin": "https://other.example"})
        assert "access-control-allow-origin" not in other.headers


def test_an_unexpected_failure_is_a_500_and_the_server_goes_on(predictor, monkeypatch):
    body = wav_bytes(speech_like(1.0))
    with serving(predictor) as client:
        served = client.app.state.served
        monkeypatch.setattr(served.members[0], "score_inputs", lambda inputs: 1 / 0)
        failed = client.post("/v1/predict", content=body, headers={"Content-Type": "audio/wav"})
        assert failed.status_code == 500 and "internal error" in failed.json()["error"]
        monkeypatch.undo()
        assert client.post("/v1/predict", content=body, headers={"Content-Type": "audio/wav"}).status_code == 200
        assert served.batcher.admitted == 0


def test_page_and_docs_ship_in_the_package_and_fetch_nothing_from_elsewhere(client):
    import re

    page = client.get("/")
    assert page.status_code == 200 and 'id="file"' in page.text and 'id="record"' in page.text
    for asset in ("/static/app.js", "/static/style.css"):
        text = client.get(asset).text
        assert client.get(asset).status_code == 200 and len(text) > 500
        assert not re.search(r"https?://|//cdn|@import", text), asset  # relative URLs only: works behind a proxy
    assert not re.search(r"https?://", page.text)
    assert client.get("/docs").status_code == 200
    paths = client.get("/openapi.json").json()["paths"]
    assert {"/v1/predict", "/v1/predict/batch", "/v1/model", "/healthz", "/readyz"} <= set(paths)
    assert "multipart/form-data" in paths["/v1/predict"]["post"]["requestBody"]["content"]


def test_spectro_serve_binds_loopback_by_default_and_warns_on_an_open_host_without_token(sharp, monkeypatch, capsys):
    import uvicorn

    from spectro.cli import main

    runs = []
    monkeypatch.setattr(uvicorn, "run", lambda app, **options: runs.append((app, options)))
    monkeypatch.delenv("SPECTRO_TOKEN", raising=False)
    assert main(["serve", str(sharp), "--quiet"]) == 0
    assert runs[-1][1]["host"] == "127.0.0.1" and runs[-1][1]["port"] == 8000
    assert "warning" not in capsys.readouterr().err
    assert main(["serve", str(sharp), "--host", "0.0.0.0", "--port", "8123", "--root-path", "/emotion", "--quiet"]) == 0
    assert "without --token" in capsys.readouterr().err
    assert (runs[-1][1]["host"], runs[-1][1]["port"], runs[-1][1]["root_path"]) == ("0.0.0.0", 8123, "/emotion")
    monkeypatch.setenv("SPECTRO_TOKEN", "from-the-environment")
    assert main(["serve", str(sharp), "--host", "0.0.0.0", "--max-mb", "1", "--quiet"]) == 0
    assert "warning" not in capsys.readouterr().err
    with TestClient(runs[-1][0]) as client:
        assert client.get("/v1/model").status_code == 401
        assert client.get("/v1/model", headers={"Authorization": "Bearer from-the-environment"}).status_code == 200
        big = client.post("/v1/predict", content=b"\0" * (2**20 + 1), headers={"Authorization": "Bearer "
                                                                                "from-the-environment"})
        assert big.status_code == 413
    assert main(["serve", str(sharp), "--max-mb", "0", "--quiet"]) == 2


def test_a_micro_batch_is_scored_in_passes_of_power_of_two_sizes():
    from spectro.serve.batcher import pass_sizes

    for windows in range(1, 65):
        passes = pass_sizes(windows)
        sizes = [size for _, size in passes]
        assert sum(sizes) == windows and sizes == sorted(set(sizes), reverse=True)
        assert all(size & (size - 1) == 0 for size in sizes)  # powers of two: six shapes up to 32 windows
        assert [start for start, _ in passes] == [sum(sizes[:i]) for i in range(len(sizes))]
    assert pass_sizes(13) == [(0, 8), (8, 4), (12, 1)]
