"""Sampling from the CP model: determinism by seed, the length caps, bad conditioning, broken
logits, and the ``podium generate`` command on a real (tiny) trained run."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pretty_midi
import pytest
import torch

from engine.config import GenerateConfig
from engine.data import cp_vocab as V
from engine.generate import GenerateError, GenerateRequest, generate_from_run, sample_cp
from engine.models.cp_transformer import CPTransformer, CPTransformerConfig

ROOT = Path(__file__).resolve().parents[1]
TINY = [
    "data.n_pieces=48",
    "data.seq_len=64",
    "model.max_len=64",
    "model.d_model=32",
    "model.n_layers=1",
    "model.d_ff=64",
    "train.val_every_steps=1000",
    "checkpoint.every_epochs=0",
]


def tiny_model(seed: int = 0, max_len: int = 256) -> CPTransformer:
    torch.manual_seed(seed)
    sizes = {f: 16 for f in V.FIELDS}
    cfg = CPTransformerConfig(
        d_model=32, n_layers=1, n_heads=2, d_ff=64, dropout=0.0, max_len=max_len, emb_sizes=sizes
    )
    return CPTransformer(cfg, V.vocab_sizes()).eval()


def podium(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "tui.cli", *args], capture_output=True, text=True, cwd=ROOT,
        timeout=180,
    )  # fmt: skip


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    runs = tmp_path_factory.mktemp("gen") / "runs"
    sets = [a for item in TINY for a in ("--set", item)]
    out = podium("train", str(ROOT / "profiles" / "demo.toml"), "--headless", "--max-steps", "4",
                 "--name", "g", "--runs-dir", str(runs), *sets)  # fmt: skip
    assert out.returncode == 0, out.stderr
    return runs / "g"


def test_same_seed_same_tokens_other_seed_other_tokens():
    model, cfg = tiny_model(), GenerateConfig()
    req = GenerateRequest(emotion="Q3", key="D:min", bars=None, tokens=40, seed=7)
    a, b = sample_cp(model, cfg, req), sample_cp(model, cfg, req)
    assert (a.tokens == b.tokens).all()
    c = sample_cp(model, cfg, GenerateRequest(emotion="Q3", key="D:min", tokens=40, seed=8))
    assert a.tokens.shape != c.tokens.shape or (a.tokens != c.tokens).any()
    assert a.tokens[0, V.FIELDS.index("type")] == V.TYPE_EMOTION
    assert (a.emotion, a.key) == ("Q3", "D:min")


def test_sampling_leaves_the_global_rng_and_the_train_mode_alone():
    model = tiny_model().train()
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    sample_cp(model, GenerateConfig(), GenerateRequest(tokens=10, bars=None, seed=1))
    assert torch.equal(torch.rand(3), expected) and model.training


def test_the_length_caps_end_a_model_that_never_says_eos():
    model = tiny_model()
    with torch.no_grad():  # make EOS impossible: the type head never picks it
        model.heads[V.FIELDS.index("type")].bias[V.TYPE_EOS] = -1e4
    s = sample_cp(model, GenerateConfig(), GenerateRequest(tokens=25, bars=None, seed=0))
    assert s.ended == "length" and len(s.tokens) == 26  # the prompt and 25 tokens
    capped = sample_cp(tiny_model(max_len=16), GenerateConfig(), GenerateRequest(tokens=100))
    assert capped.ended in ("max_len", "eos", "bars") and len(capped.tokens) <= 17
    with torch.no_grad():  # bars: a model that always starts a new bar stops at the limit
        model.heads[V.FIELDS.index("type")].bias[V.TYPE_METRICAL] = 1e4
        model.heads[V.FIELDS.index("bar_beat")].bias[V.BAR] = 1e4
    s = sample_cp(model, GenerateConfig(), GenerateRequest(bars=3, tokens=100, seed=0))
    assert s.ended == "bars" and len(s.tokens) == 4  # the prompt and three bars


def test_bad_conditioning_and_broken_logits_are_clear_errors():
    model, cfg = tiny_model(), GenerateConfig()
    with pytest.raises(GenerateError, match="Q1, Q2, Q3, Q4"):
        sample_cp(model, cfg, GenerateRequest(emotion="Q9"))
    with pytest.raises(GenerateError, match="not a key"):
        sample_cp(model, cfg, GenerateRequest(key="H:dorian"))
    with torch.no_grad():
        model.heads[V.FIELDS.index("type")].bias.fill_(float("nan"))
    with pytest.raises(GenerateError, match=r"non-finite.*retry with seed 1"):
        sample_cp(model, cfg, GenerateRequest(tokens=5))


def test_generate_from_a_checkpoint_writes_the_same_midi_bytes_for_a_seed(trained, tmp_path):
    req = GenerateRequest(emotion="Q1", key="C:maj", bars=4, tokens=60, seed=5)
    _, a = generate_from_run(trained, "latest", req, out=tmp_path / "a.mid")
    _, b = generate_from_run(trained, "latest", req, out=tmp_path / "b.mid")
    assert a.read_bytes() == b.read_bytes()
    pretty_midi.PrettyMIDI(str(a))  # a readable MIDI file
    _, default = generate_from_run(trained, "latest", req)
    assert default.parent == trained / "samples" and default.suffix == ".mid"


def test_the_generate_command_and_its_errors(trained):
    runs = str(trained.parent)
    ok = podium("generate", "g", "--runs-dir", runs, "--emotion", "Q2", "--key", "a:min",
                "--tokens", "30", "--seed", "2", "--wav")  # fmt: skip
    assert ok.returncode == 0, ok.stderr
    assert "Q2, A:min" in ok.stdout and "notes" in ok.stdout
    mid = trained / "samples" / "latest-Q2-Amin-seed2.mid"
    assert mid.exists() and mid.with_suffix(".wav").exists()
    for args, words in (
        (["--emotion", "Q5"], "Q1, Q2, Q3, Q4"),
        (["--key", "X:maj"], "not a key"),
        (["--genre", "jazz"], "--emotion"),
        (["--checkpoint", "nope"], "have: "),
        (["--bars", "0"], "must be >= 1"),
    ):
        bad = podium("generate", "g", "--runs-dir", runs, *args)
        assert bad.returncode == 2, (args, bad.stderr)
        assert bad.stderr.count("\n") == 1 and words in bad.stderr, bad.stderr


def test_render_wav_writes_audio_as_long_as_the_music(tmp_path):
    import wave

    from engine.generate import render_wav

    midi = pretty_midi.PrettyMIDI(initial_tempo=120)
    piano = pretty_midi.Instrument(program=0)
    piano.notes += [pretty_midi.Note(90, 60 + i, i * 0.5, i * 0.5 + 0.5) for i in range(4)]
    midi.instruments.append(piano)
    midi.write(str(tmp_path / "m.mid"))
    wav = render_wav(tmp_path / "m.mid", tmp_path / "m.wav", rate=8000)
    with wave.open(str(wav)) as w:
        assert w.getframerate() == 8000 and w.getsampwidth() == 2
        assert w.getnframes() >= 2.0 * 8000  # 4 half-second notes
        assert max(w.readframes(w.getnframes())) > 0
