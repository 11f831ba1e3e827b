"""EMOPIA's released layout: a synthetic state dict with its names and shapes, and its dictionary
pickle, imported strictly; the logits equal a reference forward of the source layout."""

from __future__ import annotations

import importlib.util
import math
import pickle

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from podium.engine.cli.importer import DEFAULT_PROFILE, import_emopia
from podium.engine.errors import DataError
from podium.engine.families.cp import vocab as V
from podium.engine.families.cp.config import CPTransformerConfig
from podium.engine.families.cp.emopia import (
    SOURCE_FIELDS,
    EmopiaAdapter,
    index_maps,
    read_dictionary,
)
from podium.engine.families.cp.model import CPTransformer
from podium.engine.families.registry import SampleRequest
from podium.engine.generate import generate_from_run

D, H, LAYERS, FF, PE_LEN = 32, 4, 2, 48, 100
EMB = {
    "tempo": 8,
    "chord": 12,
    "bar_beat": 6,
    "type": 4,
    "pitch": 10,
    "duration": 6,
    "velocity": 6,
    "emotion": 5,
    "key": 7,
}


def _dictionary(rng: np.random.Generator, fields: list[str]) -> tuple[dict, dict]:
    """EMOPIA-style (event2word, word2event): podium's tokens in a shuffled order, spelt as
    EMOPIA spells some (``Emotion_Q1``, ``C_M``), tempo with only 40 of podium's 56 tokens."""
    e2w, w2e = {}, {}
    for f in fields:
        names = list(V.token_names(f))
        if f == "tempo":
            names = names[:40]
        order = rng.permutation(len(names))
        spelt = []
        for n in (names[i] for i in order):
            if f == "emotion" and n.startswith("Q"):
                n = f"Emotion_{n}"
            elif f == "chord" and ":" in n:
                n = n.replace(":", "_", 1)
            spelt.append(n)
        key = "bar-beat" if f == "bar_beat" else f
        e2w[key] = {n: i for i, n in enumerate(spelt)}
        w2e[key] = {i: n for i, n in enumerate(spelt)}
    return e2w, w2e


def _pe(length: int, d: int) -> torch.Tensor:
    """EMOPIA's PositionalEncoding buffer, (1, L, C)."""
    pe = torch.zeros(length, d)
    pos = torch.arange(0, length, dtype=torch.float).unsqueeze(1)
    div = torch.exp(torch.arange(0, d, 2).float() * (-math.log(10000.0) / d))
    pe[:, 0::2], pe[:, 1::2] = torch.sin(pos * div), torch.cos(pos * div)
    return pe.unsqueeze(0)


def _released_state(rng: np.random.Generator, sizes: dict[str, int], has_key: bool) -> dict:
    g = torch.Generator().manual_seed(int(rng.integers(1 << 30)))
    r = lambda *shape: torch.randn(*shape, generator=g) * 0.2  # noqa: E731
    fields = [f for f in V.FIELDS if has_key or f != "key"]
    s: dict[str, torch.Tensor] = {}
    for f in fields:
        s[f"word_emb_{SOURCE_FIELDS[f]}.lut.weight"] = r(sizes[f], EMB[f])
    s["pos_emb.pe"] = _pe(PE_LEN, D)
    s["in_linear.weight"], s["in_linear.bias"] = r(D, sum(EMB[f] for f in fields)), r(D)
    for n in range(LAYERS):
        p = f"transformer_encoder.layers.{n}."
        for proj in ("query", "key", "value", "out"):
            s[p + f"attention.{proj}_projection.weight"] = r(D, D)
            s[p + f"attention.{proj}_projection.bias"] = r(D)
        s[p + "linear1.weight"], s[p + "linear1.bias"] = r(FF, D), r(FF)
        s[p + "linear2.weight"], s[p + "linear2.bias"] = r(D, FF), r(D)
        for norm in ("norm1", "norm2"):
            s[p + f"{norm}.weight"], s[p + f"{norm}.bias"] = 1 + r(D), r(D)
    s["transformer_encoder.norm.weight"], s["transformer_encoder.norm.bias"] = 1 + r(D), r(D)
    s["project_concat_type.weight"] = r(D, D + EMB["type"])
    s["project_concat_type.bias"] = r(D)
    for f in fields:
        s[f"proj_{SOURCE_FIELDS[f]}.weight"], s[f"proj_{SOURCE_FIELDS[f]}.bias"] = (
            r(sizes[f], D),
            r(sizes[f]),
        )
    return s


