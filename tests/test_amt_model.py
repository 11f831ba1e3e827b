"""The amt family's GPT-2: the Hugging Face layout both ways (logits equal to transformers'),
the key-value cache against recomputation, validation metrics, a bit-exact resume on CPU, and
one real ``podium train`` of the small profile followed by ``--text`` / ``--semantic``
generation from its checkpoint."""

from __future__ import annotations

import dataclasses
import json
import os
import re
from pathlib import Path

import pretty_midi
import pytest
import torch

from podium.engine.checkpoints import (
    CheckpointConfig,
    Checkpointer,
    load_state,
    newest_checkpoint,
)
from podium.engine.config import load_profile
from podium.engine.errors import ProfileError
from podium.engine.events import EvalMetrics, EventBus, StepMetrics
from podium.engine.families.amt import FAMILY
from podium.engine.families.amt.config import DataConfig, GPT2Config
from podium.engine.families.amt.data import build_datasets
from podium.engine.families.amt.hf import load_hf, save_hf
from podium.engine.families.amt.model import GPT2
from podium.engine.families.amt.tokens import AMTVocab
from podium.engine.families.registry import SampleRequest
from podium.engine.generate import GenerateError, generate_from_run
from podium.engine.train_config import TrainConfig
from podium.engine.trainer import Trainer, seed_everything
from tests.podium_cli import ROOT, podium

TINY = GPT2Config(n_layers=2, n_heads=4, d_model=32, max_len=64, dropout=0.0)


def test_a_transformers_gpt2_loads_into_podium_with_the_same_logits(tmp_path):
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    hf_cfg = transformers.GPT2Config(
        vocab_size=97,
        n_positions=64,
        n_embd=32,
        n_layer=2,
        n_head=4,
        n_inner=80,
        bos_token_id=2,
        eos_token_id=3,
    )
    hf = transformers.GPT2LMHeadModel(hf_cfg).eval()
    hf.save_pretrained(tmp_path / "hf", safe_serialization=True)
    cfg, vocab_size, state = load_hf(tmp_path / "hf")
    assert (cfg.n_layers, cfg.d_model, cfg.ff_width, cfg.max_len, vocab_size) == (2, 32, 80, 64, 97)
    model = GPT2(cfg, vocab_size)
    model.load_state_dict(state)
    model.eval()
    idx = torch.randint(0, 97, (3, 40))
    with torch.no_grad():
        want = hf(idx).logits
        got = model.logits(idx)
    assert torch.allclose(got, want, atol=1e-5, rtol=0), (got - want).abs().max()


def test_a_podium_gpt2_written_in_the_hf_layout_loads_in_transformers(tmp_path):
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(1)
    model = GPT2(TINY, 101).eval()
    save_hf(model, tmp_path / "out")
    assert {p.name for p in (tmp_path / "out").iterdir()} == {"config.json", "model.safetensors"}
    hf = transformers.GPT2LMHeadModel.from_pretrained(tmp_path / "out").eval()
    idx = torch.randint(0, 101, (2, 64))
    with torch.no_grad():
        assert torch.allclose(hf(idx).logits, model.logits(idx), atol=1e-5, rtol=0)
    assert FAMILY.adapters["hf"].to_native(hf.state_dict()).keys() == model.state_dict().keys()
    # ... and the directory starts a podium run (model.init_from), sizes checked.
    info = {"vocab": {"vocab_size": 101}}
    started = FAMILY.build_model(dataclasses.replace(TINY, init_from=str(tmp_path / "out")), info)
    for name, value in model.state_dict().items():
        assert torch.equal(started.state_dict()[name], value), name
    wider = dataclasses.replace(TINY, d_model=64, init_from=str(tmp_path / "out"))
    with pytest.raises(ProfileError, match="has d_model 32, the profile 64"):
        FAMILY.build_model(wider, info)


@pytest.mark.parametrize("name", ["amt-gpt2", "amt-gpt2-small"])
def test_profiles_load_and_the_cost_counts_the_parameters_the_model_has(name):
    profile = load_profile(ROOT / "profiles" / f"{name}.toml")
    with torch.device("meta"):
        model = FAMILY.build_model(
            profile.model, {"vocab": {"vocab_size": profile.data.vocab_size}}
        )
    assert FAMILY.cost(profile.model, profile.data).params == model.num_parameters()
    if name == "amt-gpt2":  # the report's size
        cfg = profile.model
        assert (cfg.n_layers, cfg.n_heads, cfg.d_model, cfg.max_len) == (6, 8, 768, 1024)


def test_cached_generation_steps_give_the_logits_of_a_full_forward():
    torch.manual_seed(2)
    model = GPT2(TINY, 50).eval()
    idx = torch.randint(0, 50, (2, 30))
    with torch.no_grad():
        full = model.logits(idx)
        cache = model.new_cache(2)
        parts = [model.logits(idx[:, :5], cache)]  # a prompt, then one token at a time
        parts += [model.logits(idx[:, t : t + 1], cache) for t in range(5, 30)]
    assert cache.length == 30
    assert torch.allclose(torch.cat(parts, dim=1), full, atol=1e-5, rtol=0)
    with pytest.raises(ValueError, match="at most 64"):
        model.logits(torch.zeros(1, 65, dtype=torch.long))


