"""The commands as a user meets them, whichever way they are run: the packaged flagfiles found from any folder,
messages that name the command the way it was run, and ``--help``, flag errors and ``--version`` without
TensorFlow (checked with a ``tensorflow`` and a ``keras`` on the path that refuse to import)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from celeba_gender.cli import flagfiles
from celeba_gender.core import invocation

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src"
# command -> (how a launcher, the module, and a console script name it)
COMMANDS = {
    "train": ("train.py", "celeba_gender.cli.train", "celeba-train"),
    "evaluate": ("evaluate.py", "celeba_gender.cli.evaluate", "celeba-evaluate"),
    "predict": ("predict.py", "celeba_gender.cli.predict", "celeba-predict"),
    "study": ("study.py", "celeba_gender.cli.study", "celeba-study"),
    "make_tfrecords": ("make_tfrecords.py", "celeba_gender.cli.convert", "celeba-make-tfrecords"),
    "synthetic": (None, "celeba_gender.cli.synthetic", "celeba-synthetic"),
}
# What pip's console-script stub does: the script's name in argv[0], then the entry point.
_CONSOLE = "import sys; sys.argv[0] = {path!r}; from {module} import run; run()"


@pytest.fixture(scope="module")
def no_tensorflow(tmp_path_factory) -> dict:
    """An environment where importing tensorflow, keras or OpenCV's cv2 fails at once."""
    folder = tmp_path_factory.mktemp("no_tensorflow")
    for name in ("tensorflow", "keras", "cv2"):  # cv2: OpenCV is an extra (celeba-gender[detect])
        (folder / name).mkdir()
        (folder / name / "__init__.py").write_text(f"raise ImportError('{name} must not be imported here')\n")
    env = {k: v for k, v in os.environ.items() if k != invocation.ENV}
    env["PYTHONPATH"] = os.pathsep.join([str(folder), str(SRC), os.environ.get("PYTHONPATH", "")])
    return env


def run_as(way: str, name: str, *args: str, env: dict, cwd: Path) -> subprocess.CompletedProcess:
    """Runs command ``name`` as a launcher script, a module or a console script (``way``)."""
    launcher, module, console = COMMANDS[name]
    if way == "launcher":
        argv = [sys.executable, str(ROOT / launcher)]
    elif way == "module":
        argv = [sys.executable, "-m", module]
    else:
        argv = [sys.executable, "-c", _CONSOLE.format(path=f"/opt/venv/bin/{console}", module=module)]
    return subprocess.run([*argv, *args], env=env, cwd=cwd, capture_output=True, text=True, timeout=120)


def error_line(result: subprocess.CompletedProcess, prog: str) -> str:
    assert result.returncode == 2, (result.stdout[-1000:], result.stderr[-2000:])
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith(f"{prog}: error: "), result.stderr[-2000:]
    return lines[0]


@pytest.mark.parametrize("name", list(COMMANDS))
def test_help_flag_errors_and_version_never_import_tensorflow(name, no_tensorflow, tmp_path):
    way = "module" if name == "synthetic" else "console"
    shown = run_as(way, name, "--help", env=no_tensorflow, cwd=tmp_path)
    assert "must not be imported" not in shown.stderr + shown.stdout, shown.stderr[-2000:]
    flags = ("out_dir", "run_dir", "arch", "archs")
    assert "flags:" in shown.stdout and any(f"--{flag}:" in shown.stdout for flag in flags), \
        shown.stdout[-2000:]
    assert "source/{alexnet" in shown.stdout and "smoke.flags" in shown.stdout  # what ships, in --help
    assert "--[no]version" in shown.stdout
    assert "Traceback" not in shown.stderr

    bogus = error_line(run_as(way, name, "--bogus=1", env=no_tensorflow, cwd=tmp_path), name)
    expected = COMMANDS[name][2] if way == "console" else f"python -m {COMMANDS[name][1]}"
    assert bogus.endswith(f"unknown flag --bogus: {expected} --help lists the flags."), bogus

    version = run_as(way, name, "--version", env=no_tensorflow, cwd=tmp_path)
    assert version.returncode == 0 and "celeba-gender 0.1.0" in version.stdout, version.stderr[-2000:]


