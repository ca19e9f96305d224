"""A built-in synthetic emotional-speech corpus, so the demo and the tests need no downloads.

A source-filter synthesiser: a Rosenberg glottal pulse train with jitter, shimmer, creak and
aspiration noise follows a sentence f0 contour (declination plus syllable accents); a cascade of
second-order formant resonators per vowel shapes it; consonants are noise bursts or nasal
murmurs. Each emotion sets pitch level and range, tempo, level, voice quality and spectral tilt
after the acoustic correlates in Banse & Scherer (1996) and Scherer (2003); every utterance varies
them at random so classes overlap. Speakers differ in pitch, vocal-tract length and habits; the
two languages differ in vowel inventory, consonants and rhythm (syllable-timed "synth-a",
stress-timed "synth-b").
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
from scipy.signal import lfilter, sosfilt

from .corpora.labels import CLASS_SETUPS, EMOTIONS
from .errors import ConfigError
from .fileio import atomic_open

LANGUAGES = ("synth-a", "synth-b")


@dataclasses.dataclass(frozen=True)
class _Voice:
    f0: float  # f0 ratio to the speaker's base
    range: float  # accent height, semitones
    rate: float  # syllables per second
    level: float  # peak level, dBFS
    jitter: float  # relative period-length perturbation
    shimmer: float  # relative period-amplitude perturbation
    breath: float  # aspiration-to-voicing ratio
    oq: float  # glottal open quotient: low is pressed (flat spectrum), high is lax
    tilt: float  # extra one-pole low-pass coefficient: high is a steeper spectral tilt
    creak: float  # share of creaky (long, weak) glottal periods
    effort: float  # consonant articulation gain
    formant: float  # formant scale (smiling, wide jaw > 1)
    decl: float  # f0 fall over the utterance, semitones (negative rises)


# fmt: off
_VOICES = {
    "neutral":  _Voice(1.00, 2.0, 4.5, -8.0, 0.006, 0.04, 0.06, 0.60, 0.45, 0.00, 1.00, 1.00, 3.0),
    "calm":     _Voice(0.95, 1.5, 3.9, -11.0, 0.005, 0.03, 0.12, 0.65, 0.55, 0.00, 0.85, 0.99, 3.0),
    "happy":    _Voice(1.30, 5.0, 5.0, -4.0, 0.008, 0.05, 0.05, 0.50, 0.25, 0.00, 1.10, 1.04, 2.0),
    "sad":      _Voice(0.88, 1.0, 3.4, -14.0, 0.012, 0.06, 0.40, 0.80, 0.75, 0.05, 0.70, 0.97, 2.0),
    "angry":    _Voice(1.25, 3.5, 5.2, -2.0, 0.010, 0.06, 0.02, 0.35, 0.00, 0.00, 1.50, 1.06, 4.0),
    "fear":     _Voice(1.45, 3.0, 5.6, -8.0, 0.030, 0.08, 0.25, 0.65, 0.40, 0.00, 1.00, 1.02, 1.0),
    "disgust":  _Voice(0.85, 3.0, 3.6, -9.0, 0.020, 0.08, 0.08, 0.50, 0.50, 0.30, 1.10, 0.98, 5.0),
    "surprise": _Voice(1.50, 6.0, 4.8, -5.0, 0.008, 0.05, 0.08, 0.55, 0.30, 0.00, 1.10, 1.04, -4.0),
    "boredom":  _Voice(0.90, 0.8, 3.6, -12.0, 0.008, 0.04, 0.12, 0.68, 0.60, 0.15, 0.75, 0.98, 1.5),
}

# Male-reference F1-F3 (Hz) per vowel, after Peterson & Barney (1952) and Hillenbrand et al. (1995).
_VOWELS = {
    "synth-a": [(280, 2250, 2900), (450, 1950, 2600), (750, 1300, 2500), (480, 900, 2500), (320, 800, 2400)],
    "synth-b": [(280, 2250, 2900), (400, 1950, 2550), (580, 1800, 2500), (750, 1300, 2500),
                (570, 840, 2410), (450, 1030, 2380), (320, 800, 2400)],
}
_SCHWA = np.array([500.0, 1450.0, 2450.0])
_BANDWIDTHS = np.array([80.0, 100.0, 150.0, 250.0, 300.0])

# Consonants as (kind, centre Hz, bandwidth Hz); a nasal's centre is its second resonance.
_CONSONANTS = {
    "synth-a": [("stop", 1000, 1500), ("stop", 4000, 2500), ("stop", 2000, 1500), ("fricative", 6000, 2000),
                ("fricative", 3000, 1200), ("nasal", 1100, 0), ("nasal", 1500, 0)],
    "synth-b": [("stop", 4000, 2500), ("stop", 2000, 1500), ("fricative", 5000, 4000), ("fricative", 1500, 800),
                ("fricative", 6000, 2000), ("nasal", 1500, 0), ("nasal", 2000, 0)],
}
# fmt: on


@dataclasses.dataclass(frozen=True)
class SyntheticSpeaker:
    """A synthetic talker: pitch, vocal-tract length and habits shared by all its utterances.

    Attributes
    ----------
    name : str
        File-name-safe id: language letter, two-digit index, gender letter (``"a01f"``).
    gender : {"female", "male"}
    f0 : float
        Base fundamental frequency in Hz.
    formant_scale : float
        Formant multiplier; shorter vocal tracts (female voices) have higher formants.
    tempo : float
        Speaking-rate multiplier.
    pitch_range : float
        Accent-height multiplier.
    breathiness : float
        Aspiration added to every emotion's.
    open_quotient : float
        Shift of the glottal open quotient (positive is laxer).
    """

    name: str
    gender: str
    f0: float
    formant_scale: float
    tempo: float
    pitch_range: float
    breathiness: float
    open_quotient: float


def make_speaker(*, language: str, index: int, seed: int = 0) -> SyntheticSpeaker:
    """The `index`-th speaker of `language`: odd indices are female, even ones male.

    Parameters
    ----------
    language : {"synth-a", "synth-b"}
    index : int in [1, 99]
    seed : int >= 0
        The speaker's quirks are drawn from (seed, language, index).

    Returns
    -------
    SyntheticSpeaker
    """
    _check_choice("language", language, LANGUAGES)
    _check_int("index", index, 1, 99)
    _check_int("seed", seed, 0, None)
    rng = np.random.default_rng([seed, LANGUAGES.index(language), index])
    female = index % 2 == 1
    return SyntheticSpeaker(
        name=f"{language[-1]}{index:02d}{'f' if female else 'm'}",
        gender="female" if female else "male",
        f0=float(rng.uniform(200, 230) if female else rng.uniform(100, 130)),
        formant_scale=float((1.15 if female else 1.0) * rng.uniform(0.96, 1.04)),
        tempo=float(rng.uniform(0.9, 1.1)),
        pitch_range=float(rng.uniform(0.8, 1.25)),
        breathiness=float(rng.uniform(0.0, 0.08 if female else 0.04)),
        open_quotient=float(rng.uniform(-0.05, 0.05)),
    )


def synthesize_utterance(
    *, emotion: str, speaker: SyntheticSpeaker, language: str, sr: int = 16000, rng: np.random.Generator
) -> np.ndarray:
    """Synthesise one emotional utterance of 1.5-3 s with leading and trailing silence.

    Parameters
    ----------
    emotion : str
        A canonical emotion name (see ``spectro.corpora.EMOTIONS``).
    speaker : SyntheticSpeaker
        Who speaks; see `make_speaker`.
    language : {"synth-a", "synth-b"}
        Sets the vowels, consonants and rhythm.
    sr : int >= 8000
        Sample rate in Hz.
    rng : np.random.Generator
        Source of all randomness; the same generator state gives the same samples.

    Returns
    -------
    y : np.ndarray [shape=(n,), dtype=float32]
        Mono audio peaking at the emotion's level (about -2 dBFS angry to -14 dBFS sad), over
        faint background noise.
    """
    _check_choice("emotion", emotion, EMOTIONS)
    _check_choice("language", language, LANGUAGES)
    _check_int("sr", sr, 8000, None)
    voice = _vary(_VOICES[emotion], speaker, rng)
    speech = _speech(voice, speaker, language, sr, rng)
    speech *= 10 ** (voice.level / 20) / np.abs(speech).max()
    lead, trail = (int(rng.uniform(0.1, 0.3) * sr) for _ in range(2))
    y = np.concatenate([np.zeros(lead), speech, np.zeros(trail)])
    noise = lfilter([1.0], [1.0, -0.7], rng.standard_normal(y.size))
    y += noise * 10 ** (rng.uniform(-62, -50) / 20) / _rms(noise)
    return y.astype(np.float32)


def generate_corpus(
    out_dir,
    *,
    emotions=CLASS_SETUPS[4],
    languages=LANGUAGES,
    speakers_per_language: int = 4,
    utterances_per_emotion: int = 8,
    sr: int = 16000,
    seed: int = 0,
) -> list[Path]:
    """Write the synthetic corpus as 16-bit WAV files, skipping those already there.

    Files go to ``out_dir/<language>/<speaker>/synth_<language>_<speaker>_<emotion>_<NN>.wav``
    with a ``README.txt`` beside the language folders. Every utterance draws from its own
    generator seeded by (seed, language, speaker, emotion, NN), so a file's bytes depend on those and
    `sr` only, not on the other arguments nor on which files existed: an interrupted run can simply
    be repeated.

    Parameters
    ----------
    out_dir : str or path-like
        Corpus root; created when missing.
    emotions : sequence of str
        Canonical emotion names; the default is the 4-class setup.
    languages : sequence of {"synth-a", "synth-b"}
    speakers_per_language : int in [1, 99]
        Speakers alternate female (odd index) and male.
    utterances_per_emotion : int in [1, 99]
        Utterances per speaker and emotion.
    sr : int >= 8000
        Sample rate in Hz.
    seed : int >= 0

    Returns
    -------
    paths : list of Path
        Every file of the corpus, existing or new, in generation order.
    """
    import soundfile

    emotions = _check_names("emotions", emotions, EMOTIONS)
    languages = _check_names("languages", languages, LANGUAGES)
    _check_int("speakers_per_language", speakers_per_language, 1, 99)
    _check_int("utterances_per_emotion", utterances_per_emotion, 1, 99)
    _check_int("sr", sr, 8000, None)
    _check_int("seed", seed, 0, None)
    out_dir = Path(out_dir)
    _claim_settings(out_dir, seed=seed, sr=sr)
    paths, speakers = [], []
    for language in languages:
        for index in range(1, speakers_per_language + 1):
            speaker = make_speaker(language=language, index=index, seed=seed)
            speakers.append((language, speaker))
            for emotion in emotions:
                for number in range(1, utterances_per_emotion + 1):
                    name = f"synth_{language}_{speaker.name}_{emotion}_{number:02d}.wav"
                    path = out_dir / language / speaker.name / name
                    paths.append(path)
                    if path.exists():
                        continue
                    rng = np.random.default_rng(
                        [seed, LANGUAGES.index(language), index, EMOTIONS.index(emotion), number]
                    )
                    y = synthesize_utterance(
                        emotion=emotion, speaker=speaker, language=language, sr=sr, rng=rng
                    )
                    with atomic_open(path, "wb") as handle:
                        soundfile.write(handle, y, sr, format="WAV", subtype="PCM_16")
    with atomic_open(out_dir / "README.txt", "w", encoding="utf-8") as handle:
        handle.write(_readme(emotions, speakers, utterances_per_emotion, sr, seed))
    return paths


def _claim_settings(out_dir: Path, *, seed: int, sr: int) -> None:
    # A file's bytes depend on (seed, sr) besides its name: resuming with others would mix corpora.
    path = out_dir / "corpus.json"
    wanted = {"seed": seed, "sr": sr}
    if path.is_file():
        found = json.loads(path.read_text())
        if found != wanted:
            raise ConfigError(f"{str(out_dir)!r} holds a synthetic corpus made with {found}, not {wanted}; "
                              "use another folder or the same seed and sr")
        return
    with atomic_open(path, "w") as handle:
        json.dump(wanted, handle)


def _vary(voice: _Voice, speaker: SyntheticSpeaker, rng: np.random.Generator) -> _Voice:
    """This utterance's voice: the emotion's, bent by the speaker's habits and by chance."""

    def lognormal(sigma):
        return float(np.exp(rng.normal(0.0, sigma)))

    return dataclasses.replace(
        voice,
        f0=voice.f0 * lognormal(0.05),
        range=voice.range * speaker.pitch_range * lognormal(0.25),
        rate=voice.rate * speaker.tempo * lognormal(0.08),
        level=min(voice.level + rng.normal(0.0, 1.5), -1.0),
        jitter=voice.jitter * lognormal(0.25),
        shimmer=voice.shimmer * lognormal(0.25),
        breath=(voice.breath + speaker.breathiness) * lognormal(0.25),
        oq=float(np.clip(voice.oq + speaker.open_quotient + rng.normal(0.0, 0.03), 0.3, 0.85)),
        tilt=float(np.clip(voice.tilt + rng.normal(0.0, 0.04), 0.0, 0.85)),
        effort=voice.effort * lognormal(0.1),
        formant=voice.formant * lognormal(0.01),
        decl=voice.decl + rng.normal(0.0, 1.0),
    )