def _reference_forward(s: dict, x: torch.Tensor, y_type: torch.Tensor, fields: list[str]) -> dict:
    """The source layout's forward (fast-transformers' causal-linear encoder, EMOPIA's heads),
    written from its definition: the quadratic masked form of linear attention, no podium code."""
    lin = lambda t, name: t @ s[f"{name}.weight"].T + s[f"{name}.bias"]  # noqa: E731
    embs = [
        F.embedding(x[..., i], s[f"word_emb_{SOURCE_FIELDS[f]}.lut.weight"]) * math.sqrt(EMB[f])
        for i, f in enumerate(fields)
    ]
    h = lin(torch.cat(embs, -1), "in_linear") + s["pos_emb.pe"][:, : x.shape[1]]
    B, T, _ = h.shape
    causal = torch.tril(torch.ones(T, T))
    for n in range(LAYERS):
        p = f"transformer_encoder.layers.{n}."
        q, k, v = (
            lin(h, p + f"attention.{w}_projection").view(B, T, H, -1)
            for w in ("query", "key", "value")
        )
        q, k = F.elu(q) + 1, F.elu(k) + 1
        a = torch.einsum("bihd,bjhd->bhij", q, k) * causal  # (B, H, T, T)
        att = torch.einsum("bhij,bjhd->bihd", a, v) / (a.sum(-1).permute(0, 2, 1)[..., None] + 1e-6)
        h = F.layer_norm(
            h + lin(att.reshape(B, T, D), p + "attention.out_projection"),
            (D,),
            s[p + "norm1.weight"],
            s[p + "norm1.bias"],
        )
        ff = lin(F.gelu(lin(h, p + "linear1")), p + "linear2")
        h = F.layer_norm(h + ff, (D,), s[p + "norm2.weight"], s[p + "norm2.bias"])
    h = F.layer_norm(
        h, (D,), s["transformer_encoder.norm.weight"], s["transformer_encoder.norm.bias"]
    )
    out = {"type": lin(h, "proj_type")}
    t = F.embedding(y_type, s["word_emb_type.lut.weight"]) * math.sqrt(EMB["type"])
    g = lin(torch.cat([h, t], -1), "project_concat_type")
    for f in fields:
        if f != "type":
            out[f] = lin(g, f"proj_{SOURCE_FIELDS[f]}")
    return out


@pytest.mark.parametrize("has_key", [False, True], ids=["emopia-emotion-only", "with-key"])
def test_import_is_strict_and_logits_match_the_source_layout(tmp_path, has_key):
    rng = np.random.default_rng(1 + has_key)
    fields = [f for f in V.FIELDS if has_key or f != "key"]
    e2w, w2e = _dictionary(rng, fields)
    sizes = {f: len(w2e["bar-beat" if f == "bar_beat" else f]) for f in fields}
    released = _released_state(rng, sizes, has_key)
    if not has_key:
        released = {f"module.{k}": v for k, v in released.items()}  # saved from DataParallel
    (tmp_path / "dictionary.pkl").write_bytes(pickle.dumps((e2w, w2e)))

    adapter = EmopiaAdapter.with_dictionary(tmp_path / "dictionary.pkl", released)
    native = adapter.to_native(released)
    emb = dict(EMB) if has_key else {**EMB, "key": 1}
    cfg = CPTransformerConfig(
        d_model=D, n_layers=LAYERS, n_heads=H, d_ff=FF, dropout=0.0, max_len=64, emb_sizes=emb
    )
    model = CPTransformer(cfg, V.vocab_sizes()).eval()
    missing, unexpected = model.load_state_dict(native, strict=True)
    assert missing == [] and unexpected == []

    T = 20
    x_src = torch.stack([torch.from_numpy(rng.integers(0, sizes[f], (2, T))) for f in fields], -1)
    y_type = torch.from_numpy(rng.integers(0, sizes["type"], (2, T)))
    ref = _reference_forward(
        {k.removeprefix("module."): v for k, v in released.items()}, x_src, y_type, fields
    )
    maps = {f: torch.tensor(m) for f, m in adapter.maps.items()}
    x = torch.zeros(2, T, len(V.FIELDS), dtype=torch.int64)
    for i, f in enumerate(V.FIELDS):
        if f in maps:
            x[..., i] = maps[f][x_src[..., fields.index(f)]]
    with torch.no_grad():
        got = model.logits(model.hidden(x), maps["type"][y_type], x[:, 0, V.FIELDS.index("key")])
    for f in fields:
        torch.testing.assert_close(got[f][..., maps[f]], ref[f], atol=1e-5, rtol=0)
    # podium tokens the source never had (16 tempi) are never sampled
    absent = sorted(set(range(V.vocab_sizes()["tempo"])) - set(adapter.maps["tempo"]))
    assert len(absent) == 16 and (got["tempo"][..., absent] < -1e3).all()
    back = adapter.from_native(native)
    for k, v in back.items():
        assert torch.equal(v, {kk.removeprefix("module."): vv for kk, vv in released.items()}[k]), k


