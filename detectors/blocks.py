"""Dense-block machinery shared by the behaviour-graph detectors: a windowed edge store, FRAUDAR peeling
and a block test against a leave-the-block-out null model.

Peeling (Hooi et al., 2016) proposes candidate blocks robust to camouflage: column weights 1/log(d + 5)
make popular items cheap, so fake accounts cannot dilute a block by also touching them. Each candidate is
then grown and pruned by alternating user and column steps (CrossSpot's local search, Jiang et al., 2015) and
kept only where it is far denser than the degrees predict. The null is computed *without the block's own
edges*: a target rated only by a ring has almost no outside raters, however large the ring, so the test holds
when fakes are a large share of the graph (population-rank quotas would not).

A column is an item (`DenseBlockDetector`) or an (item, time bin) pair (`LockstepDetector`, after
CopyCatch); with bins, the expected count of a cell is the user's activity in that bin times the item's
outside popularity, so a user's own sign-up burst on popular items is expected and a ring's is not.

References: Hooi, Song, Beutel, Shah, Shin, Faloutsos, "FRAUDAR: Bounding Graph Fraud in the Face of
Camouflage", KDD 2016. Jiang, Beutel, Cui, Hooi, Yang, Faloutsos, "A General Suspiciousness Metric for Dense
Blocks in Multimodal Data", ICDM 2015. Bahmani, Kumar, Vassilvitskii, "Densest Subgraph in Streaming and
MapReduce", VLDB 2012 (removing a batch of low-degree nodes per round).

>>> import numpy as np
>>> rng = np.random.default_rng(0)
>>> users = list(rng.integers(0, 2000, 6000)) + [2000 + k // 8 for k in range(160)]  # 20 fakes ...
>>> items = list(rng.integers(0, 1000, 6000)) + [5000 + k % 8 for k in range(160)]  # ... x 8 targets
>>> graph = BlockGraph.from_edges(np.array(users), np.array(items))
>>> block = judge_block(graph, grow(graph, peel(graph)[0]))
>>> int(graph.row_ids[block.users].min()), len(block.users), graph.item_ids[block.items].tolist()
(2000, 20, [5000, 5001, 5002, 5003, 5004, 5005, 5006, 5007])
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy import sparse
from scipy.special import gammaln, pdtrc  # pdtrc(k - 1, mu) = P(X >= k) for X ~ Poisson(mu)

from detectors._arrays import distinct


class EdgeWindow:
    """Edges (user, item, ts, rating) of the last `span` seconds of event time, at most `capacity` of them.

    Ids map to dense integers; `compact` drops expired edges and forgets ids no longer present, so memory is
    bounded by the window, not by the stream. Appends are amortised O(1) per edge (doubling arrays).
    """

    def __init__(self, span: float, capacity: int):
        self.span = span
        self.capacity = capacity
        self.user_index: dict[str, int] = {}
        self.item_index: dict[str, int] = {}
        self.user_ids: list[str] = []
        self.item_ids: list[str] = []
        self.u = np.zeros(1024, np.int32)
        self.i = np.zeros(1024, np.int32)
        self.t = np.zeros(1024, np.float64)
        self.r = np.zeros(1024, np.int8)
        self.size = 0

    def add(self, users: list[str], items: list[str], ts: list[float], ratings: list[int]) -> None:
        n = len(users)
        if n == 0:
            return
        us = np.fromiter(self._codes(users, self.user_index, self.user_ids), np.int32, n)
        its = np.fromiter(self._codes(items, self.item_index, self.item_ids), np.int32, n)
        end = self.size + n
        if end > len(self.u):
            grow_to = max(end, 2 * len(self.u))
            for name in ("u", "i", "t", "r"):
                old = getattr(self, name)
                new = np.zeros(grow_to, old.dtype)
                new[: self.size] = old[: self.size]
                setattr(self, name, new)
        self.u[self.size:end] = us
        self.i[self.size:end] = its
        self.t[self.size:end] = ts
        self.r[self.size:end] = ratings
        self.size = end
        if self.size > 2 * self.capacity:
            self.compact(float(self.t[self.size - 1]))

    @staticmethod
    def _codes(ids: list[str], index: dict[str, int], names: list[str]):
        # New ids first (a batch repeats ids a lot), in order of first appearance so that codes, and the
        # graph's row and column order with them, do not depend on string hashing (which differs between
        # processes); then one C-level lookup per event.
        for new in dict.fromkeys(ids):
            if new not in index:
                index[new] = len(names)
                names.append(new)
        return map(index.__getitem__, ids)

    def compact(self, now: float) -> None:
        """Drop edges older than the span (and beyond capacity), then renumber the ids still in use."""
        t = self.t[: self.size]
        keep = t >= now - self.span
        if keep.sum() > self.capacity:  # over capacity: keep the newest edges
            order = np.argsort(t, kind="stable")
            keep = np.zeros(self.size, bool)
            keep[order[-self.capacity:]] = True
        u, i = self.u[: self.size][keep], self.i[: self.size][keep]
        live_u, u = np.unique(u, return_inverse=True)
        live_i, i = np.unique(i, return_inverse=True)
        self.user_ids = [self.user_ids[k] for k in live_u]
        self.item_ids = [self.item_ids[k] for k in live_i]
        self.user_index = {uid: k for k, uid in enumerate(self.user_ids)}
        self.item_index = {iid: k for k, iid in enumerate(self.item_ids)}
        n = len(u)
        self.u[:n], self.i[:n] = u, i
        self.t[:n] = t[keep]
        self.r[:n] = self.r[: self.size][keep]
        self.size = n

    def live(self, now: float) -> np.ndarray:
        """Indices of edges inside the window at `now`."""
        return np.flatnonzero(self.t[: self.size] >= now - self.span)


@dataclass
class BlockGraph:
    """A binary users x columns graph frozen for one search, with what the null model needs."""

    A: sparse.csr_matrix        # users x columns, 0/1
    AT: sparse.csr_matrix       # columns x users
    col_item: np.ndarray        # column -> item
    col_bin: np.ndarray         # column -> time bin (all 0 without time)
    activity: sparse.csr_matrix  # users x bins: a user's edges per bin
    item_degree: np.ndarray     # edges per item, all bins
    row_ids: np.ndarray         # graph row -> caller's user index
    item_ids: np.ndarray        # graph item -> caller's item index
    bin_ids: np.ndarray         # graph bin -> caller's bin value
    col_weight: np.ndarray = field(default=None)  # FRAUDAR column weights
    activity_total: np.ndarray = field(default=None)  # edges per user

    @classmethod
    def from_edges(cls, users: np.ndarray, items: np.ndarray, bins: np.ndarray | None = None
                   ) -> BlockGraph:
        """Deduplicate (user, item, bin) triples and index rows, items and columns densely."""
        if bins is None:
            bins = np.zeros(len(users), np.int64)
        row_ids, rows = np.unique(users, return_inverse=True)
        item_ids, its = np.unique(items, return_inverse=True)
        bin_ids, bs = np.unique(bins, return_inverse=True)
        col_key = its.astype(np.int64) * len(bin_ids) + bs
        col_keys, cols = np.unique(col_key, return_inverse=True)
        pairs = distinct(rows.astype(np.int64) * len(col_keys) + cols)
        rows, cols = pairs // len(col_keys), pairs % len(col_keys)
        shape = (len(row_ids), len(col_keys))
        A = sparse.csr_matrix((np.ones(len(rows), np.float64), (rows, cols)), shape=shape)
        col_item = col_keys // len(bin_ids)
        col_bin = col_keys % len(bin_ids)
        activity = sparse.csr_matrix((np.ones(len(rows)), (rows, col_bin[cols])),
                                     shape=(len(row_ids), len(bin_ids)))
        col_degree = np.asarray(A.sum(axis=0)).ravel()
        return cls(A=A, AT=A.T.tocsr(), col_item=col_item, col_bin=col_bin, activity=activity,
                   item_degree=np.bincount(col_item[cols], minlength=len(item_ids)).astype(float),
                   row_ids=row_ids, item_ids=item_ids, bin_ids=bin_ids,
                   col_weight=1.0 / np.log(col_degree + 5.0),
                   activity_total=np.asarray(activity.sum(axis=1)).ravel())

    @property
    def n_edges(self) -> int:
        return self.A.nnz

    def columns_of(self, items: np.ndarray, bins: np.ndarray) -> np.ndarray:
        """Graph columns of (caller item, caller bin) pairs; -1 where the pair has no edge."""
        if len(self.item_ids) == 0:
            return np.full(len(items), -1)
        gi = np.minimum(np.searchsorted(self.item_ids, items), len(self.item_ids) - 1)
        gb = np.minimum(np.searchsorted(self.bin_ids, bins), len(self.bin_ids) - 1)
        key = gi.astype(np.int64) * len(self.bin_ids) + gb
        keys = self.col_item.astype(np.int64) * len(self.bin_ids) + self.col_bin
        pos = np.minimum(np.searchsorted(keys, key), len(keys) - 1)
        found = (self.item_ids[gi] == items) & (self.bin_ids[gb] == bins) & (keys[pos] == key)
        return np.where(found, pos, -1)


def peel(graph: BlockGraph, rows: np.ndarray | None = None, quantile: float = 0.05
         ) -> tuple[np.ndarray, np.ndarray, float]:
    """FRAUDAR's greedy peeling, in batches: each round removes the live nodes whose weighted degree is
    below the current density (each such removal raises it), or else the `quantile` share with the lowest.
    Those degrees are at most 1/(1 - quantile) times the average (Markov), so the best prefix is a
    2/(1 - quantile) approximation of the densest block, as the one-at-a-time greedy is a 2-approximation,
    in O(log n / quantile) rounds of vectorised work instead of n heap operations. Returns (users, columns,
    density) of the densest prefix; `rows` restricts the search to those users."""
    W = graph.A.multiply(graph.col_weight[None, :]).tocsr()
    if rows is not None:
        mask = np.zeros(W.shape[0], bool)
        mask[rows] = True
        W = sparse.diags(mask.astype(float)) @ W
        W.eliminate_zeros()
    WT = W.T.tocsr()
    n_u, n_c = W.shape
    alive_u = np.asarray(W.getnnz(axis=1) > 0)
    alive_c = np.asarray(WT.getnnz(axis=1) > 0)
    # Weighted degrees, users' then columns' (one array, so that a round reads the live ones at once)
    prio = np.concatenate([np.asarray(W.sum(axis=1)).ravel(), np.asarray(WT.sum(axis=1)).ravel()])
    prio_u, prio_c = prio[:n_u], prio[n_u:]  # views
    # The block's mass and size as Python numbers: numpy scalars cost microseconds per operation
    mass = float(prio_u.sum())
    size = int(alive_u.sum() + alive_c.sum())
    removed_at = np.full(n_u + n_c, -1, np.int64)  # round in which a node left; -1 never (was not live)
    removed_at[np.flatnonzero(alive_u)] = np.iinfo(np.int64).max
    removed_at[n_u + np.flatnonzero(alive_c)] = np.iinfo(np.int64).max
    best, best_round, rnd = (mass / size if size else 0.0), 0, 0
    live = np.concatenate([np.flatnonzero(alive_u), n_u + np.flatnonzero(alive_c)])  # ascending
    while size > 0:
        rnd += 1
        live_prio = prio[live]
        # Every node below the current density can go at once (each removal raises the density); at least
        # the lowest `quantile` share goes, which bounds the rounds.
        k = max(1, int(quantile * size))
        below = live_prio < mass / size
        if np.count_nonzero(below) < k:
            below = np.zeros(len(live), bool)
            below[np.argpartition(live_prio, k - 1)[:k] if k < len(live_prio) else slice(None)] = True
        out = live[below]
        live = live[~below]
        split = np.count_nonzero(out < n_u)  # `out` ascends, as `live` does: users first
        out_u, out_c = out[:split], out[split:] - n_u
        if len(out_u):  # their edges to live columns leave the block
            at = _positions(W, out_u)
            at = at[alive_c[W.indices[at]]]
            lost = np.bincount(W.indices[at], weights=W.data[at], minlength=n_c)
            prio_c -= lost
            mass -= float(lost.sum())
            alive_u[out_u] = False
        if len(out_c):
            at = _positions(WT, out_c)
            at = at[alive_u[WT.indices[at]]]
            lost = np.bincount(WT.indices[at], weights=WT.data[at], minlength=n_u)
            prio_u -= lost
            mass -= float(lost.sum())
            alive_c[out_c] = False
        removed_at[out] = rnd
        size -= len(out)
        if size > 0 and mass / size > best:
            best, best_round = mass / size, rnd
    keep = removed_at > best_round
    return np.flatnonzero(keep[:n_u]), np.flatnonzero(keep[n_u:]), float(best)


@dataclass
class Block:
    users: np.ndarray     # graph rows
    cols: np.ndarray      # graph columns
    items: np.ndarray     # distinct graph items of the columns
    user_edges: np.ndarray
    user_expected: np.ndarray
    col_edges: np.ndarray
    col_expected: np.ndarray
    edges: int
    expected: float
    surprise: float    # Poisson log-likelihood ratio of the block, a lower bound on -log p
    threshold: float   # what it had to beat: log(number of blocks of its shape / alpha)

    @property
    def lift(self) -> float:
        return self.edges / max(self.expected, 1e-12)

    @property
    def density(self) -> float:
        return self.edges / max(1, len(self.users) * len(self.cols))


@dataclass(frozen=True)
class BlockTest:
    """How far above the null a block must stand. `min_lift`: edges over expected, for the block, each member
    and each column (an effect size: with 10, at least nine in ten of a member's block edges are
    unexplained by its activity and the items' outside popularity); `alpha`: family-wise error, divided by
    the number of users (columns) tested for members (Bonferroni), and by the number of blocks of the same
    shape for the block as a whole (a scan statistic, so that the small cliques taste alone produces in a
    large graph do not pass); `coverage`: CopyCatch's rho, the share of the block a member must touch (and
    of its members a column must have): with every rating at one timestamp, MovieLens' release cohorts
    (users who rated the same new films in the same weeks) form blocks of density 0.2 that pass the scan
    test, and 163 of its 943 real users were flagged at rho 0; at 0.5 none are, while collusive groups, whose
    members rate most of the group's products, keep their members; `min_users` users and `min_cols`
    distinct items: the smallest group worth naming; `overdispersion`: quasi-Poisson factor dividing the
    block's evidence, because real co-rating is more variable than independence predicts (taste, cohorts
    that join together): on MovieLens the blocks that benign users form clear the Poisson scan threshold by
    at most 1.15x, planted rings by 3x and more;
    `min_member_edges`: a member's least edges into the block; `smoothing`: Laplace pseudo-edges per item in
    the outside popularity; `max_steps` of alternating growth."""

    min_lift: float = 10.0
    alpha: float = 0.01
    coverage: float = 0.5
    min_users: int = 3
    min_cols: int = 2
    min_member_edges: int = 2
    overdispersion: float = 1.5
    smoothing: float = 1.0
    max_steps: int = 6


def _positions(matrix: sparse.csr_matrix, rows: np.ndarray) -> np.ndarray:
    """Positions in `indices`/`data` of the given CSR rows' entries (row slicing without scipy's overhead,
    which dominates when thousands of small slices are taken per search)."""
    starts, ends = matrix.indptr[rows], matrix.indptr[rows + 1]
    lengths = ends - starts
    return np.repeat(starts - np.cumsum(lengths) + lengths, lengths) + np.arange(int(lengths.sum()))


def _gather(matrix: sparse.csr_matrix, rows: np.ndarray) -> np.ndarray:
    """Column indices of the given CSR rows, concatenated."""
    return matrix.indices[_positions(matrix, rows)]


def _row_dot(matrix: sparse.csr_matrix, rows: np.ndarray, vector: np.ndarray) -> np.ndarray:
    """matrix[rows] @ vector, without building the sliced matrix."""
    at = _positions(matrix, rows)
    owner = np.repeat(np.arange(len(rows)), matrix.indptr[rows + 1] - matrix.indptr[rows])
    return np.bincount(owner, weights=matrix.data[at] * vector[matrix.indices[at]], minlength=len(rows))


def _outside_popularity(graph: BlockGraph, cols_of_users: np.ndarray, test: BlockTest) -> np.ndarray:
    """Each item's share of the edges that do not come from the block's users, smoothed (Laplace) so that
    an item touched only by the block is unlikely but possible. `cols_of_users`: the users' edges."""
    inside = np.bincount(graph.col_item[cols_of_users], minlength=len(graph.item_degree))
    outside = graph.item_degree - inside
    total = graph.n_edges - len(cols_of_users)
    return (outside + test.smoothing) / (total + test.smoothing * len(outside))


