#!/usr/bin/env python
"""The source study's comparison tables in one command: archs x epochs, dataset size or batch size.

    python study.py --flagfile=studies/epochs.flags
    python study.py --flagfile=studies/demo_epochs.flags   # CPU-sized, on the demo data
"""

from celeba_gender.cli import study

if __name__ == "__main__":
    study.run()
