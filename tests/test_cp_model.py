"""The compound-word transformer: size, losses, masking, learning, recurrent = parallel, config."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from podium.engine.families.cp import vocab as V
from podium.engine.families.cp.model import FIELDS, TYPE, CPTransformer, CPTransformerConfig
from podium.engine.families.cp.stepper import CPStepper

EMOPIA_VOCAB = {
    "tempo": 56,
    "chord": 135,
    "bar_beat": 18,
    "type": 4,
    "pitch": 87,
    "duration": 18,
    "velocity": 25,
    "emotion": 5,
    "key": 25,
}
TINY_EMB = {f: 8 for f in FIELDS}


def tiny(**over) -> CPTransformer:
    kw = dict(d_model=32, n_layers=2, n_heads=4, d_ff=64, dropout=0.1, max_len=64)
    kw.update(over)
    return CPTransformer(CPTransformerConfig(emb_sizes=TINY_EMB, **kw), EMOPIA_VOCAB)


def batch(B=3, T=20, seed=0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    tokens = torch.stack(
        [torch.randint(0, EMOPIA_VOCAB[f], (B, T + 1), generator=g) for f in FIELDS], dim=-1
    )  # (B, T+1, 9)
    mask = torch.ones(B, T)
    mask[1:2, 15:] = 0.0  # a padded tail (rows that exist)
    mask[2:3, :3] = 0.0
    return {"x": tokens[:, :-1], "y": tokens[:, 1:], "mask": mask}


def test_full_size_parameter_count_matches_emopia():
    with torch.device("meta"):
        model = CPTransformer(CPTransformerConfig(), EMOPIA_VOCAB)
    n = model.num_parameters()
    print(f"CP transformer, EMOPIA config: {n:,} parameters")
    assert abs(n - 39.2e6) / 39.2e6 < 0.01
    assert next(model.parameters()).device.type == "meta"


def test_forward_returns_nine_finite_losses_in_field_order():
    model = tiny()
    losses = model(batch())
    assert tuple(losses) == FIELDS
    for name, loss in losses.items():
        assert loss.dim() == 0, name
        assert torch.isfinite(loss), name
    # At init every head is near uniform: loss ~ log(vocab).
    assert abs(losses["pitch"].item() - torch.log(torch.tensor(87.0)).item()) < 0.5


def test_masked_positions_do_not_change_the_loss():
    model = tiny(dropout=0.0).eval()
    b = batch()
    other = batch(seed=1)
    changed = {k: v.clone() for k, v in b.items()}
    off = b["mask"] == 0  # (B, T)
    # Only the TARGETS at masked positions; inputs there feed later positions through attention.
    changed["y"][off] = other["y"][off]
    # Inputs after the last counted position of a row influence nothing that counts either.
    changed["x"][1, 15:] = other["x"][1, 15:]
    before, after = model(b), model(changed)
    for f in FIELDS:
        torch.testing.assert_close(after[f], before[f], atol=1e-6, rtol=1e-6)
    # ...while changing a counted target does change its loss.
    changed["y"][0, 0, TYPE] = (b["y"][0, 0, TYPE] + 1) % EMOPIA_VOCAB["type"]
    assert model(changed)["type"].item() != pytest.approx(before["type"].item(), abs=1e-7)


def test_adam_steps_on_one_batch_drop_every_head():
    torch.manual_seed(0)
    model = tiny(dropout=0.0)
    b = batch()
    opt = torch.optim.AdamW(model.configure_optimizer_groups(0.01), lr=3e-3)
    first = {f: v.item() for f, v in model(b).items()}
    for _ in range(30):
        losses = model(b)
        sum(losses.values()).backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
    last = {f: v.item() for f, v in model(b).items()}
    for f in FIELDS:
        assert last[f] < first[f] - 0.05, (f, first[f], last[f])


@pytest.mark.parametrize(
    ("condition", "bar_positions", "key_relative"), [("first", 0, False), ("every", 3, True)]
)
def test_recurrent_steps_equal_parallel_hidden_states(condition, bar_positions, key_relative):
    torch.manual_seed(0)
    model = tiny(condition=condition, bar_positions=bar_positions, key_relative=key_relative)
    model = model.double().eval()
    x = batch(B=2, T=23)["x"]
    assert (x[..., FIELDS.index("bar_beat")] == 1).sum(dim=1).max() > bar_positions  # capped
    parallel = model.hidden(x)  # (B, T, C)
    state = model.init_state(2, dtype=torch.float64)
    steps = []
    for t in range(x.shape[1]):
        h, state = model.step(x[:, t], state, t)
        steps.append(h)
    torch.testing.assert_close(torch.stack(steps, dim=1), parallel, atol=1e-5, rtol=0)
    # The generation heads read those hidden states: same logits as the training path.
    types, keys = x[:, :, TYPE], x[:, 0, FIELDS.index("key")]
    full = model.logits(parallel, types, keys)
    torch.testing.assert_close(model.type_logits(steps[-1]), full["type"][:, -1], atol=1e-5, rtol=0)
    fields = model.field_logits(steps[-1], types[:, -1], keys)
    assert set(fields) == set(FIELDS) - {"type"}
    torch.testing.assert_close(fields["pitch"], full["pitch"][:, -1], atol=1e-5, rtol=0)


def test_key_relative_logits_follow_the_key():
    """The same key-relative logits land a fifth higher for a key a fifth higher."""
    torch.manual_seed(2)
    model = tiny(key_relative=True).eval()
    with torch.no_grad():
        model.rel_head.bias.zero_()
        model.rel_head.bias[12 + 0 * 11 + 0] = 5.0  # the major chord on the tonic
        model.rel_head.bias[0] = 5.0  # the tonic's pitch class
        h = torch.zeros(2, 32)
        types = torch.full((2,), 3)
        keys = torch.tensor([V.key_index("C:maj"), V.key_index("G:maj")])
        out = model.field_logits(h, types, keys)
        base = model.field_logits(h, types, torch.zeros(2, dtype=torch.long))  # no key: no offsets
    chord = out["chord"] - base["chord"]
    assert {V.VOCAB.name("chord", int(i)) for i in (chord[0] > 1).nonzero()} == {"C:M"}
    assert {V.VOCAB.name("chord", int(i)) for i in (chord[1] > 1).nonzero()} == {"G:M"}
    pitch = out["pitch"] - base["pitch"]
    names = {V.VOCAB.name("pitch", int(i)) for i in (pitch[1] > 1).nonzero()}
    assert "Pitch_67" in names and "Pitch_60" not in names and len(names) == 7  # every G
    with pytest.raises(ValueError, match="keys"):
        model.field_logits(h, types)


def test_step_in_float32_state_matches_parallel():
    model = tiny().eval()
    x = batch(B=1, T=40)["x"]
    with torch.no_grad():
        parallel = model.hidden(x)
        state = model.init_state(1)
        for t in range(x.shape[1]):
            h, state = model.step(x[:, t], state, t)
    torch.testing.assert_close(h, parallel[:, -1], atol=1e-4, rtol=0)


def test_sequence_longer_than_max_len_is_refused():
    model = tiny(max_len=16)
    with pytest.raises(ValueError, match=r"^max_len: "):
        model.hidden(batch(T=17)["x"])


def test_optimizer_groups_split_by_dimension():
    model = tiny()
    decay, no_decay = model.configure_optimizer_groups(0.1)
    assert decay["weight_decay"] == 0.1 and no_decay["weight_decay"] == 0.0
    assert all(p.dim() >= 2 for p in decay["params"])
    assert all(p.dim() < 2 for p in no_decay["params"])
    n = sum(p.numel() for g in (decay, no_decay) for p in g["params"])
    assert n == model.num_parameters()


def test_init_is_small_normal_with_zero_bias():
    model = tiny()
    assert model.in_proj.bias.abs().max().item() == 0.0
    assert 0.015 < model.in_proj.weight.std().item() < 0.025


@pytest.mark.parametrize(
    ("over", "pattern"),
    [
        (
            {"d_model": 500, "n_heads": 8},
            r"^d_model: must be divisible by n_heads \(got 500 and 8\)",
        ),
        ({"emb_sizes": {f: 8 for f in FIELDS if f != "key"}}, r"^emb_sizes: missing key"),
        ({"emb_sizes": {**TINY_EMB, "mood": 4}}, r"^emb_sizes: unknown mood"),
        ({"dropout": 1.0}, r"^dropout: "),
        ({"n_layers": 0}, r"^n_layers: "),
        ({"attention_backend": "cuda"}, r"^attention_backend: "),
    ],
)
def test_config_errors_name_the_field_first(over, pattern):
    with pytest.raises(ValueError, match=pattern):
        CPTransformerConfig(**over)


def test_config_is_frozen_with_emopia_defaults():
    cfg = CPTransformerConfig()
    assert (cfg.d_model, cfg.n_layers, cfg.n_heads, cfg.d_ff, cfg.max_len) == (
        512,
        12,
        8,
        2048,
        1024,
    )
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.d_model = 3  # type: ignore[misc]


@pytest.mark.parametrize(
    ("condition", "bar_positions", "key_relative"), [("first", 0, False), ("every", 4, True)]
)
def test_the_generation_stepper_computes_what_step_computes(condition, bar_positions, key_relative):
    """CPStepper folds embeddings, projections and heads ahead of time; the numbers must not move."""
    torch.manual_seed(1)
    act = "relu" if condition == "first" else "gelu"
    model = tiny(
        condition=condition, activation=act, bar_positions=bar_positions, key_relative=key_relative
    )
    model = model.double().eval()
    x = batch(B=3, T=30)["x"]
    stepper = CPStepper(model)
    ref = model.init_state(3, dtype=torch.float64)
    fast = stepper.init_state(3)
    with torch.no_grad():
        for t in range(x.shape[1]):
            h_ref, ref = model.step(x[:, t], ref, t)
            h, fast = stepper.step(x[:, t], fast, t)
            torch.testing.assert_close(h, h_ref, atol=1e-10, rtol=0)
        types, keys = x[:, -1, TYPE], x[:, 0, FIELDS.index("key")]
        out = stepper.heads(h)
        type_logits = out[:, : stepper.n_type]
        torch.testing.assert_close(type_logits, model.type_logits(h_ref), atol=1e-10, rtol=0)
        rest = model.field_logits(h_ref, types, keys)
        want = torch.cat([rest[f] for f in FIELDS if f != "type"], dim=-1)
        got = stepper.rest_logits(out.numpy(), types.numpy(), keys.numpy())
        torch.testing.assert_close(torch.from_numpy(got), want, atol=1e-10, rtol=0)
    assert stepper.rest_sizes == [EMOPIA_VOCAB[f] for f in FIELDS if f != "type"]
    # A snapshot: training the model afterwards does not change the stepper's weights.
    with torch.no_grad():
        model.heads[TYPE].bias += 1.0
    assert not torch.equal(stepper.b_out[: stepper.n_type], model.heads[TYPE].bias)


def test_bfloat16_matrices_halve_what_a_token_reads_and_keep_the_state_in_float32():
    """The preview's bfloat16 form (``CPStepper(matrices=...)``): only the big matrices change
    dtype; the attention state, summed over the whole piece, stays float32, and the logits stay
    near the float32 stepper's."""
    torch.manual_seed(1)
    model = tiny(condition="first").eval()
    x = batch(B=2, T=40)["x"]
    exact, half = CPStepper(model), CPStepper(model, matrices=torch.bfloat16)
    big = [half.w_out, *(m for L in half.layers for m in (L.wqkv, L.wo, L.w1, L.w2))]
    assert {m.dtype for m in big} == {torch.bfloat16}
    assert half.table.dtype == half.layers[0].bqkv.dtype == torch.float32
    s1, s2 = exact.init_state(2), half.init_state(2)
    with torch.no_grad():
        for t in range(x.shape[1]):
            h1, s1 = exact.step(x[:, t], s1, t)
            h2, s2 = half.step(x[:, t], s2, t)
        z1, z2 = exact.heads(h1), half.heads(h2)
    assert {S.dtype for S in s2.layers} == {torch.float32} and z2.dtype == torch.float32
    gap = (z1 - z2).abs().max().item()
    assert 0 < gap < 0.05 * z1.abs().max().item(), gap
    # The float32 stepper is left as it was: the same numbers as a second float32 one.
    again = CPStepper(model, matrices=torch.float32)
    assert again.layers[0].w1.dtype == torch.float32
    assert torch.equal(again.layers[0].w1, exact.layers[0].w1)


def test_cpu_weights_auto_takes_bfloat16_for_big_models_on_the_cpu_only():
    from podium.engine.families.cp.config import BF16_FROM_PARAMS, GenerateConfig
    from podium.engine.families.cp.sampler import cpu_matrices

    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    small = torch.nn.Linear(100, 100)
    big = torch.nn.Linear(BF16_FROM_PARAMS // 2000 + 1, 2000, bias=False)
    assert sum(p.numel() for p in big.parameters()) >= BF16_FROM_PARAMS
    auto = GenerateConfig()
    assert auto.cpu_weights == "auto"
    assert cpu_matrices(auto, small, cpu) is None
    assert cpu_matrices(auto, big, cpu) is torch.bfloat16
    assert cpu_matrices(auto, big, cuda) is None
    f32, bf16 = GenerateConfig(cpu_weights="float32"), GenerateConfig(cpu_weights="bfloat16")
    assert cpu_matrices(f32, big, cpu) is None
    assert cpu_matrices(bf16, small, cpu) is torch.bfloat16
    with pytest.raises(ValueError, match="cpu_weights: must be one of auto, float32, bfloat16"):
        GenerateConfig(cpu_weights="fp8")
