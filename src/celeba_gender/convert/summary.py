"""What the converter prints at the end, from its manifest alone: the table of splits and what was dropped.

    split         images    Female      Male  shards       MB
    train          2,399     1,420       979       8     23.7
    ...
    balanced: train 441 dropped (Female 1,420 -> 979), validation 0 dropped, test 21 dropped (Female 158 -> 137)
"""

from __future__ import annotations

import os


from celeba_gender.shards import shard_dir


def _table(manifest: dict) -> list[str]:
    """One row per split; each class column as wide as its name (``not_Eyeglasses``) needs."""
    c0, c1 = manifest["class_names"]
    w0, w1 = max(10, len(c0) + 2), max(10, len(c1) + 2)
    lines = [f"{'split':<11}{'images':>9}{c0:>{w0}}{c1:>{w1}}{'shards':>8}{'MB':>9}"]
    for split, info in manifest["splits"].items():
        cc = info["class_counts"]
        lines.append(f"{split:<11}{info['count']:>9,}{cc[c0]:>{w0},}{cc[c1]:>{w1},}{len(info['shards']):>8}"
                     f"{info['bytes'] / 2**20:>9.1f}")
    total = sum(i["count"] for i in manifest["splits"].values())
    lines.append(f"{'total':<11}{total:>9,}")
    return lines


def _balance_line(manifest: dict) -> str | None:
    """Which splits --balance undersampled and what it dropped (``balanced: none`` with --nobalance)."""
    balance = manifest.get("balance")
    if balance is None:
        return "balanced: none (--nobalance keeps every image)" if "balance" in manifest else None
    parts = []
    for where, b in balance.items():
        if "missing" in b:
            parts.append(f"{where} not balanced (it has no {b['missing']} images)")
            continue
        change = f" ({b['class']} {b['from']:,} -> {b['to']:,})" if b["dropped"] else ""
        parts.append(f"{where} {b['dropped']:,} dropped{change}")
    return "balanced: " + ", ".join(parts)


def _limit_line(manifest: dict) -> str | None:
    limit, usable = manifest["options"].get("limit"), manifest["source"].get("usable_rows")
    if limit and usable is not None and limit > usable:
        return f"--limit={limit:,} is more than the {usable:,} usable rows: all were used"
    return None


def _shards_line(manifest: dict) -> str | None:
    kept, written = manifest.get("shards_kept"), manifest.get("shards_written")
    if not kept:
        return None
    if not written:
        return f"nothing to do: all {kept:,} shards were already written by an earlier run with these options"
    return f"kept {kept:,} shards from an earlier run, wrote {written:,}"


def format_summary(manifest: dict, out_dir: str) -> str:
    """The end-of-run text: per split images, classes, shards, MB; balance, drops by reason, notes."""
    lines = _table(manifest)
    if manifest["dropped_counts"]:
        lines.append("dropped: " + ", ".join(f"{k} {v:,}" for k, v in manifest["dropped_counts"].items())
                     + f"  (each listed in {os.path.join(out_dir, shard_dir.MANIFEST)})")
    else:
        lines.append("dropped: none")
    lines += [line for line in (_balance_line(manifest), _limit_line(manifest)) if line]
    sp = manifest.get("source_protocol", manifest.get("seed_protocol"))  # seed_protocol: manifests of earlier versions
    if sp is not None:
        sampled = ", ".join(f"{v:,} {k}" for k, v in sp["sampled_class_counts"].items())
        drawn = " / ".join(f"{v:,}" for v in sp["split_sizes"].values())
        lines.append(f"source protocol: sampled {sp['sampled']:,} ({sampled}), kept {sp['selected']:,} after "
                     f"balancing, drawn train / validation / test {drawn}")
    lines += [f"warning: {w}" for w in manifest.get("warnings", [])]
    if (shards := _shards_line(manifest)) is not None:
        lines.append(shards)
    if "seconds" in manifest:
        lines.append(f"{manifest['source']['scanned']:,} images scanned in {manifest['seconds']:.1f} s "
                     f"({manifest['source']['scanned'] / max(manifest['seconds'], 1e-9):,.0f} images/s); "
                     f"shards and manifest.json in {out_dir}")
    return "\n".join(lines)