@pytest.mark.parametrize("args, expected", [
    (("train", "--arch=tiny", "--epochs=2", "--warmup_epochs=3"), "--warmup_epochs=3 must be below --epochs=2"),
    (("train", "--arch=tiny", "--batch=0"), "--batch"),
    (("evaluate",), "--run_dir"),
    (("predict", "--run_dir=somewhere"), "name at least one image file or folder: celeba-predict --run_dir"),
    (("predict", "a.jpg"), "give --run_dir=RUN (its export/model.keras answers) or --model=FILE"),
    (("predict", "--model=r/export/model.tflite", "--explain", "a.jpg"), "--explain needs the Keras model"),
    (("predict", "--run_dir=r", "--detect_faces", "a.jpg"),
     "--detect_faces needs OpenCV (and MTCNN, which finds the landmarks): pip install"),
    (("study", "--name=x", "--archs=tiny", "--vary=epochs"), "--vary=epochs needs --values"),
])
def test_bad_settings_are_refused_before_tensorflow_is_imported(args, expected, no_tensorflow, tmp_path):
    line = error_line(run_as("console", *args, env=no_tensorflow, cwd=tmp_path), args[0])
    assert expected in line and "must not be imported" not in line, line


def test_the_commands_name_themselves_the_way_they_were_run(no_tensorflow, tmp_path):
    launcher = error_line(run_as("launcher", "train", "--bogus=1", env=no_tensorflow, cwd=tmp_path), "train")
    assert f"python {ROOT / 'train.py'} --help lists the flags" in launcher
    module = error_line(run_as("module", "train", "--epoch=1", env=no_tensorflow, cwd=tmp_path), "train")
    assert "did you mean --epochs? python -m celeba_gender.cli.train --help" in module


def test_library_messages_name_the_commands_as_the_user_runs_them(monkeypatch):
    monkeypatch.setattr(invocation, "_style", invocation._style)  # restored afterwards, as the environment is
    monkeypatch.setenv(invocation.ENV, "")
    cases = {("/venv/bin/celeba-train", None): ("celeba-make-tfrecords", "celeba-synthetic"),
             ("../repo/train.py", None): ("python ../repo/make_tfrecords.py", "python -m celeba_gender.cli.synthetic"),
             ("/x/celeba_gender/cli/train.py", "celeba_gender.cli.train"):
                 ("python -m celeba_gender.cli.convert", "python -m celeba_gender.cli.synthetic")}
    for (argv0, main_module), (converter, synthetic) in cases.items():
        monkeypatch.setenv(invocation.ENV, "")
        invocation.set_style(argv0, main_module)
        assert (invocation.command("make_tfrecords"), invocation.command("synthetic")) == (converter, synthetic)
        # a command it starts (a study's runs, python -m ...) inherits the way the user ran the first one
        inherited = os.environ[invocation.ENV]
        invocation.set_style("/venv/lib/celeba_gender/cli/train.py", "celeba_gender.cli.train")
        assert invocation.command("make_tfrecords") == converter and os.environ[invocation.ENV] == inherited


def test_a_missing_manifest_names_the_converter_as_the_user_runs_it(tmp_path):
    """A console-script user is told to run celeba-make-tfrecords (it said `python make_tfrecords.py`)."""
    env = {k: v for k, v in os.environ.items() if k != invocation.ENV}
    env["PYTHONPATH"] = os.pathsep.join([str(SRC), os.environ.get("PYTHONPATH", "")])
    (tmp_path / "empty").mkdir()
    result = run_as("console", "train", "--arch=tiny", f"--data_dir={tmp_path / 'empty'}", "--noprogress",
                    f"--runs_root={tmp_path / 'runs'}", env=env, cwd=tmp_path)
    lines = [line for line in result.stderr.splitlines() if line.startswith("train: error: ")]
    assert result.returncode == 2 and len(lines) == 1, result.stderr[-2000:]
    line = lines[0]
    assert f"(celeba-make-tfrecords --out_dir={tmp_path / 'empty'})" in line, line


