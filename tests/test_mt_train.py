"""The Music Transformer family through podium's one loop: data, training, the conditioning
check, best-by-accuracy checkpoints, a bit-identical resume, ``podium train`` and ``generate``."""

from __future__ import annotations

import json
import os

import pretty_midi
import pytest
import torch

from podium.engine.build import assemble, build_trainer
from podium.engine.checkpoints import Checkpointer, list_checkpoints, newest_checkpoint
from podium.engine.config import load_profile
from podium.engine.errors import DataError
from podium.engine.events import EvalMetrics, EventBus, Scalars, StepMetrics
from podium.engine.families.music_transformer.config import DataConfig
from podium.engine.families.music_transformer.data import build_datasets
from podium.engine.families.registry import SampleRequest
from podium.engine.generate import GenerateError, generate_from_run
from tests.podium_cli import ROOT, podium

SMALL = ROOT / "profiles" / "music-transformer-small.toml"
TINY = [  # the small profile shrunk to a few seconds: 8 demo pieces, crops of 48 tokens
    "model.d_model=32", "model.n_layers=1", "model.n_heads=2", "model.d_ff=64",
    "model.max_len=64", "data.n_pieces=8", "data.bars=2", "data.seq_len=48",
    "data.val_fraction=0.25", "train.batch_size=2", "train.epochs=3", "train.warmup_steps=2",
    "train.val_every_steps=2", "train.device=cpu", "generate.check_every_epochs=1",
    "generate.check_samples=1", "generate.check_tokens=8", "checkpoint.every_epochs=0",
]  # fmt: skip


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    path = tmp_path_factory.mktemp("mt-cache")
    old = os.environ.get("PODIUM_CACHE")
    os.environ["PODIUM_CACHE"] = str(path)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield path
    torch.set_num_threads(threads)
    if old is None:
        os.environ.pop("PODIUM_CACHE")
    else:
        os.environ["PODIUM_CACHE"] = old


def tiny_profile():
    return load_profile(SMALL, TINY)


def train(ck_dir, *, max_steps=None, resume_from=None):
    profile = tiny_profile()
    assembly = assemble(profile, log=lambda line: None)
    events: list = []
    bus = EventBus()
    bus.subscribe(events.append)
    ck = Checkpointer(ck_dir, profile.checkpoint, profile.hash())
    trainer = build_trainer(
        assembly,
        device=torch.device("cpu"),
        bus=bus,
        checkpointer=ck,
        max_steps=max_steps,
        max_epochs=None,
    )
    if resume_from is not None:
        trainer.load_state_dict(resume_from)
    trainer.train()
    return trainer, events


@pytest.fixture(scope="module")
def straight(cache, tmp_path_factory):
    """The tiny profile trained to the end of its schedule."""
    return train(tmp_path_factory.mktemp("straight") / "ck")


def test_demo_data_carries_sentiment_and_genre_tokens_and_crops_by_epoch(cache):
    bundle = build_datasets(tiny_profile().data, log=lambda line: None)
    assert bundle.model_info["vocab_size"] == 390 + 2 + 4
    assert bundle.info["labels"]["sentiment"] == {"negative": 4, "positive": 4}
    item = bundle.train[0]
    x, y, mask = item["x"], item["y"], item["mask"]
    assert 390 <= x[0] < 392 and 392 <= x[1] < 396  # sentiment, then genre
    assert mask[0] == 0 and mask[1:].all()  # the genre token is given, not predicted
    assert torch.equal(x[1:], y[:-1])
    starts = set()
    for epoch in range(6):
        bundle.train.set_epoch(epoch, seed=0)
        starts.add(bundle.train.crop_start(0))
        assert bundle.train[0]["x"][0] == x[0]  # every crop keeps its conditioning
    assert len(starts) > 1  # a piece longer than seq_len is cropped anew each epoch
    assert bundle.val.crop_start(0) == 0


