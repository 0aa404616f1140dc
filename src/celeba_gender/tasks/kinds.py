"""The kinds of labels and how a run picks one: from its settings and the shards' manifest (a new run), or from
what a run recorded (evaluate.py, predict.py, a resumed run).

    task = for_run(manifest, attributes=("Smiling", "Eyeglasses"))   # MultiAttribute
    task = from_record(json.load(open("RUN/export/labels.json")))    # whichever was trained
"""

from __future__ import annotations

import dataclasses

from celeba_gender.tasks.base import Task, TaskError
from celeba_gender.tasks.classification import Classification
from celeba_gender.tasks.multi_attribute import MultiAttribute

KINDS: dict[str, type[Task]] = {kind.kind: kind for kind in (Classification, MultiAttribute)}


def resolve_attributes(requested: tuple[str, ...], available: list[str]) -> tuple[str, ...]:
    """``("all",)`` -> every available attribute; otherwise the names, checked (TaskError naming the unknown
    ones and what exists)."""
    if tuple(requested) == ("all",):
        return tuple(available)
    unknown = [a for a in requested if a not in available]
    if unknown:
        raise TaskError(f"--attributes: {', '.join(unknown)} not among the shards' attributes "
                        f"({', '.join(available)}); or use --attributes=all.")
    if len(set(requested)) != len(requested):
        raise TaskError("--attributes names an attribute twice.")
    return tuple(requested)


def for_run(manifest: dict, attributes: tuple[str, ...] = ()) -> Task:
    """The task of a new run on these shards: one sigmoid per attribute when ``attributes`` names some (or
    ``all``), else the class label the shards were converted for."""
    if attributes:
        return MultiAttribute(resolve_attributes(tuple(attributes), list(manifest["attribute_names"]))
                              ).for_shards(manifest)
    return Classification(tuple(manifest["class_names"]), attribute=manifest["attribute"])


def from_record(record: dict) -> Task:
    """The task a run recorded: config.json's ``task`` or export/labels.json. Records written before tasks
    existed (``class_names`` / ``outputs`` and ``multi_label``) are read too."""
    if "kind" in record:
        kind = KINDS.get(record["kind"])
        if kind is None:
            raise TaskError(f"unknown kind of labels {record['kind']!r} (this version knows {', '.join(KINDS)})")
        names = {f.name for f in dataclasses.fields(kind)}  # labels.json holds more (image size, Grad-CAM layer)
        return kind(**{k: tuple(v) if isinstance(v, list) else v for k, v in record.items() if k in names})
    outputs = tuple(record.get("outputs") or record["class_names"])
    if record.get("multi_label"):
        thresholds = record.get("thresholds")
        return MultiAttribute(outputs, thresholds=tuple(thresholds) if thresholds else None,
                              threshold_metric=record.get("threshold_metric") or "accuracy")
    attribute = outputs[-1]  # class 1 is the attribute itself (Male; Smiling for not_Smiling, Smiling)
    return Classification(outputs, attribute=attribute)


def of_run(config: dict) -> Task:
    """The task a run's config.json records (``task``; a run of an earlier version: its ``outputs`` and its
    model's ``multi_label``)."""
    if config.get("task"):
        return from_record(config["task"])
    return from_record({"outputs": config.get("outputs"), "multi_label": config["model"].get("multi_label")})