def _speech(voice: _Voice, speaker: SyntheticSpeaker, language: str, sr: int, rng: np.random.Generator):
    """The utterance between its silences: syllables laid out, voiced, filtered and summed."""
    duration = rng.uniform(1.3, 2.4)
    count = max(3, round(duration * voice.rate))
    if language == "synth-a":  # syllable-timed: even syllables, accents anywhere
        stressed = rng.random(count) < 0.4
        weights = rng.lognormal(0.0, 0.1, count)
    else:  # stress-timed: a stressed syllable heads each foot of 1-3, the others shrink
        stressed = np.zeros(count, bool)
        position = 0
        while position < count:
            stressed[position] = True
            position += int(rng.integers(1, 4))
        weights = np.where(stressed, 1.5, 0.65) * rng.lognormal(0.0, 0.15, count)
    if not stressed.any():
        stressed[rng.integers(count)] = True
    weights[-1] *= 1.3  # phrase-final lengthening
    bounds = np.round(np.concatenate([[0.0], np.cumsum(weights)]) / weights.sum() * duration * sr).astype(int)
    n = bounds[-1]
    t = np.arange(n) / sr

    # f0: declination, a slow random drift and a bump on each accented vowel.
    centres = (bounds[:-1] + 0.65 * np.diff(bounds)) / sr
    widths = 0.3 * np.diff(bounds) / sr
    heights = np.where(stressed, voice.range * rng.uniform(0.6, 1.2, count), 0.0)
    semitones = -voice.decl * t / duration + np.interp(t, np.linspace(0, duration, 6), rng.normal(0, 0.5, 6))
    semitones += heights @ np.exp(-0.5 * ((t[None, :] - centres[:, None]) / widths[:, None]) ** 2)
    source = _glottal_source(speaker.f0 * voice.f0 * 2 ** (semitones / 12), voice, sr, rng)

    out = np.zeros(n)
    scale = speaker.formant_scale * voice.formant
    vowels = _VOWELS[language]
    consonants = _CONSONANTS[language]

    def consonant(start, end, gain):
        """A nasal murmur, a fricative, or a closure and burst on [start, end)."""
        kind, centre, bandwidth = consonants[rng.integers(len(consonants))]
        if kind == "nasal":
            murmur = sosfilt(_resonators(np.array([250.0, centre, 2500.0]), scale, sr), source[start:end])
            _add(out, start, end, murmur, 0.35 * gain, sr)
            return
        if kind == "stop":
            start = max(start, end - int(0.02 * sr))  # closure silence, then a 20 ms burst
        centre = min(centre * np.sqrt(scale), 0.4 * sr)
        sos = _resonators(np.array([centre, centre]), 1.0, sr, np.array([bandwidth, bandwidth]))
        noise = sosfilt(sos, rng.standard_normal(end - start))
        if kind == "stop":
            noise *= np.exp(-np.arange(noise.size) / (0.005 * sr))
        _add(out, start, end, noise, (0.4 if kind == "stop" else 0.2) * voice.effort * gain, sr)

    for i in range(count):
        start, end = bounds[i], bounds[i + 1]
        gain = (1.0 if stressed[i] else 0.75) * (1.0 - 0.3 * start / n)
        formants = np.array(vowels[rng.integers(len(vowels))], float)
        if language == "synth-b" and not stressed[i]:
            formants = 0.5 * (formants + _SCHWA)
        if rng.random() < 0.85:
            onset = start + int(min(0.35 * (end - start), 0.09 * sr))
            consonant(start, onset, gain)
            start = onset
        if language == "synth-b" and stressed[i] and rng.random() < 0.4:
            coda = end - int(0.25 * (end - start))
            consonant(coda, end, gain)
            end = coda
        _add(out, start, end, sosfilt(_resonators(formants, scale, sr), source[start:end]), gain, sr)
    return out


