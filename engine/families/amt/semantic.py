"""Semantic tokens: pieces' text descriptions clustered into k groups (TF-IDF + k-means).

``fit_semantic`` vectorises the texts with scikit-learn's ``TfidfVectorizer``, runs ``KMeans``
for every k in ``min_k .. max_k`` and keeps the k with the best silhouette score. What it learned
is kept as plain JSON (the vectoriser's vocabulary and idf weights, the cluster centres), never a
pickle: it is saved with the prepared data and in every checkpoint's data info, so a run maps new
text to a token (``podium generate RUN --text "a slow sad piano ballad"``) without its data
folder, and loading a checkpoint unpickles no vectoriser.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

_VECTORISER = {"lowercase": True, "sublinear_tf": True, "norm": "l2", "stop_words": "english"}
"""The TfidfVectorizer settings, the same when fitting and when rebuilding from JSON."""


@dataclass(frozen=True)
class SemanticModel:
    """A fitted text -> semantic-token mapping, as JSON-able data."""

    terms: tuple[str, ...]
    """The TF-IDF vocabulary, by column."""
    idf: tuple[float, ...]
    centres: tuple[tuple[float, ...], ...]
    """k cluster centres in TF-IDF space."""
    silhouette: float
    """The silhouette score of the kept k (nan when there was a single cluster)."""
    scores: dict[int, float] = field(default_factory=dict)
    """Silhouette score per k tried."""
    sizes: tuple[int, ...] = ()
    """Pieces per cluster in the fitted texts."""
    top_terms: tuple[tuple[str, ...], ...] = ()
    """Each cluster's heaviest terms, for reports and the dashboard."""

    @property
    def k(self) -> int:
        return len(self.centres)

    def to_dict(self) -> dict[str, Any]:
        return {
            "terms": list(self.terms),
            "idf": list(self.idf),
            "centres": [list(c) for c in self.centres],
            "silhouette": self.silhouette,
            "scores": {str(k): v for k, v in self.scores.items()},
            "sizes": list(self.sizes),
            "top_terms": [list(t) for t in self.top_terms],
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> SemanticModel:
        return cls(
            terms=tuple(str(t) for t in data["terms"]),
            idf=tuple(float(v) for v in data["idf"]),
            centres=tuple(tuple(float(v) for v in c) for c in data["centres"]),
            silhouette=float(data["silhouette"]),
            scores={int(k): float(v) for k, v in dict(data.get("scores", {})).items()},
            sizes=tuple(int(s) for s in data.get("sizes", ())),
            top_terms=tuple(tuple(t) for t in data.get("top_terms", ())),
        )

    def vectoriser(self) -> Any:
        """A ``TfidfVectorizer`` rebuilt from the JSON (fixed vocabulary, saved idf)."""
        from sklearn.feature_extraction.text import TfidfVectorizer

        vec = TfidfVectorizer(vocabulary={t: i for i, t in enumerate(self.terms)}, **_VECTORISER)
        vec.idf_ = np.asarray(self.idf, dtype=np.float64)
        return vec

    def assign(self, texts: Sequence[str]) -> np.ndarray:
        """The nearest cluster of each text (a text with no known word goes to the cluster
        nearest the origin, i.e. the most generic one)."""
        x = self.vectoriser().transform(list(texts)).toarray()  # (n, terms)
        centres = np.asarray(self.centres)  # (k, terms)
        d = ((x[:, None, :] - centres[None, :, :]) ** 2).sum(axis=2)  # (n, k)
        return d.argmin(axis=1)


def fit_semantic(
    texts: Sequence[str], *, min_k: int, max_k: int, seed: int = 0, max_terms: int = 2000
) -> tuple[SemanticModel, np.ndarray]:
    """Fit the vectoriser and pick k by silhouette. Returns the model and each text's cluster.

    k is at most the number of distinct TF-IDF vectors and below the number of texts (the
    silhouette's range); when no k in the range is possible, every text is in one cluster.
    """
    from sklearn.cluster import KMeans
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.metrics import silhouette_score

    vec = TfidfVectorizer(max_features=max_terms, **_VECTORISER)
    x = vec.fit_transform(list(texts))
    x = x.tocsr()
    # Distinct vectors, not strings: texts that differ only in dropped words coincide.
    distinct = len({(tuple(r.indices), tuple(np.round(r.data, 9))) for r in x})
    # silhouette needs 2 <= k <= n - 1; k-means more clusters than distinct points wastes some
    candidates = [k for k in range(max(2, min_k), max_k + 1) if k <= distinct and k < x.shape[0]]
    scores: dict[int, float] = {}
    fits: dict[int, Any] = {}
    for k in candidates:
        km = KMeans(n_clusters=k, n_init=4, random_state=seed).fit(x)
        scores[k] = float(silhouette_score(x, km.labels_, random_state=seed))
        fits[k] = km
    if scores:
        best = max(scores, key=lambda k: (scores[k], -k))  # ties: the fewer clusters
        km = fits[best]
        centres, labels, silhouette = km.cluster_centers_, km.labels_, scores[best]
    else:
        centres = np.asarray(x.mean(axis=0))
        labels, silhouette = np.zeros(x.shape[0], dtype=np.int64), float("nan")
    terms = vec.get_feature_names_out()
    top = tuple(tuple(str(terms[i]) for i in np.argsort(-c)[:6]) for c in centres)
    model = SemanticModel(
        terms=tuple(str(t) for t in terms),
        idf=tuple(float(v) for v in vec.idf_),
        centres=tuple(tuple(float(v) for v in c) for c in centres),
        silhouette=silhouette,
        scores=scores,
        sizes=tuple(int(n) for n in np.bincount(labels, minlength=len(centres))),
        top_terms=top,
    )
    return model, np.asarray(labels, dtype=np.int64)