def _significant(observed: np.ndarray, expected: np.ndarray, lift: float, alpha: float) -> np.ndarray:
    expected = np.maximum(expected, 1e-12)
    ok = observed >= lift * expected
    ok[ok] = pdtrc(observed[ok] - 1, expected[ok]) < alpha
    return ok


def grow(graph: BlockGraph, users: np.ndarray, test: BlockTest = BlockTest()) -> tuple[np.ndarray, np.ndarray]:
    """Alternate a column step and a user step from a seed set of users until the block is stable.

    Column step: keep the columns that the users touch significantly more than the columns' outside
    popularity predicts. User step: keep the users whose edges into those columns are significant given
    their own activity in the columns' bins. Camouflage edges land on columns the block does not keep, so
    they neither help nor hurt a member.
    """
    n_u, n_c = graph.A.shape
    n_bins = graph.activity.shape[1]
    alpha_u, alpha_c = test.alpha / max(n_u, 1), test.alpha / max(n_c, 1)
    users = np.asarray(users, np.int64)
    cols = np.zeros(0, np.int64)
    none = np.zeros(0, np.int64), np.zeros(0, np.int64)
    for _ in range(test.max_steps):
        if len(users) < test.min_users:
            return none
        their = _gather(graph.A, users)
        touched_cols, touched = np.unique(their, return_counts=True)
        enough = touched >= max(test.min_users, test.coverage * len(users), 2)
        cand, count = touched_cols[enough], touched[enough].astype(float)
        if len(cand) < test.min_cols:
            return none
        pop = _outside_popularity(graph, their, test)
        per_bin = np.bincount(graph.col_bin[their], minlength=n_bins)
        expected = pop[graph.col_item[cand]] * per_bin[graph.col_bin[cand]]
        new_cols = cand[_significant(count, expected, test.min_lift, alpha_c)]
        if len(distinct(graph.col_item[new_cols])) < test.min_cols:
            return none
        members, hits = np.unique(_gather(graph.AT, new_cols), return_counts=True)
        enough = hits >= max(test.min_member_edges, test.coverage * len(new_cols))
        cand, count = members[enough], hits[enough].astype(float)
        bin_mass = np.bincount(graph.col_bin[new_cols], weights=pop[graph.col_item[new_cols]],
                               minlength=n_bins)
        if n_bins > 1:
            expected = _row_dot(graph.activity, cand, bin_mass)
        else:
            expected = graph.activity_total[cand] * bin_mass[0]
        new_users = cand[_significant(count, expected, test.min_lift, alpha_u)]
        if np.array_equal(new_users, users) and np.array_equal(new_cols, cols):
            break
        users, cols = new_users, new_cols
    return users, cols


