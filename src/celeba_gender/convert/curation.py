"""Sampling, duplicates, balancing and splits: a table in, a plan of (image, label, split) out. No TF.

Every function is a pure function of its arguments (tables and a seed), so a plan can be recomputed and
compared, which is what makes an interrupted conversion resumable.

The ``source`` split replays the source study's random draws exactly (see docs/source_study.md), with the
same generators in the same order:

    df.sample(n=limit, random_state=seed)                      # pandas, over every attribute row
    np.random.seed(seed); np.random.choice(majority_index, n_majority - n_minority, replace=False)
    train_test_split(df, test_size=0.2)                         # draws from the same global RandomState
    train_test_split(test_df, test_size=0.33) -> (test, validation)

We use one ``np.random.RandomState(seed)`` object instead of numpy's global one: sklearn and numpy's
legacy functions draw from either identically, and the engine must not touch global state.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from celeba_gender.convert.celeba import Dropped

SPLITS = ("train", "validation", "test")
SPLIT_MODES = ("official", "identity", "source")
DEDUPE_MODES = ("none", "exact", "near")
# Differing bits (of image_scan.py's 256-bit pHash) below which two images count as near copies.
NEAR_THRESHOLD = 12
# Set bits of every byte value: np.bitwise_count needs NumPy 2, and setup.cfg still allows NumPy 1.26.
_POPCOUNT = np.array([bin(i).count("1") for i in range(256)], dtype=np.uint8)


def sample_limit(table: pd.DataFrame, limit: int | None, seed: int) -> pd.DataFrame:
    """``limit`` rows drawn like the source study (``df.sample(n, random_state=seed)``), all of them
    (shuffled the same way) when the table is smaller; the table as it is when there is no limit.
    """
    if not limit:
        return table
    return table.sample(n=min(limit, len(table)), random_state=seed)


# --- duplicates -----------------------------------------------------------------------------------------

class _UnionFind:
    def __init__(self, n: int):
        self.parent = np.arange(n)

    def find(self, i: int) -> int:
        root = i
        while self.parent[root] != root:
            root = self.parent[root]
        while self.parent[i] != root:  # path compression
            self.parent[i], i = root, self.parent[i]
        return root

    def union(self, a: int, b: int) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            self.parent[max(ra, rb)] = min(ra, rb)


def _near_pairs(hashes: np.ndarray, threshold: int) -> list[tuple[int, int]]:
    """Pairs of rows whose perceptual hashes (uint8 array, one row of bytes per image) differ in at most
    ``threshold`` bits.

    Pigeonhole: cut the hash into threshold+1 bands of whole bytes; two hashes within the threshold agree
    exactly on at least one band, so only rows sharing a band value are compared, not all n^2 pairs.
    """
    n, nbytes = hashes.shape
    if threshold + 1 > nbytes:
        raise ValueError(f"near_threshold must be below {nbytes} for {nbytes * 8}-bit hashes")
    edges = np.linspace(0, nbytes, threshold + 2).astype(int)
    pairs: set[tuple[int, int]] = set()
    for lo, hi in zip(edges[:-1], edges[1:]):
        _, key = np.unique(hashes[:, lo:hi], axis=0, return_inverse=True)
        order = np.argsort(key.ravel(), kind="stable")
        boundaries = np.flatnonzero(np.diff(key.ravel()[order])) + 1
        for group in np.split(order, boundaries):
            if len(group) < 2:
                continue
            h = hashes[group]
            dist = _POPCOUNT[h[:, None, :] ^ h[None, :, :]].sum(axis=-1, dtype=np.int64)
            for a, b in zip(*np.nonzero(np.triu(dist <= threshold, k=1))):
                pairs.add((int(group[a]), int(group[b])))
    return sorted(pairs)


def hex_hashes(column) -> np.ndarray:
    """Hex perceptual hashes (scan.ScanResult.phash) as a (rows, bytes) uint8 array."""
    return np.array([np.frombuffer(bytes.fromhex(h), dtype=np.uint8) for h in column], dtype=np.uint8)


def duplicate_groups(table: pd.DataFrame, mode: str, near_threshold: int = NEAR_THRESHOLD) -> np.ndarray:
    """For each row, the position of its group's representative (itself when it has no copies).

    ``exact`` groups byte-identical files (``sha256`` column); ``near`` also joins files whose perceptual
    hashes (``phash`` column, hex) are within ``near_threshold`` bits. The representative of a group is the
    member with the smallest image id, so the choice does not depend on row order.
    """
    n = len(table)
    if mode == "none" or n == 0:
        return np.arange(n)
    # Position order by image id, so union-find's "smaller root wins" keeps the smallest id.
    by_id = np.argsort(table["image_id"].to_numpy(), kind="stable")
    rank = np.empty(n, dtype=np.int64)
    rank[by_id] = np.arange(n)
    uf = _UnionFind(n)
    sha_ranks: dict[str, int] = {}
    for r, sha in zip(rank, table["sha256"].to_numpy()):
        other = sha_ranks.setdefault(sha, r)
        uf.union(other, r)
    if mode == "near":
        for a, b in _near_pairs(hex_hashes(table["phash"]), near_threshold):
            uf.union(rank[a], rank[b])
    return by_id[np.array([uf.find(r) for r in rank], dtype=np.int64)]


def drop_duplicates(table: pd.DataFrame, mode: str,
                    near_threshold: int = NEAR_THRESHOLD) -> tuple[pd.DataFrame, list[Dropped]]:
    """Keeps one row per duplicate group (the smallest image id); the others are dropped with a reason."""
    rep = duplicate_groups(table, mode, near_threshold)
    positions = np.arange(len(table))
    keep = rep == positions
    ids = table["image_id"].to_numpy()
    sha = table["sha256"].to_numpy() if len(table) else np.array([])
    dropped = [Dropped(ids[i], "duplicate" if sha[i] == sha[rep[i]] else "near_duplicate",
                       f"copy of {ids[rep[i]]}") for i in positions[~keep]]
    return table[keep], dropped


# --- splits and balance ---------------------------------------------------------------------------------

def _undersample(df: pd.DataFrame, rs: np.random.RandomState, why: str) -> tuple[pd.DataFrame, list[Dropped]]:
    """Drops random rows of the larger class until both classes have the smaller class's count.

    Exactly the source's calls: ``value_counts()`` (largest first), then ``choice(majority_index,
    difference, replace=False)``, which draws a permutation of the majority even when the difference is 0.
    """
    counts = df["label"].value_counts()
    if len(counts) < 2:
        return df, []
    majority = df.index[df["label"] == counts.index[0]]
    drop = rs.choice(majority, counts.iloc[0] - counts.iloc[1], replace=False)
    dropped = [Dropped(i, "balanced_out", why) for i in df.loc[drop, "image_id"]]
    return df.drop(drop, axis="index"), dropped


def source_split(table: pd.DataFrame, limit: int | None, balance: bool, seed: int
               ) -> tuple[pd.DataFrame, list[Dropped], dict]:
    """The source study's draws (module docstring). Returns the selected rows with a ``split`` column, in
    the order the source's dataframes had them, the balanced-out rows, and the protocol's counts.
    """
    df = sample_limit(table, limit, seed)
    info = {"sampled": len(df), "sampled_class_counts": _class_counts(df)}
    rs = np.random.RandomState(seed)
    dropped: list[Dropped] = []
    if balance:
        df, dropped = _undersample(df, rs, "majority class undersampled before the split (source protocol)")
    info["selected"] = len(df)
    from sklearn.model_selection import train_test_split  # here: scikit-learn takes a second to import

    train, test = train_test_split(df, test_size=0.2, random_state=rs)
    test, validation = train_test_split(test, test_size=0.33, random_state=rs)
    out = pd.concat([train.assign(split="train"), validation.assign(split="validation"),
                     test.assign(split="test")])
    info["split_sizes"] = {s: int((out["split"] == s).sum()) for s in SPLITS}
    info["split_class_counts"] = {s: _class_counts(out[out["split"] == s]) for s in SPLITS}
    return out, dropped, info


def official_split(table: pd.DataFrame) -> tuple[pd.DataFrame, list[Dropped]]:
    """Splits by list_eval_partition (0 train, 1 validation, 2 test); rows without one are dropped."""
    known = table["partition"].isin([0, 1, 2])
    dropped = [Dropped(i, "no_partition", "not listed in list_eval_partition") for i in table.loc[~known, "image_id"]]
    out = table[known]
    return out.assign(split=np.asarray(SPLITS, dtype=object)[out["partition"].to_numpy()]), dropped


def identity_split(table: pd.DataFrame, fractions: tuple[float, float, float], seed: int
                   ) -> tuple[pd.DataFrame, list[Dropped]]:
    """A random identity-disjoint split: whole identities go to train/validation/test.

    Identities are shuffled with the seed and assigned greedily so that each split's image count
    approaches its fraction; a split whose fraction is 0 gets nothing. Rows without an identity are dropped
    (they could hide a leak).
    """
    known = table["identity"] >= 0
    dropped = [Dropped(i, "no_identity", "not listed in identity_CelebA.txt") for i in table.loc[~known, "image_id"]]
    df = table[known]
    sizes = df.groupby("identity").size()
    rs = np.random.RandomState(seed)
    order = sizes.index.to_numpy()[rs.permutation(len(sizes))]
    targets = np.asarray(fractions, dtype=float) / sum(fractions) * len(df)
    wanted = targets > 0  # a split asked to be empty stays empty (0 / tiny would make it look hungriest)
    filled = np.zeros(3)
    assign = {}
    for ident in order:
        # The split furthest below its target (relative to it) takes the next identity.
        k = int(np.argmin(np.where(wanted, filled / np.where(wanted, targets, 1.0), np.inf)))
        assign[ident] = k
        filled[k] += sizes[ident]
    split_ids = df["identity"].map(assign).to_numpy()
    return df.assign(split=np.asarray(SPLITS, dtype=object)[split_ids]), dropped


def balance_per_split(df: pd.DataFrame, seed: int) -> tuple[pd.DataFrame, list[Dropped]]:
    """Undersamples the majority class inside each split (each split with its own seeded generator)."""
    parts, dropped = [], []
    for k, split in enumerate(SPLITS):
        kept, drop = _undersample(df[df["split"] == split], np.random.RandomState(seed + k),
                                  f"{split} majority class undersampled")
        parts.append(kept)
        dropped += drop
    return pd.concat(parts), dropped


def _class_counts(df: pd.DataFrame) -> dict[int, int]:
    counts = df["label"].value_counts()
    return {int(k): int(counts.get(k, 0)) for k in (0, 1)}


def order_within_splits(df: pd.DataFrame, seed: int) -> pd.DataFrame:
    """A seeded shuffle inside each split, so that every shard holds a random mix of both classes."""
    rs = np.random.RandomState(seed)
    parts = [df[df["split"] == s] for s in SPLITS]
    return pd.concat([p.iloc[rs.permutation(len(p))] for p in parts])
