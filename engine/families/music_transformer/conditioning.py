"""Does the model follow its sentiment? Sample each sentiment, score the mode of what it plays.

In the demo corpus (and the lab's data, mostly) a positive piece is in a major key and a
negative one in a minor key, so the mode the key finder hears in a sample says whether the
model listened to its sentiment token (``generate.check_modes`` says which mode each sentiment
name expects). The loss can fall while the model ignores its conditioning; this fraction says
whether it does not.

    conditioning_check(model, gen_cfg, conditions, samples=4, seed=epoch)
    # {"cond/sentiment": 0.75}

A pure function of the weights and the seed: one batch, each sample from its own numpy
generator (the global RNGs never move), the model's mode restored, nothing written.
"""

from __future__ import annotations

from typing import Any

from podium.engine.families.music_transformer.config import CHECK_GROUP, GenerateConfig
from podium.engine.families.music_transformer.data import ConditionTokens
from podium.engine.families.music_transformer.sampler import sample_batch
from podium.engine.families.music_transformer.tokens import decode_tokens
from podium.engine.families.registry import SampleRequest
from podium.engine.generate import GenerateError
from podium.engine.music_stats import analyse
from podium.engine.series import hook_series

METRIC = hook_series(CHECK_GROUP, "sentiment")


def conditioning_check(
    model: Any,
    gen_cfg: GenerateConfig,
    conditions: ConditionTokens,
    *,
    samples: int = 4,
    seed: int = 0,
    device: Any = None,
) -> dict[str, float]:
    """``samples`` pieces of ``gen_cfg.check_tokens`` tokens per scored sentiment (genres taken
    in turn), scored by mode: the fraction whose mode is the one its sentiment expects.

    Raises:
        GenerateError: no sentiment to score (the model has none, or check_modes names none of
            its names), or the model produced NaN/inf logits.
    """
    if "sentiment" not in conditions.dims:
        raise GenerateError("the model has no sentiment conditioning to check")
    scored = [n for n in conditions.names("sentiment") if n in gen_cfg.check_modes]
    if not scored:
        raise GenerateError(
            "generate.check_modes names none of the sentiments "
            f"({', '.join(conditions.names('sentiment'))})"
        )
    genres = conditions.names("genre") if "genre" in conditions.dims else ()
    requests = []
    for s in scored:
        for i in range(samples):
            cond = {"sentiment": s}
            if genres:
                cond["genre"] = genres[i % len(genres)]
            requests.append(
                SampleRequest(
                    conditioning=cond,
                    bars=None,
                    tokens=gen_cfg.check_tokens,
                    seed=seed * 1000 + len(requests),
                )
            )
    out = sample_batch(model, gen_cfg, conditions, requests, device)
    hits = 0
    for sample in out:
        stats = analyse(decode_tokens(sample.tokens))
        want = gen_cfg.check_modes[sample.conditioning["sentiment"]]
        hits += stats.notes > 0 and stats.mode == want
    return {METRIC: hits / len(out)}
