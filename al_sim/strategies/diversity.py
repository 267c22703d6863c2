"""Diversity strategies in embedding space: core-set and BADGE (TypiClust: ``typiclust.py``).

Both keep one running "distance to the nearest chosen centre" vector and update
it after each pick, so memory is O(N x d) and no N x N matrix is ever built;
distances to a block of centres are computed ``chunk_size`` rows at a time.

BADGE seeds k-means++ with its own D^2 sampling rather than
``sklearn.cluster.kmeans_plusplus``: that function needs the gradient embeddings
as an N x (C*D) matrix (1.7 GiB for 100,000 images, 9 classes and D=512), while
the squared distance between two outer products factorises into per-factor dot
products, so sampling on the factors needs only the N x C and N x D arrays.
"""

from __future__ import annotations

import numpy as np

from al_sim.config.checks import positive
from al_sim.strategies.base import QueryContext, Selection, Strategy

_CENTRE_BLOCK = 256  # centres per distance block: temporaries are chunk_size x 256 doubles
# Rounding of |a|^2 + |b|^2 - 2 a.b, in ulps of the squared norms: BLAS dot products of
# identical rows stay within 5 (measured, 16 to 2048 dimensions); a distance below this is
# indistinguishable from a duplicate's. Near but distinct points (0.2% of the norm apart in
# float32) stay distinct, in any dimension.
_ROUNDING_ULPS = 8


def duplicate_tolerance(dtype: np.dtype) -> float:
    """Squared distances up to this share of ``|a|^2 + |b|^2`` are rounding error: 0."""
    return _ROUNDING_ULPS * float(np.finfo(dtype).eps)


def check_budget(k: int, n: int) -> None:
    """Raise ValueError unless ``0 <= k <= n`` images can be picked."""
    if not 0 <= k <= n:
        raise ValueError(f"cannot pick {k} images from {n} unlabelled ones")


def argbest(values: np.ndarray, rng: np.random.Generator | None, largest: bool = True) -> int:
    """Position of the largest (or smallest) value; an exact tie is drawn with ``rng``.

    Without ``rng`` a tie goes to the lowest position.
    """
    best = values.max() if largest else values.min()
    tied = np.flatnonzero(values == best)
    return int(tied[0] if rng is None or len(tied) == 1 else rng.choice(tied))


def min_sq_distances(x: np.ndarray, centres: np.ndarray, chunk_size: int = 8192,
                     sq_norms: np.ndarray | None = None) -> np.ndarray:
    """Squared Euclidean distance of each row of ``x`` to its nearest row of ``centres``.

    Distances within the rounding error of their computation (a few ulps of the
    squared norms, :func:`duplicate_tolerance`) are exactly 0, so duplicates tie.
    Memory: O(len(x)) plus ``chunk_size x 256`` doubles; ``+inf`` when there are no centres.
    """
    out = np.full(len(x), np.inf)
    if sq_norms is None:
        sq_norms = _sq_norms(x, chunk_size)
    dtype = _float_dtype(x)
    c_norms = _sq_norms(centres, chunk_size)
    centres = np.asarray(centres, dtype=dtype)
    tol = duplicate_tolerance(dtype)
    for start in range(0, len(x), chunk_size):
        rows = np.asarray(x[start : start + chunk_size], dtype=dtype)
        best = out[start : start + len(rows)]
        for c in range(0, len(centres), _CENTRE_BLOCK):
            pair = sq_norms[start : start + len(rows), None] + c_norms[None, c : c + _CENTRE_BLOCK]
            block = (rows @ centres[c : c + _CENTRE_BLOCK].T).astype(np.float64)
            block *= -2.0
            block += pair
            block[block <= tol * pair] = 0.0
            np.minimum(best, block.min(axis=1), out=best)
    return out


def _float_dtype(x: np.ndarray) -> np.dtype:
    """``x``'s own float type (products stay in float32 for float32 embeddings), else float64."""
    dtype = np.asarray(x[:0]).dtype
    return dtype if np.issubdtype(dtype, np.floating) else np.dtype(np.float64)


def _sq_norms(x: np.ndarray, chunk_size: int) -> np.ndarray:
    out = np.empty(len(x))
    for start in range(0, len(x), chunk_size):
        rows = np.asarray(x[start : start + chunk_size], dtype=np.float64)
        out[start : start + len(rows)] = np.einsum("ij,ij->i", rows, rows)
    return out


