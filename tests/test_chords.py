"""The chords family's parts, without training: labels and their notation, the profile's
checks, rendering (deterministic, varied), the CQT front end, the cache and real WAV + CSV
folders (bad rows reported and skipped), and the torchmetrics metrics."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.io import wavfile

from podium.engine.config import load_profile
from podium.engine.errors import DataError, ProfileError
from podium.engine.families.chords.config import ChordDataConfig, ChordModelConfig
from podium.engine.families.chords.data import build_datasets, load_real
from podium.engine.families.chords.frontend import Frontend
from podium.engine.families.chords.labels import (
    CHORD_TYPES,
    NOTE_NAMES,
    TYPES,
    Chord,
    LabelError,
    parse_label,
)
from podium.engine.families.chords.metrics import ChordMetrics
from podium.engine.families.chords.render import render_split, synth_backend
from tests.tui_helpers import ROOT

PROFILE = ROOT / "profiles" / "chord-recognition.toml"
SMALL = ChordDataConfig(n_train=24, n_val=8, sample_rate=8000, clip_seconds=0.5)


def test_labels_read_the_usual_notation_and_say_what_is_wrong():
    assert len(TYPES) == 32 and len(NOTE_NAMES) == 12
    assert parse_label("C:maj7/3") == Chord(TYPES.index("maj7"), 0, 4)
    assert parse_label("F#:min") == Chord(TYPES.index("min"), 6, 6)
    assert parse_label("Bb:7/b7") == Chord(TYPES.index("7"), 10, 8)
    assert parse_label("G") == Chord(TYPES.index("maj"), 7, 7)  # a bare root: a major triad
    assert parse_label("A:m7b5") == parse_label("A:hdim7")  # chart shorthand accepted
    assert parse_label("Db:maj/Ab") == Chord(0, 1, 8)  # a bass by note name
    # Every chord the heads can name is written and read back the same.
    for t, name in enumerate(TYPES):
        for root in range(12):
            for interval in CHORD_TYPES[name][:4]:
                chord = Chord(t, root, (root + interval) % 12)
                assert parse_label(chord.label()) == chord, chord.label()
    for bad, words in [
        ("H:maj", "root 'H' is not a note name"),
        ("C:maj8", "unknown chord type 'maj8'"),
        ("C:maj/x", "bass 'x' is not a degree"),
        ("N", "no chord"),
        ("C:maj(9)", "interval lists"),
    ]:
        with pytest.raises(LabelError, match=words.replace("(", r"\(")):
            parse_label(bad)


def test_the_profile_loads_and_bad_values_name_their_key():
    profile = load_profile(PROFILE)
    assert profile.family == "chords" and dict(profile.loss_weights) == {
        "type": 1.0,
        "root": 1.0,
        "bass": 0.5,
    }
    assert profile.model.label_smoothing == 0.1 and profile.train.schedule == "onecycle"
    assert profile.train.early_stopping.patience > 0 and profile.checkpoint.every_epochs > 0
    for override, words in [
        ("data.sample_rate=1000", "data.sample_rate"),
        ("model.octaves=7", "model.octaves"),  # above the Nyquist frequency at 8 kHz
        ("data.waveforms='sine,organ'", "'organ'"),
        ("model.bins_per_octave=30", "multiple of 12"),
    ]:
        with pytest.raises(ProfileError, match=words):
            load_profile(PROFILE, [override])


def test_rendering_is_deterministic_varied_and_says_which_synthesiser():
    backend = synth_backend(SMALL)
    if backend.name == "pretty_midi":  # where it looked and what was missing
        assert "pretty_midi synthesis" in backend.note and ("fluidsynth" in backend.note)
    audio, labels = render_split(SMALL, backend, "train", 60)
    again, labels2 = render_split(SMALL, backend, "train", 60)
    assert audio.shape == (60, 4000) and audio.dtype == np.int16
    assert np.array_equal(audio, again) and np.array_equal(labels, labels2)
    other, _ = render_split(SMALL, backend, "val", 5)  # another stream: other chords
    assert not np.array_equal(other, audio[:5])
    assert len(set(labels[:, 0])) > 20 and len(set(labels[:, 1])) == 12
    inverted = labels[:, 2] != labels[:, 1]
    assert 5 <= inverted.sum() <= 35  # inversion_prob 0.3 of 60
    peaks = np.abs(audio).max(axis=1)
    assert peaks.min() > 0.15 * 32767 and len(set(peaks)) > 50  # gains vary, never silent


@pytest.mark.parametrize("kind", ["nnaudio", "stft"])
def test_the_cqt_puts_every_semitone_in_its_own_bin(kind):
    cfg = ChordModelConfig(frontend=kind, octaves=5)
    front = Frontend(cfg, 8000)
    t = np.arange(4000) / 8000
    midis = [36, 43, 50, 57, 64, 71, 78, 85, 92]
    clips = np.stack([np.sin(2 * np.pi * 440 * 2 ** ((m - 69) / 12) * t) for m in midis])
    spec = front.cqt(torch.tensor(clips, dtype=torch.float32))  # (B, 120, frames)
    peaks = spec.mean(dim=-1).argmax(dim=-1).tolist()
    assert peaks == [2 * (m - 36) for m in midis]
    # A quiet and a loud clip look alike after the compression and standardisation.
    out = front(torch.tensor(np.stack([clips[3], 0.01 * clips[3]]), dtype=torch.float32))
    assert out.shape[1] == 120 and torch.corrcoef(out.flatten(1))[0, 1] > 0.95
    with torch.device("meta"):  # builds without allocating (the family's cost)
        assert Frontend(cfg, 8000).cqt is not None


def test_the_cache_renders_once_and_real_rows_are_read_or_reported(tmp_path):
    cfg = ChordDataConfig(**{**SMALL.__dict__, "cache_dir": str(tmp_path / "cache")})
    said: list[str] = []
    bundle = build_datasets(cfg, said.append)
    assert len(bundle.train) == 24 and len(bundle.val) == 8
    assert any("rendering 32 clips once" in line for line in said)
    assert any("[##########]" in line for line in said)  # the progress bar's last line
    said.clear()
    again = build_datasets(cfg, said.append)
    assert said == [] and torch.equal(again.train[3]["audio"], bundle.train[3]["audio"])
    item = bundle.train[0]
    assert item["audio"].shape == (4000,) and set(item) == {"audio", "type", "root", "bass"}

    real = tmp_path / "real"
    real.mkdir()
    t = np.arange(32000) / 16000
    tone = sum(np.sin(2 * np.pi * 440 * 2 ** ((m - 69) / 12) * t) for m in (60, 64, 67))
    wavfile.write(real / "c.wav", 16000, (tone / 3 * 20000).astype(np.int16))
    wavfile.write(real / "f.wav", 8000, np.zeros(8000, dtype=np.float32))
    (real / "broken.wav").write_bytes(b"not a wav")
    (real / "labels.csv").write_text(
        "file,start,end,label\n"
        "c.wav,0.0,2.0,C:maj\n"  # two clips of 0.5 s... four
        "c.wav,0.0,0.3,C:maj/3\n"  # shorter than a clip: one, padded
        "f.wav,0,1,F:wat\n"  # unknown chord type
        "broken.wav,0,1,G:7\n"  # unreadable
        "c.wav,1.5,1.0,C:maj\n"  # reversed span
        "c.wav,0,1,N\n",  # no chord
        encoding="utf-8",
    )
    clips = load_real(ChordDataConfig(**{**cfg.__dict__, "real_dir": str(real)}))
    assert len(clips.audio) == 5 and clips.files == 1
    assert clips.labels.tolist() == [[0, 0, 0]] * 4 + [[0, 0, 4]]
    assert [s.split(":")[0:2] for s in clips.skipped] == [
        ["labels.csv", "4"],
        ["labels.csv", "5"],
        ["labels.csv", "6"],
        ["labels.csv", "7"],
    ]
    assert "unknown chord type 'wat'" in clips.skipped[0]
    assert "broken.wav: unreadable" in clips.skipped[1] and "reversed" in clips.skipped[2]
    # Into validation, beside the synthetic clips; the log names what was skipped.
    said.clear()
    with_real = build_datasets(
        ChordDataConfig(**{**cfg.__dict__, "real_dir": str(real)}), said.append
    )
    assert len(with_real.val) == 8 + 5 and with_real.model_info["n_real"] == 5
    assert any("skipped 4 row(s)" in line for line in said)
    (real / "labels.csv").write_text("file,label\nc.wav,C:maj\n", encoding="utf-8")
    with pytest.raises(DataError, match="missing column"):
        load_real(ChordDataConfig(**{**cfg.__dict__, "real_dir": str(real)}))


def test_the_metrics_are_torchmetrics_per_head_with_matrices():
    labels = {"type": list(TYPES), "root": list(NOTE_NAMES), "bass": list(NOTE_NAMES)}
    metrics = ChordMetrics(labels)
    target = {h: torch.tensor([0, 1, 2, 3]) for h in ("type", "root", "bass")}
    outputs = {}
    for head, n in (("type", 32), ("root", 12), ("bass", 12)):
        logits = torch.zeros(4, n)
        logits[torch.arange(4), torch.tensor([0, 1, 2, 0])] = 5.0  # the last is wrong
        logits[3, 3] = 4.0  # ... but second best
        outputs[head] = logits
    outputs["bass"] = outputs["bass"].clone()
    outputs["bass"][0] = torch.zeros(12)
    outputs["bass"][0, 5] = 5.0  # bass wrong on the first clip too
    metrics.update(outputs, target)
    values = metrics.compute()
    assert values.scalars["type/accuracy"] == pytest.approx(0.75)
    assert values.scalars["type/top3"] == pytest.approx(1.0)
    assert values.scalars["bass/accuracy"] == pytest.approx(0.5)
    assert values.scalars["chord/accuracy"] == pytest.approx(0.5)  # clips 1 and 2
    confusion = values.matrices["root/confusion"]
    assert confusion.rows == tuple(NOTE_NAMES) and confusion.values[3][0] == 1.0
    assert sum(map(sum, confusion.values)) == 4
    per_class = values.matrices["type/per_class"]
    assert per_class.cols == ("precision", "recall", "f1") and len(per_class.rows) == 32
    assert per_class.values[0][:2] == (0.5, 1.0)  # maj: predicted twice, right once
