"""Sampling from the CP model: determinism by seed, the length caps, bad conditioning, broken
logits, and the ``podium generate`` command on a real (tiny) trained run."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pretty_midi
import pytest
import torch

from podium.engine.cli.main import main as cli_main
from podium.engine.data.demo_corpus import generate_demo_corpus
from podium.engine.families.cp import FAMILY as CP
from podium.engine.families.cp import vocab as V
from podium.engine.families.cp.conditioning import conditioning_check, score
from podium.engine.families.cp.config import GenerateConfig
from podium.engine.families.cp.model import CPTransformer, CPTransformerConfig
from podium.engine.families.cp.sampler import sample_batch, sample_one
from podium.engine.families.registry import SampleRequest
from podium.engine.generate import (
    GenerateError,
    check_request,
    generate_from_run,
    request_from_args,
    sample_rows,
)

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


def tiny_model(seed: int = 0, max_len: int = 256, **over) -> CPTransformer:
    torch.manual_seed(seed)
    sizes = {f: 16 for f in V.FIELDS}
    cfg = CPTransformerConfig(
        d_model=32,
        n_layers=1,
        n_heads=2,
        d_ff=64,
        dropout=0.0,
        max_len=max_len,
        emb_sizes=sizes,
        **over,
    )
    return CPTransformer(cfg, V.vocab_sizes()).eval()


def cp_request(emotion: str = "", key: str = "", **kw) -> SampleRequest:
    """A CP sample request (blank emotion or key: drawn by the seed)."""
    return SampleRequest(conditioning={"emotion": emotion, "key": key}, **kw)


def podium(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "podium", *args], capture_output=True, text=True, cwd=ROOT,
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
    req = cp_request(emotion="Q3", key="D:min", bars=None, tokens=40, seed=7)
    a, b = sample_one(model, cfg, req), sample_one(model, cfg, req)
    assert (a.tokens == b.tokens).all()
    c = sample_one(model, cfg, cp_request(emotion="Q3", key="D:min", tokens=40, seed=8))
    assert a.tokens.shape != c.tokens.shape or (a.tokens != c.tokens).any()
    assert a.tokens[0, V.FIELDS.index("type")] == V.TYPE_EMOTION
    assert a.conditioning == {"emotion": "Q3", "key": "D:min"}


def test_sampling_leaves_the_global_rng_and_the_train_mode_alone():
    model = tiny_model().train()
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    sample_one(model, GenerateConfig(), cp_request(tokens=10, bars=None, seed=1))
    assert torch.equal(torch.rand(3), expected) and model.training


def test_sampling_on_one_thread_gives_the_threads_back_even_on_a_bad_request():
    # The sampler runs a small model's one-token steps on one CPU thread
    # (sampler._sampling_threads); the
    # caller's count comes back, also when the request fails inside.
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        model, cfg = tiny_model(), GenerateConfig()
        a = sample_one(model, cfg, cp_request(emotion="Q2", tokens=30, bars=None, seed=3))
        assert torch.get_num_threads() == 2
        with pytest.raises(GenerateError, match="--emotion"):
            sample_one(model, cfg, cp_request(emotion="Q9", tokens=5, bars=None))
        assert torch.get_num_threads() == 2
        torch.set_num_threads(1)
        b = sample_one(model, cfg, cp_request(emotion="Q2", tokens=30, bars=None, seed=3))
        assert (a.tokens == b.tokens).all()  # the same piece whatever the caller's threads
    finally:
        torch.set_num_threads(before)


def test_a_big_model_samples_on_its_share_of_the_cpus_a_small_one_on_one_thread(monkeypatch):
    from podium.engine import cpu_share

    monkeypatch.setattr(cpu_share, "_CURRENT", None)  # no run trains in this process
    from podium.engine.cpu_share import other_podium_runs, plan_threads, usable_cpus
    from podium.engine.families.cp.config import BF16_FROM_PARAMS
    from podium.engine.families.cp.sampler import _sampling_threads

    cpu = torch.device("cpu")
    small = torch.nn.Linear(10, 10)
    big = torch.nn.Linear(BF16_FROM_PARAMS // 2000 + 1, 2000, bias=False)
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        with _sampling_threads(cpu, small):
            assert torch.get_num_threads() == 1
        assert torch.get_num_threads() == 2
        with _sampling_threads(cpu, big):
            share = plan_threads(usable_cpus(), other_podium_runs())
            assert torch.get_num_threads() == min(2, share)
        assert torch.get_num_threads() == 2
        # While a run trains here (a live preview), the run's count stays as it is.
        monkeypatch.setattr(cpu_share, "_CURRENT", object())
        with _sampling_threads(cpu, small):
            assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)


def test_the_length_caps_end_a_model_that_never_says_eos():
    model = tiny_model()
    with torch.no_grad():  # make EOS impossible: the type head never picks it
        model.heads[V.FIELDS.index("type")].bias[V.TYPE_EOS] = -1e4
    s = sample_one(model, GenerateConfig(), cp_request(tokens=25, bars=None, seed=0))
    assert s.ended == "length" and len(s.tokens) == 26  # the prompt and 25 tokens
    capped = sample_one(tiny_model(max_len=16), GenerateConfig(), cp_request(tokens=100))
    assert capped.ended in ("max_len", "eos", "bars") and len(capped.tokens) <= 17
    with torch.no_grad():  # bars: a model that always starts a new bar stops at the limit
        model.heads[V.FIELDS.index("type")].bias[V.TYPE_METRICAL] = 1e4
        model.heads[V.FIELDS.index("bar_beat")].bias[V.BAR] = 1e4
    s = sample_one(model, GenerateConfig(), cp_request(bars=3, tokens=100, seed=0))
    assert s.ended == "bars" and len(s.tokens) == 4  # the prompt and three bars


def test_a_bar_request_is_not_cut_by_the_token_cap_and_says_why_it_ended_short():
    """The form said 8 bars, the sample had 4: which cap ended it, and how to raise it."""
    model = tiny_model()
    with torch.no_grad():  # never EOS; every token a new bar
        model.heads[V.FIELDS.index("type")].bias[V.TYPE_EOS] = -1e4
        model.heads[V.FIELDS.index("type")].bias[V.TYPE_METRICAL] = 1e4
        model.heads[V.FIELDS.index("bar_beat")].bias[V.BAR] = 1e4
    # generate.max_tokens caps a request without bars, not 30 bars that fit in max_len.
    s = sample_one(model, GenerateConfig(max_tokens=20), cp_request(bars=30, seed=0))
    assert s.ended == "bars" and len(s.tokens) == 31 and s.bars == 30 and s.note == ""
    s = sample_one(model, GenerateConfig(max_tokens=20), cp_request(bars=None, seed=0))
    assert s.ended == "length" and len(s.tokens) == 21
    assert s.note.startswith("20 bars: the token cap generate.max_tokens = 20 ended it")

    short = tiny_model(max_len=16)
    with torch.no_grad():
        short.heads[V.FIELDS.index("type")].bias[V.TYPE_EOS] = -1e4
    s = sample_one(short, GenerateConfig(), cp_request(emotion="Q1", key="C:maj", bars=8))
    assert s.ended == "max_len" and len(s.tokens) == 17 and s.bars < 8
    assert s.note.startswith(
        f"{s.bars} of 8 bars: the model holds at most 16 tokens (model.max_len"
    )
    assert "ask for fewer bars, or train a model with a larger model.max_len" in s.note
    s = sample_one(model, GenerateConfig(), cp_request(bars=8, tokens=5))
    assert s.ended == "length" and "5 of 8 bars: the token cap --tokens 5 ended it" in s.note


def test_bad_conditioning_and_broken_logits_are_clear_errors():
    model, cfg = tiny_model(), GenerateConfig()
    with pytest.raises(GenerateError, match="Q1, Q2, Q3, Q4"):
        sample_one(model, cfg, cp_request(emotion="Q9"))
    with pytest.raises(GenerateError, match="not a key"):
        sample_one(model, cfg, cp_request(key="H:dorian"))
    with torch.no_grad():
        model.heads[V.FIELDS.index("type")].bias.fill_(float("nan"))
    with pytest.raises(GenerateError, match=r"non-finite.*retry with seed 1"):
        sample_one(model, cfg, cp_request(tokens=5))


def test_generate_from_a_checkpoint_writes_the_same_midi_bytes_for_a_seed(trained, tmp_path):
    req = cp_request(emotion="Q1", key="C:maj", bars=4, tokens=60, seed=5)
    _, a = generate_from_run(trained, "latest", req, out=tmp_path / "a.mid")
    _, b = generate_from_run(trained, "latest", req, out=tmp_path / "b.mid")
    assert a.read_bytes() == b.read_bytes()
    pretty_midi.PrettyMIDI(str(a))  # a readable MIDI file
    _, default = generate_from_run(trained, "latest", req)
    assert default.parent == trained / "samples" and default.suffix == ".mid"


def test_a_sample_says_which_checkpoint_and_step_it_came_from(trained, tmp_path):
    """Same seed, other MIDI after ``latest`` moved: the sidecar tells the two apart."""
    import json

    saved = json.loads((trained / "checkpoints" / "latest.json").read_text())
    req = cp_request(emotion="Q3", key="", bars=2, seed=1)
    sample, path = generate_from_run(trained, "latest", req, out=tmp_path / "s.mid")
    assert (sample.checkpoint, sample.step) == ("latest", saved["step"]) and saved["step"] == 4
    meta = json.loads((tmp_path / "s.json").read_text())
    assert meta["checkpoint"] == "latest" and meta["step"] == 4 and meta["run"] == "g"
    assert meta["requested"] == {"emotion": "Q3", "key": ""} and meta["drawn"] == ["key"]
    assert meta["conditioning"] == sample.conditioning and meta["seed"] == 1
    assert meta["ended"] == sample.ended and meta["tokens"] == len(sample.tokens)
    assert meta["bars_asked"] == 2 and meta["note"] == sample.note
    # The drawn key is one the run's training data pairs with Q3 (minor, in the demo corpus).
    from podium.engine.checkpoints import load_state

    table = load_state(trained / "checkpoints" / "latest.pt")["data_info"]["emotion_keys"]
    assert sample.conditioning["key"] in table["Q3"]
    # A drawn key samples what the same key asked for does.
    asked, again = generate_from_run(
        trained, "latest", cp_request(emotion="Q3", key=sample.conditioning["key"], bars=2, seed=1),
        out=tmp_path / "t.mid",
    )  # fmt: skip
    assert again.read_bytes() == path.read_bytes() and asked.drawn == ()


def test_the_generate_command_and_its_errors(trained, capsys):
    runs = str(trained.parent)
    ok = podium("generate", "g", "--runs-dir", runs, "--emotion", "Q2", "--key", "a:min",
                "--tokens", "30", "--seed", "2", "--wav")  # fmt: skip
    assert ok.returncode == 0, ok.stderr
    assert "Q2, A:min" in ok.stdout and "notes" in ok.stdout
    mid = trained / "samples" / "latest-Q2-Amin-seed2.mid"
    assert mid.exists() and mid.with_suffix(".wav").exists()
    # Which weights, and the key asked beside the key heard (never "key E:maj" alone).
    assert "from checkpoint latest (step 4) · seed 2 · emotion Q2 · key requested A:min · " \
        "detected " in ok.stdout, ok.stdout  # fmt: skip
    assert "· detected key " in ok.stdout and f"metadata: {mid.with_suffix('.json')}" in ok.stdout
    drawn = podium("generate", "g", "--runs-dir", runs, "--emotion", "Q1", "--bars", "1")
    assert drawn.returncode == 0, drawn.stderr
    assert "emotion Q1 · key drawn " in drawn.stdout and "(step 4)" in drawn.stdout, drawn.stdout
    capsys.readouterr()
    for args, words in (  # in-process: the same main() the console script calls, no torch import
        (["--emotion", "Q5"], "Q1, Q2, Q3, Q4"),
        (["--key", "X:maj"], "not a key"),
        (["--genre", "jazz"], "--emotion"),
        (["--checkpoint", "nope"], "have: "),
        (["--bars", "0"], "must be >= 1"),
    ):
        try:
            code = cli_main(["generate", "g", "--runs-dir", runs, *args])
        except SystemExit as exc:  # argparse's own errors
            code = exc.code
        err = capsys.readouterr().err
        assert code == 2, (args, err)
        assert err.count("\n") == 1 and words in err, err


def test_render_wav_writes_audio_as_long_as_the_music(tmp_path):
    import wave

    from podium.engine.generate import render_wav

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


@pytest.mark.parametrize(
    "features", [{}, {"condition": "every", "bar_positions": 4, "key_relative": True}]
)
def test_the_recurrent_step_gives_the_full_forward_logits_of_a_sampled_piece(features):
    """What the sampler drew from (the fused stepper) is what the training forward computes."""
    model, cfg = tiny_model(seed=3, **features), GenerateConfig()
    with torch.no_grad():
        model.heads[V.FIELDS.index("type")].bias[V.TYPE_EOS] = -1e4
    s = sample_one(model, cfg, cp_request(emotion="Q2", tokens=80, bars=None, seed=4))
    tokens = torch.as_tensor(s.tokens)  # (81, 9): the prompt and what was sampled from it
    x, types = tokens[:-1].unsqueeze(0), tokens[1:, V.FIELDS.index("type")].unsqueeze(0)
    with torch.no_grad():
        keys = x[:, 0, V.FIELDS.index("key")]
        full = model.logits(model.hidden(x), types, keys)  # {f: (1, 80, V_f)}
        state, stepped = model.init_state(1), {f: [] for f in V.FIELDS}
        for pos in range(x.shape[1]):
            h, state = model.step(x[:, pos], state, pos)
            for f, z in model.logits(h, types[:, pos], keys).items():
                stepped[f].append(z)
    for f in V.FIELDS:
        torch.testing.assert_close(torch.stack(stepped[f], 1), full[f], atol=1e-4, rtol=0)


def test_a_batch_gives_each_request_its_own_seeded_piece():
    model, cfg = tiny_model(), GenerateConfig(top_ps={"pitch": 0.5}, temperatures={"type": 0.7})
    with torch.no_grad():
        model.heads[V.FIELDS.index("type")].bias[V.TYPE_EOS] = -3.0  # rows end at various steps
    reqs = [cp_request(emotion=q, tokens=30 + 5 * i, bars=None, seed=i)
            for i, q in enumerate(("Q1", "Q2", "Q3", "Q4", "Q1"))]  # fmt: skip
    batch = sample_batch(model, cfg, reqs)
    alone = [sample_one(model, cfg, r) for r in reqs]
    assert [s.conditioning["emotion"] for s in batch] == ["Q1", "Q2", "Q3", "Q4", "Q1"]
    for b, a, r in zip(batch, alone, reqs, strict=True):
        assert len(b.tokens) <= r.tokens + 1 and b.ended == a.ended
        assert (b.tokens == a.tokens).all()
    assert len({len(s.tokens) for s in batch}) > 1 or len({s.ended for s in batch}) > 1


def test_greedy_sampling_takes_the_argmax_and_top_p_keeps_the_nucleus():
    logits = np.log(np.array([[0.5, 0.3, 0.15, 0.05]] * 400))
    u = np.linspace(0, 1, 400, endpoint=False)
    greedy = sample_rows(logits, np.zeros(400), np.ones(400), u)
    assert (greedy == 0).all()
    nucleus = sample_rows(logits, np.ones(400), np.full(400, 0.7), u)  # keeps 0.5 and 0.3
    assert set(nucleus) == {0, 1} and abs((nucleus == 0).mean() - 0.5 / 0.8) < 0.01
    full = sample_rows(logits, np.ones(400), np.ones(400), u)
    assert abs((full == 3).mean() - 0.05) < 0.01


def test_the_conditioning_check_scores_the_corpus_and_leaves_the_model_as_it_was(tmp_path):
    labels = generate_demo_corpus(tmp_path / "c", n_pieces=8, seed=1)
    pieces = [(lb.emotion, pretty_midi.PrettyMIDI(str(tmp_path / "c" / lb.file))) for lb in labels]
    assert score(pieces) == {"cond/valence": 1.0, "cond/arousal": 1.0, "cond/both": 1.0}
    swap = {"Q1": "Q2", "Q2": "Q1", "Q3": "Q4", "Q4": "Q3"}  # valence flipped, arousal kept
    assert score((swap[q], m) for q, m in pieces) == {
        "cond/valence": 0.0, "cond/arousal": 1.0, "cond/both": 0.0}  # fmt: skip
    assert score([("Q1", pretty_midi.PrettyMIDI())])["cond/valence"] == 0.0  # no notes, no match

    model = tiny_model().train()
    torch.manual_seed(5)
    expected = torch.rand(2)
    torch.manual_seed(5)
    a = conditioning_check(model, GenerateConfig(), samples_per_quadrant=2, max_tokens=40)
    b = conditioning_check(model, GenerateConfig(), samples_per_quadrant=2, max_tokens=40)
    assert a == b and set(a) == {"cond/valence", "cond/arousal", "cond/both"}
    assert all(0.0 <= v <= 1.0 for v in a.values()) and a["cond/both"] <= a["cond/valence"]
    assert model.training and torch.equal(torch.rand(2), expected)


def test_a_run_with_the_conditioning_check_records_the_cond_series(tmp_path):
    import csv

    runs = tmp_path / "runs"
    sets = [a for item in TINY for a in ("--set", item)]
    out = podium("train", str(ROOT / "profiles" / "demo.toml"), "--headless", "--max-epochs", "1",
                 "--name", "c", "--runs-dir", str(runs), *sets,
                 "--set", "generate.check_every_epochs=1", "--set", "generate.check_samples=1",
                 "--set", "generate.max_tokens=64")  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert "cond/both" in out.stdout
    got = podium("metrics", "c", "--csv", "--runs-dir", str(runs))
    series: dict[str, list] = {}
    for name, step, value in list(csv.reader(got.stdout.splitlines()))[1:]:
        series.setdefault(name, []).append((int(step), float(value)))
    for name in ("cond/valence", "cond/arousal", "cond/both"):
        ((step, value),) = series[name]  # one check, at the end of epoch 1
        assert step > 0 and 0.0 <= value <= 1.0
    bad = podium("train", str(ROOT / "profiles" / "demo.toml"), "--headless",
                 "--set", "generate.check_samples=0", "--runs-dir", str(runs))  # fmt: skip
    assert bad.returncode == 2 and "check_samples" in bad.stderr


def test_a_seconds_cap_ends_at_the_first_bar_past_it():
    model = tiny_model()
    with torch.no_grad():  # every token a new bar at 120 bpm (2 s a bar), never EOS
        model.heads[V.FIELDS.index("type")].bias[V.TYPE_METRICAL] = 1e4
        model.heads[V.FIELDS.index("bar_beat")].bias[V.BAR] = 1e4
        model.heads[V.FIELDS.index("tempo")].bias[1 + V.TEMPO_BINS.index(120)] = 1e4
    s = sample_one(model, GenerateConfig(), cp_request(bars=None, seconds=7.0, tokens=100))
    assert s.ended == "seconds" and len(s.tokens) == 1 + 4  # bars at 0, 2, 4, 6 s; 8 s is past


def test_a_request_is_checked_against_the_familys_options_before_any_model():
    sampler = CP.sampler
    assert check_request(sampler, {"emotion": "q2", "key": "a:min"}, "cp") == {
        "emotion": "Q2",
        "key": "A:min",
    }
    assert check_request(sampler, {}, "cp") == {"emotion": "", "key": ""}  # drawn by the seed
    with pytest.raises(GenerateError, match=r"^--mood: family cp takes --emotion, --key$"):
        check_request(sampler, {"mood": "calm"}, "cp")
    with pytest.raises(GenerateError, match=r"--emotion 'Q7': must be one of Q1, Q2, Q3, Q4"):
        check_request(sampler, {"emotion": "Q7"}, "cp")


def test_the_sockets_generate_arguments_become_a_request():
    checkpoint, req = request_from_args({})
    assert checkpoint == "latest" and req == SampleRequest()
    checkpoint, req = request_from_args(
        {"checkpoint": "live", "conditioning": {"emotion": "Q1"}, "tokens": 30, "seed": 4,
         "temperature": 0.5, "top_p": 0.9}
    )  # fmt: skip
    assert checkpoint == "live"
    assert req == SampleRequest(
        conditioning={"emotion": "Q1"}, bars=None, tokens=30, seed=4, temperature=0.5, top_p=0.9
    )  # a token cap alone: no default bar limit
    assert request_from_args({"bars": 3, "tokens": 30})[1].bars == 3
    for args, words in (
        ({"bars": 0}, "args.bars must be between 1 and 1024"),
        ({"bars": 2.5}, "args.bars must be a whole number"),
        ({"bars": True}, "args.bars must be a number"),
        ({"top_p": 0}, "args.top_p must be between"),
        ({"checkpoint": "../x"}, "args.checkpoint must be a checkpoint name"),
        ({"conditioning": {"emotion": 1}}, "args.conditioning must map"),
        ({"conditioning": ["Q1"]}, "args.conditioning must map"),
    ):
        with pytest.raises(GenerateError, match=words):
            request_from_args(args)


def test_a_model_rebuilt_like_the_live_one_draws_nothing_from_the_global_rng(trained):
    """In a process that trains, a preview's model must not be initialised from the RNG the
    training thread draws its dropout from."""
    from podium.engine.checkpoints import load_state
    from podium.engine.generate import load_model, model_from_weights

    plain, _ = load_model(trained, "latest")
    state = load_state(trained / "checkpoints" / "latest.pt")
    assert state["family"] == "cp" and state["data_info"]["vocab_sizes"] == V.vocab_sizes()
    torch.manual_seed(11)
    before = torch.random.get_rng_state()
    rebuilt, profile = model_from_weights(trained, state["model"], state["data_info"], like=plain)
    assert torch.equal(torch.random.get_rng_state(), before)
    assert not rebuilt.training and profile.family == "cp"
    plain_buffers, rebuilt_buffers = dict(plain.named_buffers()), dict(rebuilt.named_buffers())
    assert set(plain_buffers) - set(state["model"])  # there are non-persistent buffers...
    for name, buffer in plain_buffers.items():  # ...and they came over, like the weights
        assert torch.equal(rebuilt_buffers[name], buffer), name
    for name, param in plain.named_parameters():
        assert torch.equal(dict(rebuilt.named_parameters())[name], param), name
    req = cp_request(emotion="Q4", key="E:min", tokens=30, seed=3)
    gen = profile.section("generate")
    assert (sample_one(rebuilt, gen, req).tokens == sample_one(plain, gen, req).tokens).all()
    torch.manual_seed(11)
    load_model(trained, "latest")  # a plain build does draw (why ``like`` exists)
    assert not torch.equal(torch.random.get_rng_state(), before)


def test_every_generate_option_has_help_and_the_familys_flags_are_listed(capsys):
    import argparse

    from podium.engine.cli.main import build_parser

    parser = build_parser()
    (sub,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    generate = sub.choices["generate"]
    for action in generate._actions:
        assert action.help and action.help != argparse.SUPPRESS, action.option_strings or action
    with pytest.raises(SystemExit):
        cli_main(["generate", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    for flag, words in (
        ("--checkpoint", "latest (default)"),
        ("--temperature", "0 (greedy) to 10"),
        ("--top-p", "nucleus mass"),
        ("--seed", "random seed"),
        ("--emotion VALUE", "cp: Q1..Q4"),
        ("--key VALUE", "cp: e.g. C:maj"),
    ):
        assert f"{flag} " in text and words in text, (flag, text)


def test_a_live_preview_leaves_the_training_runs_threads_alone(monkeypatch):
    # torch's thread count is the process's: a preview taken inside a training process must
    # not change it under the training thread (speed, and results in their last bits).
    from podium.engine import cpu_share

    seen: list[int] = []
    model, cfg = tiny_model(), GenerateConfig()
    plain_train = model.train  # the sampler sets eval mode inside its thread setting

    def train(mode: bool = True):
        seen.append(torch.get_num_threads())
        return plain_train(mode)

    model.train = train
    before = torch.get_num_threads()
    monkeypatch.setattr(cpu_share, "_CURRENT", None)
    try:
        torch.set_num_threads(2)
        sample_one(model, cfg, cp_request(emotion="Q2", tokens=5, bars=None, seed=3))
        assert seen and set(seen) == {1}, "no run trains here: one thread"
        seen.clear()
        cpu_share.share_cpus("passive", threads=2)  # what a run starting here does
        sample_one(model, cfg, cp_request(emotion="Q2", tokens=5, bars=None, seed=3))
        assert seen and set(seen) == {2}, "a run trains here: its count"
    finally:
        torch.set_num_threads(before)