def test_a_midi_folder_with_a_labels_file_of_integers(cache, tmp_path):
    folder = tmp_path / "midis"
    folder.mkdir()
    for i, pitch in enumerate((60, 64, 67)):
        midi = pretty_midi.PrettyMIDI()
        inst = pretty_midi.Instrument(0)
        inst.notes = [pretty_midi.Note(80, pitch + k, k * 0.25, k * 0.25 + 0.2) for k in range(8)]
        midi.instruments.append(inst)
        midi.write(str(folder / f"p{i}.mid"))
    rows = [("p0.mid", 1, "march"), ("p1.mid", "negative", 0), ("p2.mid", 7, 0)]
    (folder / "labels.jsonl").write_text(
        "".join(json.dumps({"file": f, "sentiment": s, "genre": g}) + "\n" for f, s, g in rows)
    )
    said: list[str] = []
    bundle = build_datasets(
        DataConfig(source="midi_dir", path=str(folder), seq_len=64), log=said.append
    )
    assert bundle.info["labels"]["sentiment"] == {"negative": 1, "positive": 1}
    assert bundle.info["labels"]["genre"] == {"alberti": 1, "march": 1}
    assert any("left out 1 pieces" in s and "p2.mid (sentiment)" in s for s in said), said
    with pytest.raises(DataError, match="no such labels file"):
        build_datasets(DataConfig(source="midi_dir", path=str(folder), labels="nope.csv"))


def test_it_trains_validates_checks_its_conditioning_and_keeps_best_accuracy(straight):
    trainer, events = straight
    steps = [e for e in events if isinstance(e, StepMetrics)]
    assert [e.step for e in steps] == list(range(1, trainer.total_steps + 1))
    assert set(steps[0].losses) == {"events"}
    evals = [e for e in events if isinstance(e, EvalMetrics)]
    assert evals and all(0.0 <= e.metrics["accuracy"] <= 1.0 for e in evals)
    checks = [e.values for e in events if isinstance(e, Scalars)]
    assert len(checks) == 3 and all(set(c) == {"cond/sentiment"} for c in checks)
    names = {c.name for c in list_checkpoints(trainer.checkpointer.directory)}
    assert {"latest", "best", "best-accuracy"} <= names
    best = max(e.metrics["accuracy"] for e in evals)
    info = next(
        c for c in list_checkpoints(trainer.checkpointer.directory) if c.name == "best-accuracy"
    )
    assert info.extra == {"metric": "accuracy", "value": pytest.approx(best)}


def test_a_resumed_run_is_bit_identical_to_an_uninterrupted_one(straight, tmp_path):
    full, full_events = straight
    part_dir = tmp_path / "ck"
    train(part_dir, max_steps=5)  # mid-epoch (3 steps an epoch), mid-schedule
    info, state = newest_checkpoint(part_dir)
    assert info.step == 5
    resumed, events = train(part_dir, resume_from=state)
    a = {e.step: (e.loss, e.losses) for e in full_events if isinstance(e, StepMetrics)}
    b = {e.step: (e.loss, e.losses) for e in events if isinstance(e, StepMetrics)}
    assert sorted(b) == list(range(6, full.total_steps + 1))
    for step, value in b.items():
        assert value == a[step], f"step {step} differs"
    for p, q in zip(full.model.parameters(), resumed.model.parameters(), strict=True):
        assert torch.equal(p, q)


def test_podium_train_and_generate_by_name_or_index_past_max_len(cache, tmp_path):
    env = {**os.environ, "PODIUM_CACHE": str(cache), "OMP_NUM_THREADS": "1"}
    runs = tmp_path / "runs"
    sets = [a for o in TINY for a in ("--set", o)]
    out = podium(
        "train", str(SMALL), "--headless", "--runs-dir", str(runs), "--name", "mt",
        "--max-steps", "2", *sets, env=env, timeout=180,
    ).stdout  # fmt: skip
    assert "run mt stopped at step 2" in out, out
    # The lab's integers, 100 tokens on a model of max_len 64: windowed, not a crash.
    out = podium(
        "generate", "mt", "--runs-dir", str(runs), "--sentiment", "1", "--genre", "march",
        "--tokens", "100", "--seed", "4", env=env, timeout=180,
    ).stdout  # fmt: skip
    mid = runs / "mt" / "samples" / "latest-positive-march-seed4.mid"
    assert f"podium: {mid} (positive, march," in out, out
    meta = json.loads(mid.with_suffix(".json").read_text())
    assert meta["conditioning"] == {"sentiment": "positive", "genre": "march"}
    if meta["ended"] == "length":
        assert meta["tokens"] == 102 and "past the model's max_len 64" in meta["note"]
    pretty_midi.PrettyMIDI(str(mid))  # a readable MIDI file
    for cond, words in (
        ({"sentiment": "happy"}, "--sentiment 'happy': must be one of negative (0), positive (1)"),
        ({"genre": "9"}, "--genre '9': must be one of alberti (0)"),
    ):
        with pytest.raises(GenerateError, match=words.replace("(", r"\(").replace(")", r"\)")):
            generate_from_run(runs / "mt", "latest", SampleRequest(conditioning=cond))
