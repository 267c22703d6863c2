"""TypiClust (Hacohen, Dekel & Weinshall 2022): typical images of distinct clusters, for cold start.

The embeddings are clustered with k-means into ``|labelled| + k`` clusters (at
most ``max_clusters``); each pick takes the cluster with the fewest labelled or
picked images (then the largest) and, in it, the most *typical* image: the
inverse mean distance to its ``k_neighbors`` nearest neighbours in the cluster.
"""

from __future__ import annotations

import warnings

import numpy as np
from sklearn.cluster import KMeans, MiniBatchKMeans
from sklearn.exceptions import ConvergenceWarning
from sklearn.neighbors import NearestNeighbors

from al_sim.config.checks import positive
from al_sim.strategies.base import QueryContext, Selection, Strategy
from al_sim.strategies.diversity import argbest, check_budget

_MINIBATCH_ABOVE = 50  # clusters; above this MiniBatchKMeans, as in the authors' code


def typicality(x: np.ndarray, k_neighbors: int) -> np.ndarray:
    """``1 / (mean distance to the k nearest other rows + 1e-5)`` per row (1 for a lone row)."""
    k = min(k_neighbors, len(x) - 1)
    if k < 1:
        return np.ones(len(x))
    dist, _ = NearestNeighbors(n_neighbors=k + 1).fit(x).kneighbors(x)
    return 1.0 / (dist[:, 1:].mean(axis=1) + 1e-5)


def cluster_labels(x: np.ndarray, n_clusters: int, seed: int) -> np.ndarray:
    """k-means cluster of each row (MiniBatchKMeans above 50 clusters)."""
    if n_clusters <= _MINIBATCH_ABOVE:
        km = KMeans(n_clusters=n_clusters, n_init=1, random_state=seed)
    else:
        km = MiniBatchKMeans(n_clusters=n_clusters, batch_size=5000, n_init=1, random_state=seed)
    with warnings.catch_warnings():
        # duplicate embeddings leave some clusters empty; selection copes with that
        warnings.simplefilter("ignore", ConvergenceWarning)
        return km.fit_predict(np.asarray(x, dtype=np.float64))


def typiclust_select(
    emb: np.ndarray, is_labeled: np.ndarray, k: int, seed: int, k_neighbors: int = 20,
    max_clusters: int = 500, rng: np.random.Generator | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Positions of ``k`` unlabelled rows of ``emb`` picked by TypiClust, and their typicality.

    Equally typical images (duplicates) are drawn with ``rng``, as every strategy draws its
    ties; without it the lowest position wins.
    """
    is_labeled = np.asarray(is_labeled, dtype=bool)
    check_budget(k, int(np.count_nonzero(~is_labeled)))
    if k == 0:
        return np.empty(0, dtype=np.int64), np.empty(0)
    n_clusters = min(int(is_labeled.sum()) + k, max_clusters, len(emb))
    labels = cluster_labels(emb, n_clusters, seed)
    sizes = np.bincount(labels, minlength=n_clusters)
    covered = np.bincount(labels[is_labeled], minlength=n_clusters)
    free = np.bincount(labels[~is_labeled], minlength=n_clusters)
    taken = is_labeled.copy()
    typical: dict[int, tuple[np.ndarray, np.ndarray]] = {}
    picked, scores = np.empty(k, dtype=np.int64), np.empty(k)
    for i in range(k):
        # fewest covered first, then the largest cluster, then the lowest id
        order = np.lexsort((np.arange(n_clusters), -sizes, covered))
        c = int(next(c for c in order if free[c] > 0))
        if c not in typical:
            members = np.flatnonzero(labels == c)
            typical[c] = (members, typicality(emb[members], k_neighbors))
        members, typ = typical[c]
        best = argbest(np.where(taken[members], -np.inf, typ), rng)
        picked[i], scores[i] = members[best], typ[best]
        taken[members[best]] = True
        covered[c] += 1
        free[c] -= 1
    return picked, scores


class TypiClust(Strategy):
    """TypiClust (Hacohen et al. 2022): the most typical image of each uncovered k-means cluster.

    Cost: one trunk pass over labelled + pool images; k-means on N x d
    (MiniBatchKMeans above 50 clusters); kNN within the clusters picked from;
    memory O(N x d).
    """

    name = "typiclust"
    multilabel = True  # embeddings only

    def __init__(self, name: str | None = None, *, k_neighbors: int, max_clusters: int) -> None:
        super().__init__(name)
        positive("strategy", k_neighbors=k_neighbors, max_clusters=max_clusters)
        self.k_neighbors, self.max_clusters = k_neighbors, max_clusters

    def select(self, ctx: QueryContext, k: int) -> Selection:
        check_budget(k, len(ctx.unlabeled))
        emb = ctx.model.features(np.concatenate([ctx.labeled, ctx.unlabeled]))
        is_labeled = np.arange(len(emb)) < len(ctx.labeled)
        seed = int(ctx.rng.integers(2**31 - 1))
        picked, scores = typiclust_select(emb, is_labeled, k, seed, self.k_neighbors,
                                          self.max_clusters, ctx.rng)
        return Selection(np.concatenate([ctx.labeled, ctx.unlabeled])[picked], scores)
