import numpy as np
import pytest
import soundfile
from PIL import Image
from test_inference import speech_like

from spectro import Predictor, listen
from spectro.cli import main
from spectro.errors import DataError


class FakeMicrophone:
    """Stands in for a sound card: blocks of a known recording at 8 kHz, then the end of the stream."""

    samples = np.zeros(0, np.float32)

    def __init__(self, device=None, *, block_seconds: float = 0.1):
        self.device, self.sample_rate = device, 8000
        self.blocks = [self.samples[i:i + 800] for i in range(0, self.samples.size, 800)]

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return None

    def read(self):
        return self.blocks.pop(0) if self.blocks else None


@pytest.fixture
def microphone(monkeypatch):
    heard = speech_like(6.0, sr=8000)
    heard[8000:36000] = 0  # 3.5 s of silence between 1 s and 1.5 s of speech
    monkeypatch.setattr(FakeMicrophone, "samples", heard)
    monkeypatch.setattr(listen, "Microphone", FakeMicrophone)
    return heard


def test_listen_prints_a_reading_every_hop_and_keeps_audio_and_chart(trained, microphone, tmp_path, capsys):
    _, checkpoint = trained
    args = ["listen", str(checkpoint), "--hop", "0.5", "--save", str(tmp_path / "heard.wav"),
            "--plot", str(tmp_path / "chart.png")]
    assert main(args) == 0
    lines = capsys.readouterr().out.splitlines()
    readings = [line for line in lines if " s  " in line]
    assert len(readings) == 12  # 6 s heard, one reading every 0.5 s
    classes = ("neutral", "happy", "sad", "angry")
    first = readings[0].split()
    assert first[:2] == ["0.5", "s"] and first[2] in classes and 0 < float(first[3]) <= 1
    # the 3 s windows read at 4 and 4.5 s hold only silence: reported as quiet, not scored
    predictor = Predictor.load(checkpoint)
    assert ["quiet" in r for r in readings] == [False] * 7 + [True] * 2 + [False] * 3
    expected = predictor.predict(microphone[:int(2.5 * 8000)][-int(3 * 8000):], 8000)
    assert readings[4].split()[2:] == [expected.label, f"{expected.probabilities[expected.label]:.2f}"]
    saved, rate = soundfile.read(tmp_path / "heard.wav", dtype="float32")
    assert rate == 8000 and np.allclose(saved, microphone, atol=1 / 2 ** 15)
    with Image.open(tmp_path / "chart.png") as chart:
        assert chart.size[0] > 400


def test_listen_for_n_seconds_scores_the_recording_like_predict(trained, microphone, capsys):
    _, checkpoint = trained
    assert main(["listen", str(checkpoint), "--seconds", "2.5"]) == 0
    printed = capsys.readouterr().out.splitlines()
    expected = Predictor.load(checkpoint).predict(microphone[:20000], 8000)
    assert printed[0].startswith(f"recording: {expected.label}  ")
    assert len(printed) == 1 + len(expected.windows)


def test_no_input_device_is_a_clear_error(trained, monkeypatch, capsys):
    class NoDevices:
        class PortAudioError(Exception):
            pass

        @staticmethod
        def query_devices(device=None, kind=None):
            if kind is None:
                return []
            raise NoDevices.PortAudioError("Error querying device -1")

    monkeypatch.setattr(listen, "_sounddevice", lambda: NoDevices)
    with pytest.raises(DataError, match="no audio input device"):
        listen.Microphone()
    _, checkpoint = trained
    assert main(["listen", str(checkpoint)]) == 2
    assert "no audio input device" in capsys.readouterr().err
    assert main(["listen", "--list-inputs"]) == 0
    assert "no audio input devices" in capsys.readouterr().out


def test_listen_help_shows_its_options(capsys):
    with pytest.raises(SystemExit):
        main(["listen", "--help"])
    shown = capsys.readouterr().out
    for option in ("--hop", "--seconds", "--plot", "--save", "--input", "--list-inputs", "--gate-db"):
        assert option in shown