def judge_block(graph: BlockGraph, block: tuple[np.ndarray, np.ndarray], test: BlockTest = BlockTest()
                ) -> Block | None:
    """Score a grown block against the leave-the-block-out null; None unless it passes as a whole."""
    users, cols = block
    if len(users) < test.min_users or len(distinct(graph.col_item[cols])) < test.min_cols:
        return None
    pop = _outside_popularity(graph, _gather(graph.A, users), test)
    sub = graph.A[users][:, cols]
    user_edges = np.asarray(sub.sum(axis=1)).ravel()
    col_edges = np.asarray(sub.sum(axis=0)).ravel()
    bin_mass = np.bincount(graph.col_bin[cols], weights=pop[graph.col_item[cols]],
                           minlength=graph.activity.shape[1])
    user_expected = graph.activity[users] @ bin_mass
    per_bin = np.asarray(graph.activity[users].sum(axis=0)).ravel()
    col_expected = pop[graph.col_item[cols]] * per_bin[graph.col_bin[cols]]
    edges, expected = int(user_edges.sum()), max(float(user_expected.sum()), 1e-12)
    # Scan statistic: the block was picked from every users x columns block of its shape, so its tail
    # probability must beat alpha divided by how many there are. -log P(X >= edges) is at least the Poisson
    # log-likelihood ratio (Chernoff), which stays finite where the tail underflows.
    surprise = edges * np.log(edges / expected) - edges + expected
    n_u, n_c = graph.A.shape
    shapes = _log_choose(n_u, len(users)) + _log_choose(n_c, len(cols)) + np.log(1.0 / test.alpha)
    if edges < test.min_lift * expected or surprise / test.overdispersion < shapes:
        return None
    return Block(users=users, cols=cols, items=distinct(graph.col_item[cols]), user_edges=user_edges,
                 user_expected=user_expected, col_edges=col_edges, col_expected=col_expected,
                 edges=edges, expected=expected, surprise=float(surprise), threshold=float(shapes))


