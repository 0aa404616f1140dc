"""The settings of one study (:class:`StudyConfig`, the flags of study.py), importable without TensorFlow so
that ``study.py --help`` and flag errors cost no TensorFlow start-up."""

from __future__ import annotations

import dataclasses
import os
import sys

from celeba_gender.core import options
from celeba_gender.core.errors import UserError
from celeba_gender.core.options import option
from celeba_gender.models import registry as arch_registry

VARY = ("epochs", "dataset_size", "batch", "none")


class StudyError(UserError):
    """A study that cannot go on; the message says which run failed and where its log is."""


@dataclasses.dataclass(frozen=True)
class StudyConfig:
    """One study: which archs, which setting varies over which values, how each run is configured."""

    name: str = option(help="Study name (its directory is studies/<name> unless --study_dir). Required.")
    archs: tuple[str, ...] = option(help="Architectures to compare (comma-separated). Required.",
                                    choices=arch_registry.ARCH_NAMES)
    vary: str = option("epochs", "The setting that varies: epochs, dataset_size (via the converter's --limit), batch, "
                       "or none (compare archs only).", choices=VARY)
    values: tuple[int, ...] = option((), "Values of the varied setting, e.g. 5,10,15.", lower=1)
    repeats: int = option(1, "Seeds per cell (--seed, --seed+1, ...); tables show mean ± std.", lower=1)
    seed: int = option(42, "First seed.")
    checkpoint: str = option("best", "Which checkpoint of each run the tables report: best (validation accuracy) or "
                             "last (what the source study reported). A finished run tested on the other one is "
                             "evaluated on this one.", choices=("best", "last"))
    study_dir: str = option("", "Where runs, logs and tables go; default studies/<name>.", path=True)
    train_flagfile: str = option("", "The training flagfile of every run (found as --flagfile finds it: here, "
                                 "else among the packaged ones); {arch} is replaced by the arch. Without it each run "
                                 "trains with its arch's recipe.", path=True)
    data_dir: str = option("tfrecords", "Shards of every run (unless --vary=dataset_size).", path=True)
    convert_flagfile: str = option("", "The converter's flagfile for --vary=dataset_size (--limit and --out_dir "
                                   "are added per size).", path=True)
    python: str = option(sys.executable, "The Python that runs the training and conversion commands.", flag=False)

    def __post_init__(self):
        options.validate(self)
        if self.vary != "none" and not self.values:
            raise StudyError(f"--vary={self.vary} needs --values, e.g. --values=5,10,15.")

    @property
    def directory(self) -> str:
        return self.study_dir or os.path.join("studies", self.name)