def _glottal_source(f0: np.ndarray, voice: _Voice, sr: int, rng: np.random.Generator) -> np.ndarray:
    """Rosenberg flow derivative along `f0` (Hz per sample), with jitter, shimmer, creak and aspiration."""
    phase = np.cumsum(f0) / sr
    periods = int(phase[-1] * 1.2) + 2
    stretch = np.clip(1.0 + voice.jitter * rng.standard_normal(periods), 0.8, 1.2)
    amplitude = np.clip(1.0 + voice.shimmer * rng.standard_normal(periods), 0.3, 1.7)
    creaky = rng.random(periods) < voice.creak
    stretch[creaky] *= 0.5  # a creaky period is twice as long and weak
    amplitude[creaky] *= 0.5
    phase = np.cumsum(f0 * stretch[phase.astype(int)]) / sr
    index = phase.astype(int)
    frac = phase - index
    rise = voice.oq * 2.0 / 3.0  # opening takes twice as long as closing
    flow = np.where(
        frac < rise,
        0.5 - 0.5 * np.cos(np.pi * frac / rise),
        np.where(frac < voice.oq, np.cos(0.5 * np.pi * (frac - rise) / (voice.oq - rise)), 0.0),
    )
    flow *= amplitude[index]
    pulses = np.diff(flow, prepend=0.0)
    noise = lfilter([1.0, -0.9], [1.0], rng.standard_normal(f0.size)) * (0.3 + flow)
    source = pulses / _rms(pulses) + voice.breath * noise / _rms(noise)
    return lfilter([1.0 - voice.tilt], [1.0, -voice.tilt], source)


