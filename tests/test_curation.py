"""Planning on tables alone: the source's split, identity split, balancing, duplicate groups."""

import numpy as np
import pandas as pd
import pytest
from sklearn.model_selection import train_test_split

from celeba_gender.convert import curation


def _label_table(n_female: int, n_male: int, seed: int = 0) -> pd.DataFrame:
    """A table shaped like read_celeba()'s, labels only, rows in a shuffled file order."""
    labels = np.array([0] * n_female + [1] * n_male)
    labels = labels[np.random.default_rng(seed).permutation(len(labels))]
    n = len(labels)
    return pd.DataFrame({"image_id": [f"{i + 1:06d}.jpg" for i in range(n)], "label": labels,
                         "identity": np.arange(n) // 10, "partition": np.zeros(n, int)})


def _source_notebook(df: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """The source study's code, verbatim in substance (global numpy RNG, sklearn without random_state)."""
    df = df.sample(n=52000, random_state=42)
    df["Gender"] = np.where(df["label"] == 1, "Male", "Female")
    category_count = df["Gender"].value_counts()
    higher_category = list(category_count.index)[0]
    np.random.seed(42)
    indices = df[df["Gender"] == higher_category].index
    sample_size = category_count.iloc[0] - category_count.iloc[1]
    drop_sample = np.random.choice(indices, sample_size, replace=False)
    df = df.drop(drop_sample, axis="index")
    train_df, test_df = train_test_split(df, test_size=0.2)
    test_df, validation_df = train_test_split(test_df, test_size=0.33)
    return train_df, validation_df, test_df


def test_source_split_reproduces_the_source_sizes_and_ids():
    # The source's sample of 52,000 rows held 30,351 Female / 21,649 Male.
    table = _label_table(30351, 21649)
    plan, dropped, info = curation.source_split(table, limit=52000, balance=True, seed=42)
    assert info["sampled"] == 52000 and info["sampled_class_counts"] == {0: 30351, 1: 21649}
    assert info["selected"] == 43298 == 2 * 21649
    assert info["split_sizes"] == {"train": 34638, "validation": 2858, "test": 5802}
    assert len(dropped) == 30351 - 21649 and {d.reason for d in dropped} == {"balanced_out"}
    train, validation, test = _source_notebook(table.copy())
    for name, expected in (("train", train), ("validation", validation), ("test", test)):
        got = plan[plan["split"] == name]["image_id"].tolist()
        assert got == expected["image_id"].tolist(), name  # same ids, same order
    # Our version must not touch numpy's global generator.
    np.random.seed(0)
    before = np.random.get_state()[1].copy()
    curation.source_split(table, limit=52000, balance=True, seed=42)
    assert (np.random.get_state()[1] == before).all()


def test_source_split_from_a_larger_table_samples_first():
    table = _label_table(600, 400)
    plan, _, info = curation.source_split(table, limit=500, balance=False, seed=42)
    assert info["sampled"] == 500 and len(plan) == 500
    assert plan["image_id"].is_unique
    assert set(plan["image_id"]) == set(table.sample(n=500, random_state=42)["image_id"])


def test_identity_split_is_identity_disjoint_and_near_its_fractions():
    table = _label_table(700, 500)
    table.loc[:4, "identity"] = -1  # unknown identities are dropped, not guessed
    plan, dropped = curation.identity_split(table, (0.8, 0.1, 0.1), seed=1)
    assert len(dropped) == 5 and {d.reason for d in dropped} == {"no_identity"}
    ids_per_split = plan.groupby("split")["identity"].apply(set)
    assert not ids_per_split["train"] & ids_per_split["test"]
    assert not ids_per_split["train"] & ids_per_split["validation"]
    assert not ids_per_split["validation"] & ids_per_split["test"]
    fractions = plan["split"].value_counts(normalize=True)
    assert abs(fractions["train"] - 0.8) < 0.03 and abs(fractions["test"] - 0.1) < 0.03


def test_balance_per_split_equalises_classes_in_every_split():
    table = _label_table(700, 300).assign(split=lambda d: np.array(["train", "validation", "test"])[d.index % 3])
    plan, dropped = curation.balance_per_split(table, seed=5)
    for split, part in plan.groupby("split"):
        counts = part["label"].value_counts()
        assert counts[0] == counts[1], split
    assert len(dropped) == len(table) - len(plan)
    again, _ = curation.balance_per_split(table, seed=5)
    assert again["image_id"].tolist() == plan["image_id"].tolist()  # seeded


def _hex(value: int) -> str:
    return f"{value:064x}"  # a 256-bit hash as scan.py writes it


def test_duplicate_groups_keep_the_smallest_id_and_join_near_copies():
    base = 0x1234_5678_9ABC_DEF0 << 128 | 0xFEDC_BA98_7654_3210
    table = pd.DataFrame({
        "image_id": ["000005.jpg", "000001.jpg", "000003.jpg", "000002.jpg", "000004.jpg"],
        "sha256": ["a", "a", "b", "c", "d"],
        # 000003 and 000004 differ in 2 bits; 000002 is far from everything.
        "phash": [_hex(0x0F0F), _hex(0x0F0F), _hex(base), _hex((1 << 256) - 1 - base), _hex(base ^ 0b101 << 40)],
    })
    kept, dropped = curation.drop_duplicates(table, "exact")
    assert sorted(kept["image_id"]) == ["000001.jpg", "000002.jpg", "000003.jpg", "000004.jpg"]
    assert [(d.image_id, d.reason, d.detail) for d in dropped] == [("000005.jpg", "duplicate", "copy of 000001.jpg")]
    kept, dropped = curation.drop_duplicates(table, "near", near_threshold=2)
    assert sorted(kept["image_id"]) == ["000001.jpg", "000002.jpg", "000003.jpg"]
    assert ("000004.jpg", "near_duplicate") in [(d.image_id, d.reason) for d in dropped]
    kept, _ = curation.drop_duplicates(table, "near", near_threshold=1)
    assert "000004.jpg" in set(kept["image_id"])
    kept, dropped = curation.drop_duplicates(table, "none")
    assert len(kept) == 5 and not dropped


@pytest.mark.parametrize("threshold", [0, 5, 12])
def test_near_pairs_match_brute_force(threshold):
    rng = np.random.default_rng(threshold)
    base = rng.integers(0, 256, size=(30, 32), dtype=np.uint8)
    near = base.copy()
    for i in range(len(near)):  # copy i gets i % 16 flipped bits
        for bit in rng.choice(256, size=i % 16, replace=False):
            near[i, bit // 8] ^= np.uint8(1 << (bit % 8))
    hashes = np.concatenate([base, near])
    dist = np.unpackbits(hashes[:, None, :] ^ hashes[None, :, :], axis=-1).sum(-1)
    brute = {(i, j) for i in range(len(hashes)) for j in range(i + 1, len(hashes)) if dist[i, j] <= threshold}
    assert len(brute) >= threshold  # the test data has pairs near the threshold
    assert set(curation._near_pairs(hashes, threshold)) == brute


@pytest.mark.parametrize("fractions", [(0.9, 0.1, 0.0), (0.9, 0.0, 0.1), (1.0, 0.0, 0.0)])
def test_identity_split_leaves_a_split_asked_to_be_empty_empty(fractions):
    table = _label_table(700, 500)
    plan, _ = curation.identity_split(table, fractions, seed=1)
    counts = plan["split"].value_counts()
    for split, fraction in zip(curation.SPLITS, fractions):
        assert (counts.get(split, 0) > 0) == (fraction > 0), (split, counts.to_dict())
    assert len(plan) == len(table)


def test_near_pairs_need_no_numpy_2(monkeypatch):
    # setup.cfg allows NumPy 1.26, which has no np.bitwise_count.
    monkeypatch.delattr(np, "bitwise_count", raising=False)
    hashes = np.array([[0b1111_0000] * 32, [0b1111_0111] + [0b1111_0000] * 31, [0b0000_1111] * 32], dtype=np.uint8)
    assert curation._near_pairs(hashes, 3) == [(0, 1)]  # 3 bits apart; the third is 256 bits from the first
