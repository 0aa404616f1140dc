"""What `pip install` gets: the wheel's files and metadata, the sdist's tree, and the pinned versions.

The full check, the wheel installed into a fresh virtual environment and used from an empty folder, is
`make check-package` (.ci/check-package), which CI runs after the suite; these are its cheap parts.
"""

from __future__ import annotations

import configparser
import email
import re
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from celeba_gender.cli import flagfiles

# setuptools stages the sdist in a folder of the tree it builds from: two workers building at once race there.
pytestmark = pytest.mark.xdist_group("package")

ROOT = Path(__file__).resolve().parents[1]
SETUP = configparser.ConfigParser()
SETUP.read(ROOT / "setup.cfg")


def _requirements(text: str) -> list[Requirement]:
    return [Requirement(line.strip()) for line in text.splitlines() if line.strip() and not line.startswith("#")]


def _build(kind: str, tree: Path, out: Path) -> Path:
    """The sdist or wheel setuptools builds from ``tree`` (in this environment, without build isolation)."""
    code = f"from setuptools import build_meta; print(build_meta.build_{kind}({str(out)!r}))"
    done = subprocess.run([sys.executable, "-c", code], cwd=tree, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return out / done.stdout.strip().splitlines()[-1]


@pytest.fixture(scope="session")
def sdist(tmp_path_factory) -> Path:
    return _build("sdist", ROOT, tmp_path_factory.mktemp("sdist"))


@pytest.fixture(scope="session")
def wheel(sdist, tmp_path_factory) -> zipfile.ZipFile:
    """The wheel built from the unpacked sdist, as ``python -m build`` makes it (and never from stale build/)."""
    unpacked = tmp_path_factory.mktemp("unpacked")
    with tarfile.open(sdist) as archive:
        archive.extractall(unpacked)
    (tree,) = unpacked.iterdir()
    return zipfile.ZipFile(_build("wheel", tree, tmp_path_factory.mktemp("wheel")))


def test_the_wheel_ships_the_flagfiles_the_console_scripts_and_the_licence(wheel):
    names = set(wheel.namelist())
    assert {f"celeba_gender/flags/{name}" for name in flagfiles.packaged()} <= names
    assert len(flagfiles.packaged()) >= 20 and "celeba_gender/serve/tflite.py" in names
    info = next(n for n in names if n.endswith(".dist-info/entry_points.txt"))
    scripts = re.findall(r"^(celeba-[\w-]+) = ", wheel.read(info).decode(), re.M)
    assert sorted(scripts) == ["celeba-evaluate", "celeba-make-tfrecords", "celeba-predict", "celeba-study",
                               "celeba-synthetic", "celeba-train"]
    assert any(n.endswith(".dist-info/licenses/LICENSE") or n.endswith(".dist-info/LICENSE") for n in names)


def test_the_wheel_declares_keras_and_keeps_opencv_an_extra(wheel):
    meta = email.message_from_bytes(wheel.read(next(n for n in wheel.namelist() if n.endswith("/METADATA"))))
    required = {canonicalize_name(r.name): r for r in map(Requirement, meta.get_all("Requires-Dist"))
                if not r.marker}
    assert "keras" in required and required["keras"].specifier.contains("3.15.1")
    assert not required["keras"].specifier.contains("4.0.0") and not required["keras"].specifier.contains("2.15.0")
    assert "opencv-python-headless" not in required and "scipy" not in required
    extras = {}
    for r in map(Requirement, meta.get_all("Requires-Dist")):
        if r.marker:
            extras.setdefault(canonicalize_name(r.name), []).append(str(r.marker))
    assert 'extra == "detect"' in extras["opencv-python-headless"] and extras["scipy"] == ['extra == "dev"']
    assert "Programming Language :: Python :: 3.11" in meta.get_all("Classifier")
    # The long description reads on an index page: no link relative to the repository.
    description = meta.get_payload()
    assert "celeba-train" in description and not re.findall(r"\]\((?!https?://|#)[^)]*\)", description)


def test_the_sdist_is_the_source_tree_with_a_runnable_test_set(sdist):
    with tarfile.open(sdist) as archive:
        names = {name.split("/", 1)[1] for name in archive.getnames() if "/" in name}
    tests = {str(p.relative_to(ROOT)) for p in (ROOT / "tests").glob("*.py")}
    assert tests <= names and "tests/conftest.py" in names
    needed = {"LICENSE", "README.md", "Makefile", "constraints.txt", "train.py", "make_tfrecords.py",
              "benchmarks/convert.py", "docs/source_study.md", ".ci/check-package",
              "src/celeba_gender/flags/smoke.flags"}
    assert needed <= names, needed - names
    assert not any("__pycache__" in name or name.startswith("benchmarks/_data") for name in names)


def test_the_constraints_pin_every_requirement_within_its_declared_range():
    pins = {}
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        if line and not line.startswith("#"):
            name, version = line.split("==")
            pins[canonicalize_name(name)] = version
    declared = _requirements(SETUP["options"]["install_requires"])
    for extra in ("dev", "detect"):
        declared += _requirements(SETUP["options.extras_require"][extra])
    for requirement in declared:
        name = canonicalize_name(requirement.name)
        assert name in pins, f"{name} is not pinned in constraints.txt: run make lock"
        assert requirement.specifier.contains(pins[name], prereleases=True), (str(requirement), pins[name])
    makefile = (ROOT / "Makefile").read_text()
    assert "-c constraints.txt" in makefile and re.search(r"^lock:", makefile, re.M)