def _add(out: np.ndarray, start: int, end: int, segment: np.ndarray, gain: float, sr: int) -> None:
    """Add `segment` at `start`, scaled to RMS `gain`, with 5 ms raised-cosine edges."""
    if end - start < 4:
        return
    ramp = min(int(0.005 * sr), (end - start) // 2)
    edge = 0.5 - 0.5 * np.cos(np.linspace(0, np.pi, ramp))
    segment = segment * (gain / max(_rms(segment), 1e-12))
    segment[:ramp] *= edge
    segment[-ramp:] *= edge[::-1]
    out[start:end] += segment


def _resonators(formants: np.ndarray, scale: float, sr: int, bandwidths: np.ndarray = _BANDWIDTHS):
    """Second-order sections of a cascade of unit-DC-gain resonators (Klatt 1980).

    Vowels get F4 = 3500 Hz and F5 = 4500 Hz added; resonances at or above 0.45 sr are left out.
    """
    if formants.size == 3:
        formants = np.concatenate([formants, [3500.0, 4500.0]])
    frequencies = formants * scale
    keep = frequencies < 0.45 * sr
    r = np.exp(-np.pi * bandwidths[: formants.size][keep] / sr)
    a1 = -2 * r * np.cos(2 * np.pi * frequencies[keep] / sr)
    a2 = r**2
    zeros = np.zeros_like(r)
    return np.stack([1 + a1 + a2, zeros, zeros, np.ones_like(r), a1, a2], axis=1)


def _rms(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(x**2)))


