"""Do an amt run's samples differ by semantic token? Note density and pitch by cluster.

For every semantic token k of a trained run, ``--samples`` pieces of ``--seconds`` s are drawn
(seeds 0..n-1, one batch per token through the KV cache) and measured: notes per second, mean
pitch, mean duration. The same measures of the run's training pieces per cluster are printed
beside them, then a Kruskal-Wallis test across the tokens (are the samples' densities from one
distribution?) and the rank correlation between the data's and the samples' cluster means (does
the token steer towards its cluster's music?).

    PODIUM_CACHE=... .venv/bin/python bench/bench_amt_semantic.py RUN_DIR [--samples 8]
        [--seconds 12] [--checkpoint latest]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from scipy import stats  # noqa: E402

from podium.engine.families.amt.data import build_datasets, vocab_of  # noqa: E402
from podium.engine.families.amt.sampler import sample_batch  # noqa: E402
from podium.engine.families.amt.tokens import decode_tokens  # noqa: E402
from podium.engine.families.registry import SampleRequest  # noqa: E402
from podium.engine.generate import load_model  # noqa: E402


def measures(midi) -> tuple[float, float, float]:
    notes = midi.instruments[0].notes if midi.instruments else []
    if not notes:
        return 0.0, float("nan"), float("nan")
    length = max(n.end for n in notes)  # pieces start at 0: notes per second of music
    density = len(notes) / max(length, 1e-3)
    return (
        density,
        float(np.mean([n.pitch for n in notes])),
        float(np.mean([n.end - n.start for n in notes])),
    )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("run", type=Path)
    p.add_argument("--checkpoint", default="latest")
    p.add_argument("--samples", type=int, default=8)
    p.add_argument("--seconds", type=float, default=12.0)
    args = p.parse_args()
    torch.set_num_threads(1)
    model, profile = load_model(args.run, args.checkpoint)
    vocab = vocab_of(profile.data)
    bundle = build_datasets(profile.data, log=lambda _: None)
    k = bundle.semantic.k
    print(f"run {args.run.name}: k = {k}, silhouette {bundle.semantic.silhouette:.3f}")
    data_by_k: dict[int, list] = {i: [] for i in range(k)}
    for piece in bundle.train.pieces:
        data_by_k[int(piece[1]) - vocab.semantic_base].append(measures(decode_tokens(piece, vocab)))
    gen = profile.section("generate")
    dens_by_k, rows = [], []
    for i in range(k):
        requests = [
            SampleRequest(
                conditioning={"semantic": str(i)}, bars=None, seconds=args.seconds, seed=s
            )
            for s in range(args.samples)
        ]
        got = [
            measures(decode_tokens(s.tokens, vocab))
            for s in sample_batch(model, gen, vocab, requests)
        ]
        dens_by_k.append([g[0] for g in got])
        d, g = np.nanmean(data_by_k[i], axis=0), np.nanmean(got, axis=0)
        rows.append((i, d, g))
    terms = bundle.semantic.top_terms
    print("token  data: notes/s pitch  dur   | samples: notes/s pitch  dur   | top terms")
    for i, d, g in rows:
        print(
            f"{i:5d}  {d[0]:13.2f} {d[1]:5.1f} {d[2]:5.2f} | {g[0]:16.2f} {g[1]:5.1f} {g[2]:5.2f} | "
            + " ".join(terms[i][:4])
        )
    h = stats.kruskal(*dens_by_k)
    rho = stats.spearmanr([r[1][0] for r in rows], [r[2][0] for r in rows])
    print(
        f"Kruskal-Wallis on the samples' notes/s across tokens: H = {h.statistic:.1f}, p = {h.pvalue:.2g}"
    )
    print(
        f"Spearman rho, data vs samples cluster means of notes/s: {rho.statistic:.2f} (p = {rho.pvalue:.2g})"
    )
    print(json.dumps({"k": k, "kruskal_p": h.pvalue, "spearman": rho.statistic}))


if __name__ == "__main__":
    main()