def test_podium_import_makes_a_run_that_generates_and_fine_tunes(tmp_path, monkeypatch):
    from podium.engine.data.prepare import prepare
    from podium.engine.families.cp.prepare import CPTokenizer
    from podium.engine.families.registry import PrepareSpec
    from podium.engine.runs import RunDir
    from podium.engine.session import resume_session
    from tests.prepare_corpus import A_MINOR, C_MAJOR, write_piece

    monkeypatch.setenv("PODIUM_CACHE", str(tmp_path / "cache"))
    for k in range(6):
        write_piece(
            tmp_path / "songs" / f"Q{1 + k % 4}_{k}.mid",
            (C_MAJOR, A_MINOR)[k % 2],
            tempo=80.0 + 9 * k,
        )
    spec = PrepareSpec(tokenizer=CPTokenizer(), val_fraction=0.3)
    prepare(
        "midi-folder",
        tmp_path / "songs",
        tmp_path / "prep",
        spec,
        family="cp",
        profile="t",
        workers=1,
    )
    rng = np.random.default_rng(3)
    fields = [f for f in V.FIELDS if f != "key"]
    e2w, w2e = _dictionary(rng, fields)
    sizes = {f: len(w2e["bar-beat" if f == "bar_beat" else f]) for f in fields}
    released = _released_state(rng, sizes, False)
    torch.save(released, tmp_path / "loss_8_params.pt")
    (tmp_path / "dictionary.pkl").write_bytes(pickle.dumps((e2w, w2e)))
    run = import_emopia(
        tmp_path / "loss_8_params.pt",
        tmp_path / "dictionary.pkl",
        profile_path=DEFAULT_PROFILE,
        heads=H,
        name="imported",
        runs_dir=str(tmp_path / "runs"),
        data=str(tmp_path / "prep"),
    )
    sample, midi = generate_from_run(
        run, "latest", SampleRequest(conditioning={"emotion": "Q2"}, bars=2, tokens=40)
    )
    assert midi.is_file() and sample.conditioning["emotion"] == "Q2" and len(sample.tokens) > 1
    saved = torch.load(run / "checkpoints" / "latest.pt", weights_only=False)["model"]
    native = EmopiaAdapter.with_dictionary(tmp_path / "dictionary.pkl", released).to_native(
        released
    )
    assert all(torch.equal(saved[k], v) for k, v in native.items())  # step 0 holds the import
    session = resume_session(RunDir(run), max_steps=2, console=None)
    result = session.run_training()
    assert result.step == 2
    tuned = torch.load(run / "checkpoints" / "latest.pt", weights_only=False)["model"]
    assert not torch.equal(tuned["in_proj.weight"], native["in_proj.weight"])


def test_the_dictionary_pickle_is_read_safely(tmp_path):
    class Evil:
        def __reduce__(self):
            return (print, ("ran",))

    (tmp_path / "evil.pkl").write_bytes(pickle.dumps(({"tempo": Evil()}, {})))
    with pytest.raises(DataError, match=r"builtins\.print is not allowed"):
        read_dictionary(tmp_path / "evil.pkl")
    with pytest.raises(DataError, match=r"pitch token 0 'Banana' has no podium equivalent"):
        index_maps({"pitch": {0: "Banana"}}, ["pitch"])


@pytest.mark.skipif(
    importlib.util.find_spec("fast_transformers") is None, reason="fast_transformers not installed"
)
def test_fast_transformers_backend_agrees_with_torch():
    from podium.engine.models.linear_attention import CausalLinearAttention

    torch.manual_seed(0)
    ours = CausalLinearAttention(32, 4, backend="torch").eval()
    theirs = CausalLinearAttention(32, 4, backend="fast_transformers").eval()
    theirs.load_state_dict(ours.state_dict())
    x = torch.randn(2, 50, 32)
    with torch.no_grad():
        torch.testing.assert_close(theirs(x), ours(x), atol=1e-5, rtol=0)