def test_a_packaged_flagfile_is_found_from_any_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    smoke = flagfiles.resolve("smoke.flags")
    assert Path(smoke) == flagfiles.PACKAGED / "smoke.flags"
    inception = flagfiles.PACKAGED / "source" / "inceptionv3.flags"
    assert flagfiles.resolve("flags/source/inceptionv3.flags") == str(inception)
    assert {"demo.flags", "smoke.flags", "source/common.flags", "studies/epochs.flags"} <= set(flagfiles.packaged())
    # a file here wins over the packaged one of the same name
    (tmp_path / "smoke.flags").write_text("--epochs=3\n")
    assert flagfiles.resolve("smoke.flags") == "smoke.flags"
    assert flagfiles.expand(["train", "--flagfile=smoke.flags", "--lr=1"]) == ["train", "--epochs=3", "--lr=1"]


def test_a_packaged_flagfile_includes_packaged_files(tmp_path, monkeypatch):
    """source/alexnet.flags includes source/common.flags: the packaged one, even where the current folder has a file
    of that name; a user's flagfile may include packaged ones by their names."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "source").mkdir()
    (tmp_path / "source" / "common.flags").write_text("--lr=123\n")
    expanded = flagfiles.expand(["train", "--flagfile", "source/alexnet.flags", "--batch=8"])
    common = [line.strip() for line in (flagfiles.PACKAGED / "source" / "common.flags").read_text().splitlines()
              if line.startswith("--")]
    assert expanded[1:1 + len(common)] == common and "--lr=123" not in expanded
    assert expanded[-4:] == ["--arch=alexnet", "--weights=none", "--head=fc4096", "--batch=8"]
    (tmp_path / "mine.flags").write_text("# mine\n--flagfile=flags/smoke.flags\n\n// note\n--epochs=9\n")
    assert flagfiles.expand(["train", "--flagfile=mine.flags"])[-2:] == ["--precision=float32", "--epochs=9"]


def test_flagfile_errors_are_one_line(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(flagfiles.FlagfileError, match=r"--flagfile=nosuch.flags: no such file here, nor among .*"
                                                      r"smoke.flags, convert/\{demo,official,source\}.flags"):
        flagfiles.expand(["train", "--flagfile=nosuch.flags"])
    (tmp_path / "a.flags").write_text("--flagfile=b.flags\n")
    (tmp_path / "b.flags").write_text("--flagfile=a.flags\n")
    with pytest.raises(flagfiles.FlagfileError, match=r"includes itself \(a.flags -> b.flags -> a.flags\)"):
        flagfiles.expand(["train", "--flagfile=a.flags"])


def test_an_unknown_flagfile_is_one_error_line(no_tensorflow, tmp_path):
    """It was absl's `ERROR:: Unable to open flagfile` with a doubled `ERROR::` and no word of what ships."""
    line = error_line(run_as("console", "train", "--flagfile=flags/nosuch.flags", env=no_tensorflow, cwd=tmp_path),
                      "train")
    assert "ERROR::" not in line and "no such file here, nor among the flagfiles that ship" in line, line


def test_the_commands_find_packaged_flagfiles_from_an_empty_folder(no_tensorflow, tmp_path):
    """Parsed through the command itself: the flagfile's settings reach the config (a setting it refuses shows
    that smoke.flags was read: it trains 1 epoch, so a warm-up of 1 epoch is refused)."""
    line = error_line(run_as("console", "train", "--flagfile=smoke.flags", "--warmup_epochs=1", env=no_tensorflow,
                             cwd=tmp_path), "train")
    assert "--warmup_epochs=1 must be below --epochs=1" in line, line