# -- training on the demo corpus ---------------------------------------------------------------

DATA = DataConfig(n_pieces=24, bars=2, seq_len=48, max_semantic=4, val_fraction=0.25)


@pytest.fixture(scope="module")
def bundle():
    return build_datasets(DATA, log=lambda _: None)


def _trainer(bundle, ck_dir: Path, events: list, **kw) -> Trainer:
    seed_everything(0)
    bus = EventBus()
    bus.subscribe(events.append)
    cfg = GPT2Config(n_layers=1, n_heads=2, d_model=32, max_len=48, dropout=0.1)
    info = bundle.model_info
    return Trainer(
        model=FAMILY.build_model(cfg, info),
        train_set=bundle.train,
        val_set=bundle.val,
        cfg=TrainConfig(epochs=2, batch_size=8, lr=3e-3, warmup_steps=2, device="cpu"),
        loss_weights={"events": 1.0},
        checkpointer=Checkpointer(ck_dir, CheckpointConfig(), "hash"),
        bus=bus,
        device=torch.device("cpu"),
        metrics=lambda: FAMILY.build_metrics(cfg, info),
        **kw,
    )


def test_resume_on_cpu_is_bit_exact_and_validation_reports_the_family_metrics(bundle, tmp_path):
    full_events: list = []
    full = _trainer(bundle, tmp_path / "a", full_events)
    full.train()
    total = full.state.step
    first = _trainer(bundle, tmp_path / "b", [], max_steps=total // 2 + 1)  # mid-epoch
    first.train()
    info, state = newest_checkpoint(tmp_path / "b")
    events: list = []
    second = _trainer(bundle, tmp_path / "b", events)
    second.load_state_dict(state)
    second.train()
    a = {e.step: (e.loss, e.losses) for e in full_events if isinstance(e, StepMetrics)}
    b = {e.step: (e.loss, e.losses) for e in events if isinstance(e, StepMetrics)}
    assert sorted(b) == list(range(info.step + 1, total + 1))
    assert all(b[s] == a[s] for s in b)
    for p, q in zip(full.model.parameters(), second.model.parameters(), strict=True):
        assert torch.equal(p, q)

    evals = [e for e in full_events if isinstance(e, EvalMetrics)]
    metrics = evals[-1].metrics
    k = bundle.semantic.k
    seen = {int(s) - bundle.vocab.semantic_base for p in bundle.val.pieces for s in p[1:2]}
    assert {f"loss_sem{i}" for i in seen} == {m for m in metrics if m.startswith("loss_sem")}
    assert all(i < k for i in seen) and 0 < metrics["accuracy"] < 1
    assert metrics["perplexity"] == pytest.approx(2.718281828 ** evals[-1].loss, rel=1e-4)
    assert FAMILY.direction("val/perplexity") == "min"


# -- the real command --------------------------------------------------------------------------


def test_podium_trains_the_small_profile_and_generates_from_text_or_token(tmp_path):
    runs = tmp_path / "runs"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    sets = ["--set", "train.epochs=4", "--set", "data.n_pieces=24", "--set", "data.bars=2"]
    sets += ["--set", "data.seq_len=64", "--set", "model.max_len=128"]
    sets += ["--set", "checkpoint.keep_every_steps=1", "--set", "data.max_semantic=4"]
    out = podium("train", str(ROOT / "profiles" / "amt-gpt2-small.toml"), "--headless",
                 "--runs-dir", str(runs), *sets, env=env).stdout  # fmt: skip
    assert "finished" in out
    (run,) = runs.iterdir()
    periodic = sorted(p.stem for p in (run / "checkpoints").glob("periodic-*.json"))
    last = int(periodic[-1].split("-")[1])
    assert last > 3 and periodic == [f"periodic-{s:08d}" for s in range(last - 2, last + 1)]
    request = SampleRequest(conditioning={"text": "a slow, sad, quiet piece"}, bars=2, seed=3)
    sample, path = generate_from_run(run, "latest", request, out=tmp_path / "t.mid")
    meta = json.loads(path.with_suffix(".json").read_text())
    assert meta["conditioning"]["text"] == "a slow, sad, quiet piece"
    k = int(sample.conditioning["semantic"])
    assert sample.tokens[1] == 4 + k and sample.ended in ("bars", "eos", "max_len")
    assert sample.drawn == () and meta["drawn"] == []  # the text chose the token, not the seed
    assert pretty_midi.PrettyMIDI(str(path)).instruments[0].notes
    vocab = AMTVocab.from_dict(load_state(run / "checkpoints" / "latest.pt")["data_info"]["vocab"])
    kinds = "".join(vocab.kind(int(t))[0] for t in sample.tokens[2:-1])  # t(ime) n(ote) d(ur)
    assert re.fullmatch(r"(t+nd)+t*", kinds), kinds  # the sampler's grammar holds
    again, _ = generate_from_run(
        run, "latest", SampleRequest(conditioning={"semantic": str(k)}, bars=2, seed=3),
        out=tmp_path / "s.mid",
    )  # fmt: skip
    assert again.tokens.tolist() == sample.tokens.tolist()  # the text picked token k
    with pytest.raises(GenerateError, match="semantic tokens"):
        generate_from_run(run, "latest", SampleRequest(conditioning={"semantic": "15"}))