def k_center_greedy(pool: np.ndarray, labeled: np.ndarray, k: int, chunk_size: int = 8192,
                    rng: np.random.Generator | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Positions of ``k`` rows of ``pool`` picked by k-center greedy, and their distances.

    Each pick is the pool row farthest from every labelled row and earlier pick
    (ties drawn with ``rng``; without it, the lowest position); its score is that
    distance. With no labelled rows the first pick is the row nearest the pool
    mean (score NaN).
    """
    check_budget(k, len(pool))
    sq_norms = _sq_norms(pool, chunk_size)
    picked, scores = np.empty(k, dtype=np.int64), np.empty(k)
    start = 0
    if len(labeled):
        min_d = min_sq_distances(pool, labeled, chunk_size, sq_norms)
    elif k:
        centre = np.asarray(np.mean(pool, axis=0, dtype=np.float64, keepdims=True))
        picked[0] = argbest(min_sq_distances(pool, centre, chunk_size, sq_norms), rng, False)
        scores[0], start = np.nan, 1
        min_d = min_sq_distances(pool, pool[picked[:1]], chunk_size, sq_norms)
    for i in range(start, k):
        min_d[picked[:i]] = -1.0  # chosen rows are never picked again, even if all are at 0
        picked[i] = argbest(min_d, rng)
        scores[i] = np.sqrt(min_d[picked[i]])
        np.minimum(min_d, min_sq_distances(pool, pool[picked[i : i + 1]], chunk_size, sq_norms),
                   out=min_d)
    return picked, scores


class _ChunkedStrategy(Strategy):
    """A strategy that processes the pool ``chunk_size`` rows at a time."""

    def __init__(self, name: str | None = None, *, chunk_size: int) -> None:
        super().__init__(name)
        positive("strategy", chunk_size=chunk_size)
        self.chunk_size = chunk_size


class CoreSet(_ChunkedStrategy):
    """Core-set (Sener & Savarese 2018): k-center greedy on embeddings of labelled + pool images.

    Cost: one trunk pass over labelled + pool images; memory O(N x d); time
    O((L + k) x N x d) for L labelled images.
    """

    name = "coreset"
    multilabel = True  # embeddings only

    def select(self, ctx: QueryContext, k: int) -> Selection:
        check_budget(k, len(ctx.unlabeled))
        emb = ctx.model.features(np.concatenate([ctx.labeled, ctx.unlabeled]))
        n_lab = len(ctx.labeled)
        picked, scores = k_center_greedy(emb[n_lab:], emb[:n_lab], k, self.chunk_size, ctx.rng)
        return Selection(ctx.unlabeled[picked], scores)


def gradient_embedding_factors(features: np.ndarray,
                               probs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """BADGE's gradient embedding ``g = (p - onehot(argmax p)) outer z`` as its two factors.

    Returns ``(p - onehot, z)``; ``g`` itself (``N x C*D``) is never formed.
    """
    a = np.array(probs, dtype=np.float64)
    a[np.arange(len(a)), np.argmax(a, axis=1)] -= 1.0
    return a, np.asarray(features)


def sigmoid_gradient_factors(features: np.ndarray,
                             probs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """BADGE's gradient embedding for a sigmoid head: the BCE gradient at the hallucinated
    labels ``y_f = [p_f >= 0.5]`` is ``(p - y) outer z``; returns ``(p - y, z)``."""
    p = np.array(probs, dtype=np.float64)
    return p - (p >= 0.5), np.asarray(features)


def kmeanspp_outer(a: np.ndarray, z: np.ndarray, k: int, rng: np.random.Generator,
                   chunk_size: int = 8192) -> tuple[np.ndarray, np.ndarray]:
    """k-means++ seeding (D^2 sampling) over the rows ``a_i outer z_i``; positions and distances.

    Uses ``||a_i z_i^T - a_j z_j^T||^2 = |a_i|^2 |z_i|^2 + |a_j|^2 |z_j|^2 - 2 (a_i.a_j)(z_i.z_j)``
    so each pick costs O(N x (C + D)). The first centre is the largest gradient
    (as in the BADGE authors' code; a tie drawn with ``rng``). Rows whose squared
    distance to a centre is within the rounding error of its computation
    (:func:`duplicate_tolerance` of ``z``'s type) count as copies and are never drawn
    while others remain.
    """
    n = len(a)
    check_budget(k, n)
    a = np.asarray(a, dtype=np.float64)
    tol = duplicate_tolerance(_float_dtype(z))
    norms = np.einsum("ij,ij->i", a, a) * _sq_norms(z, chunk_size)
    picked, scores = np.empty(k, dtype=np.int64), np.empty(k)
    d2 = np.full(n, np.inf)
    for i in range(k):
        if i == 0:
            j = argbest(norms, rng)
        else:
            d2[picked[:i]] = 0.0
            total = d2.sum()
            if total > 0:
                j = int(np.searchsorted(np.cumsum(d2), rng.random() * total, side="right"))
                if j == n:  # rounding put the draw at the very end: the last positive row
                    j = int(np.flatnonzero(d2)[-1])
            else:  # every row duplicates a centre: draw uniformly among the rest
                free = np.ones(n, dtype=bool)
                free[picked[:i]] = False
                j = int(rng.choice(np.flatnonzero(free)))
        picked[i] = j
        scores[i] = np.sqrt(norms[j]) if i == 0 else np.sqrt(d2[j])
        zj = np.asarray(z[j], dtype=_float_dtype(z))
        for start in range(0, n, chunk_size):
            stop = min(start + chunk_size, n)
            pair = norms[start:stop] + norms[j]
            dist = pair - 2.0 * (a[start:stop] @ a[j]) * (z[start:stop] @ zj)
            dist[dist <= tol * pair] = 0.0
            np.minimum(d2[start:stop], dist, out=d2[start:stop])
    return picked, scores


class BADGE(_ChunkedStrategy):
    """BADGE (Ash et al. 2020): k-means++ seeding on last-layer gradient embeddings.

    Cost: one pass over the pool giving embeddings and probabilities; memory
    O(N x (C + D)) (the N x C*D gradient embedding is never built); time O(k x N x (C + D)).
    """

    name = "badge"
    multilabel = True  # sigmoid head: per-finding gradients (sigmoid_gradient_factors)

    def select(self, ctx: QueryContext, k: int) -> Selection:
        check_budget(k, len(ctx.unlabeled))
        features, probs = ctx.model.features_and_probs(ctx.unlabeled)
        factors = sigmoid_gradient_factors if ctx.multilabel else gradient_embedding_factors
        a, z = factors(features, probs)
        picked, scores = kmeanspp_outer(a, z, k, ctx.rng, self.chunk_size)
        return Selection(ctx.unlabeled[picked], scores)
