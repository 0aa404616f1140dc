"""The converter's plan: scanned rows -> duplicates dropped, split, balanced, ordered -> records per shard.

Pure functions of a table and the conversion's options (``convert.ConvertConfig``), so that a rerun plans the
same shards. What each step drops comes back as :class:`celeba.Dropped` entries for the manifest.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from celeba_gender.convert import curation
from celeba_gender.convert.config import ConvertConfig
from celeba_gender.shards import schema
from celeba_gender.convert.celeba import Dropped


def drop_rows(df: pd.DataFrame, mask: np.ndarray, reasons: list[str], details: list[str]) -> list[Dropped]:
    ids = df["image_id"].to_numpy()
    return [Dropped(ids[i], reasons[i], details[i]) for i in np.flatnonzero(mask)]


def shard_items(part: pd.DataFrame, attribute_names: list[str], names: tuple[str, str]
                 ) -> list[tuple[str, schema.ExampleFields]]:
    """(file path, record fields) for each planned row of one split, in order."""
    columns = zip(part["path"], part["image_id"], part["label"], part["sha256"], part["height"], part["width"],
                  part["identity"], part[attribute_names].to_numpy())
    return [(path, schema.ExampleFields(filename=image_id, label=int(label), class_text=names[int(label)],
                                        sha256=sha, height=int(h), width=int(w), identity=int(identity),
                                        attributes=tuple(int(x) for x in attrs)))
            for path, image_id, label, sha, h, w, identity, attrs in columns]


def curate(config: ConvertConfig, usable: pd.DataFrame, balanced_out: list[Dropped], names: tuple[str, str]
            ) -> tuple[pd.DataFrame, list[Dropped], dict | None]:
    """Duplicates, split and balance of the usable rows: the plan (rows with a ``split``), what it drops, and
    what balancing did per split (None with --nobalance)."""
    deduped, dropped = curation.drop_duplicates(usable, config.dedupe, config.near_threshold)
    if config.split == "source":
        # The draws saw every row, as the source's did; copies are resolved after them, so that no two copies
        # of an image can sit in different splits while the drawn ids stay the source's.
        return deduped, balanced_out + dropped, None
    if config.split == "official":
        plan, split_dropped = curation.official_split(deduped)
    else:
        plan, split_dropped = curation.identity_split(deduped, config.split_fractions, config.seed)
    dropped += split_dropped
    balance = None
    if config.balance:
        before = plan
        plan, bal_dropped = curation.balance_per_split(plan, config.seed)
        dropped += bal_dropped
        balance = {s: _balance_entry(before[before["split"] == s], plan[plan["split"] == s], names)
                   for s in curation.SPLITS}
    return curation.order_within_splits(plan, config.seed), dropped, balance


def _balance_entry(before: pd.DataFrame, after: pd.DataFrame, names: tuple[str, str]) -> dict:
    """What undersampling did to one split: images dropped, and the class that lost them (from -> to); a
    split lacking one class is left as it is (``missing`` names the class)."""
    b, a = before["label"].value_counts(), after["label"].value_counts()
    absent = [names[c] for c in (0, 1) if not b.get(c, 0)]
    if absent and len(before):
        return {"dropped": 0, "missing": absent[0]}
    k = max((0, 1), key=lambda c: int(b.get(c, 0)) - int(a.get(c, 0)))
    return {"dropped": len(before) - len(after), "class": names[k], "from": int(b.get(k, 0)), "to": int(a.get(k, 0))}


def source_balance(source_info: dict, names: tuple[str, str]) -> dict:
    """The source protocol balances once, before the split."""
    counts = source_info["sampled_class_counts"]
    k = max((0, 1), key=lambda c: counts[c])
    kept = source_info["selected"] // 2
    return {"before the split": {"dropped": source_info["sampled"] - source_info["selected"], "class": names[k],
                                 "from": counts[k], "to": kept}}


def straddling_copies(plan: pd.DataFrame, config: ConvertConfig) -> list[str]:
    """With --dedupe=none, says how many byte-identical copies ended up in different splits."""
    if config.dedupe != "none" or plan.empty:
        return []
    splits_per_hash = plan.groupby("sha256")["split"].nunique()
    n = int((splits_per_hash > 1).sum())
    return [f"{n} groups of byte-identical images are in more than one split (--dedupe=none): "
            "the test set sees training images."] if n else []