def _readme(emotions, speakers, utterances_per_emotion, sr, seed) -> str:
    lines = [
        "spectro synthetic emotional-speech corpus",
        "",
        "Machine-made with spectro.synth.generate_corpus: source-filter synthesis (glottal pulses,",
        "formant resonators, noise consonants) of nonsense syllables whose prosody and voice quality",
        "follow the acoustic correlates of each emotion. Not recordings of people.",
        "",
        "Layout: <language>/<speaker>/synth_<language>_<speaker>_<emotion>_<NN>.wav",
        "Speaker ids: language letter, index, gender letter (f/m).",
        f"Format: {sr} Hz mono 16-bit PCM WAV; seed {seed}.",
        f"Emotions: {', '.join(emotions)}; {utterances_per_emotion} utterances per speaker and emotion.",
        "Languages: synth-a (5 vowels, syllable-timed), synth-b (7 vowels, stress-timed, reduced",
        "unstressed vowels, closed syllables).",
        "",
        "Speakers:",
    ]
    lines += [
        f"  {language} {s.name}: {s.gender}, f0 {s.f0:.0f} Hz, formant scale {s.formant_scale:.2f}"
        for language, s in speakers
    ]
    return "\n".join(lines) + "\n"


def _check_int(name: str, value, low: int, high: int | None) -> None:
    is_int = isinstance(value, (int, np.integer)) and not isinstance(value, bool)
    if not is_int or value < low or (high is not None and value > high):
        rule = f"from {low} to {high}" if high is not None else f">= {low}"
        raise ConfigError(f"{name}={value!r} is invalid; it must be an integer {rule}")


def _check_choice(name: str, value, choices) -> None:
    if value not in choices:
        raise ConfigError(f"{name}={value!r} is invalid; choose one of {tuple(choices)}")


def _check_names(name: str, values, choices) -> tuple[str, ...]:
    try:
        values = (values,) if isinstance(values, str) else tuple(values)
    except TypeError:
        raise ConfigError(f"{name}={values!r} is invalid; it must list names from {tuple(choices)}") from None
    if not values or len(set(values)) != len(values):
        raise ConfigError(f"{name}={values!r} is invalid; it must list distinct names from {tuple(choices)}")
    for value in values:
        _check_choice(name, value, choices)
    return values
