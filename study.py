#!/usr/bin/env python
"""The source study's comparison tables in one command: archs x epochs, dataset size or batch size.

    python study.py --flagfile=flags/studies/epochs.flags
    python study.py --flagfile=flags/studies/demo_epochs.flags     # CPU-sized, on the demo data
"""

from absl import flags

from celeba_gender.cli import study

flags.adopt_module_key_flags(study)

if __name__ == "__main__":
    study.run()