def _log_choose(n: int, k: int) -> float:
    return float(gammaln(n + 1) - gammaln(k + 1) - gammaln(n - k + 1))


SEED_CHUNK = 256  # seed columns per sparse product in `promising_seeds`


def promising_seeds(graph: BlockGraph, cols: np.ndarray, test: BlockTest = BlockTest(), slack: float = 3.0
                    ) -> tuple[np.ndarray, np.ndarray]:
    """The first column step of `grow` for many seed columns at once, by one sparse product: a seed is
    promising when its users touch at least `min_cols - 1` other columns together (>= `min_users` of them),
    each `min_lift / slack` times above that column's item popularity. The popularity here includes the
    seed's own users (cheaper, and conservative), hence the slack. Returns (promising columns, strength), to
    grow the strongest first."""
    if len(cols) == 0:
        return cols, np.zeros(0)
    # In chunks of seeds: the co-count matrix holds every column each seed's users touch, which over a long
    # window is tens of millions of entries for a few thousand seeds (and each seed's answer is its own).
    if len(cols) > SEED_CHUNK:
        parts = [promising_seeds(graph, cols[k:k + SEED_CHUNK], test, slack)
                 for k in range(0, len(cols), SEED_CHUNK)]
        return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])
    seeds_T = graph.AT[cols]
    co = (seeds_T @ graph.A).tocsr()  # seed x column co-counts, rows in order
    # Most co-counts are 1 or 2: drop them before any arithmetic, and find the rows of the rest only
    enough = np.flatnonzero(co.data >= test.min_users)
    row = np.searchsorted(co.indptr, enough, side="right") - 1
    col, count = co.indices[enough], co.data[enough]
    per_bin = (seeds_T @ graph.activity).toarray()  # seed x bin: the seed users' activity
    pop = graph.item_degree / max(graph.n_edges, 1)
    partner_item = graph.col_item[col]
    expected = np.maximum(pop[partner_item] * per_bin[row, graph.col_bin[col]], 1e-12)
    strong = (partner_item != graph.col_item[cols[row]]) & (count >= test.min_lift / slack * expected)
    row, count, expected = row[strong], count[strong], expected[strong]
    keep = np.bincount(row, minlength=len(cols)) >= test.min_cols - 1
    # Rank by the strongest partner's Poisson log-likelihood ratio, c log(c/e) - c + e (CrossSpot's
    # suspiciousness of the two-column block): fifty accounts on the same niche pair outrank a taste cluster
    # of five, however many niche partners the cluster has. Rows are sorted, so a segmented max does it.
    strength = np.zeros(len(cols))
    if len(row):
        lr = count * np.log(count / expected) - count + expected
        starts = np.flatnonzero(np.r_[True, row[1:] != row[:-1]])
        strength[row[starts]] = np.maximum.reduceat(lr, starts)
    return cols[keep], strength[keep]
