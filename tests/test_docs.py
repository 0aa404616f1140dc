"""The README's promises, executed: its commands, the files it names, its flag defaults, the flagfiles' headers.

Every command in a code block of README.md and benchmarks/README.md (and each benchmark named in a heading) is
either run here, as documented plus only size-reducing flags (``--epochs=1``, ``--values=``, ``--archs=``,
``--num_images=``), or listed in SKIPPED with the reason; a command added to a README without either fails
``test_every_documented_command_is_run_here_or_skipped_with_a_reason``. The commands run in a sandbox folder
that looks like a clone (the launchers and ``benchmarks/`` linked in; the flagfiles are the packaged ones), with
a private HOME and no network for the ImageNet and Kaggle downloads, so the offline messages the README promises
are what is tested.
"""

from __future__ import annotations

import collections
import csv
import json
import os
import re
import select
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from celeba_gender.cli import flagfiles

ROOT = Path(__file__).resolve().parents[1]
BIN = os.path.dirname(sys.executable)  # the project's virtualenv: `python`, `tensorboard` and the console scripts
LAUNCHERS = ("make_tfrecords.py", "train.py", "evaluate.py", "predict.py", "study.py")
READMES = ("README.md", "benchmarks/README.md")
_PREFIXES = ("python ", "make ", "tensorboard ", "srun ", "RUN=", "export ", "pip ", "celeba-")
_TF_LOG = re.compile(r"^[IWEF]\d{4} [\d:.]+\s+\d+ (\S+\] .*)$")  # TensorFlow's C++ log lines: the message part

# The commands each slow test below runs (exactly as the README writes them; placeholders such as `runs/...`
# are replaced by the sandbox's run).
DEMO_COMMANDS = {
    "RUN=$(ls -d demo/runs/small-* | tail -1)",
    "python -c \"import sys, keras, numpy as np; m = keras.models.load_model(sys.argv[1] + '/export/model.keras'); "
    "print(m.predict(np.zeros((1, 109, 89, 3), 'uint8'), verbose=0))\" $RUN",
    "python -c \"import sys, tensorflow as tf; s = tf.saved_model.load(sys.argv[1] + '/export/saved_model'); "
    "print(s.signatures['serving_default'](jpeg=tf.constant([open('demo/synthetic_celeba_3000_seed42/"
    "img_align_celeba/000001.jpg', 'rb').read()])))\" $RUN",
    "python make_tfrecords.py --synthetic=3000 --nobalance --out_dir=demo/tfrecords_all",
    "python train.py --flagfile=demo.flags --data_dir=demo/tfrecords_all --attributes=all "
    "--attribute_weights=balanced --run_dir=demo/runs/all-balanced",
    "python evaluate.py --run_dir=runs/inceptionv3-20261128-101500",
    "python evaluate.py --run_dir=runs/... --split=validation --checkpoint=last",
    "python evaluate.py --run_dir=runs/... --tta=flip",
    "python predict.py --run_dir=runs/resnet50v2-... photo1.jpg photo2.png",
    "python predict.py --run_dir=runs/... --detect_faces --output=predictions.csv my_photos/",
    "python predict.py --run_dir=runs/... --tta=flip --explain --output=out/predictions.csv my_photos/",
    "python study.py --flagfile=studies/demo_epochs.flags",
    "python predict.py --model=runs/.../export/model.tflite photo1.jpg photo2.png",
    "python study.py --flagfile=studies/demo_dataset_size.flags",
}
# The console scripts of "Install with pip", as .ci/check-package runs them from the installed wheel.
CHECK_PACKAGE = {
    "celeba-make-tfrecords --flagfile=convert/demo.flags": "celeba-make-tfrecords --synthetic=400",
    "celeba-train --flagfile=smoke.flags": "celeba-train --flagfile=smoke.flags",
    "celeba-predict --model demo/runs/tiny-*/export/model.tflite "
    "demo/synthetic_celeba_3000_seed42/img_align_celeba/000001.jpg":
        'celeba-predict --model="$RUN/export/model.tflite"',
}
LAUNCH_LOCAL = ("python -m celeba_gender.cli.launch_local --workers=2 -- train.py --arch=tiny "
                "--data_dir=demo/tfrecords --run_dir=demo/runs/tiny-2workers --strategy=multi_worker --batch=32 "
                "--epochs=2")
REAL_CELEBA_COMMANDS = {
    "make check-gpu",
    "python make_tfrecords.py",
    "python make_tfrecords.py --download",
    "python train.py --arch=inceptionv3 --batch=128",
    "python make_tfrecords.py --flagfile=convert/source.flags --celeba_dir=~/data/celeba",
    "python train.py --arch=resnet50v2",
    "python train.py --arch=resnet50v2 --batch=256 --epochs=20",
    "python train.py --flagfile=source/resnet50v2.flags",
    "python make_tfrecords.py --nobalance --out_dir=tfrecords/all",
    "python train.py --arch=resnet50v2 --data_dir=tfrecords/all --attributes=all",
    "python train.py --arch=resnet50v2 --data_dir=tfrecords/all --attributes=Smiling,Eyeglasses,Male "
    "--attribute_weights=balanced",
    "python study.py --flagfile=studies/epochs.flags",
    "python study.py --flagfile=studies/dataset_size.flags",
    "python -m celeba_gender.cli.data_service dispatcher --port=5050",
    "python -m celeba_gender.cli.data_service worker --dispatcher=dispatcher-host:5050 --port=5051",
}
BENCHMARK_COMMANDS = {
    "python benchmarks/convert.py",
    "python benchmarks/full_size.py --seed=0",
    "python benchmarks/input_pipeline.py",
    "python benchmarks/train_step.py --steps=4",
    "python benchmarks/face_alignment.py --picture=docs/face_alignment.png",
    "python benchmarks/face_alignment.py --rule=eyes",
    "python benchmarks/face_alignment.py --detector=haar",
    "python benchmarks/tflite.py",
}
_OFFLINE_STUDY = ("offline it takes the path epochs.flags takes in test_the_real_celeba_commands_run_as_documented_"
                  "offline (study.py starts train.py, which stops on the missing ImageNet weights); "
                  "tests/test_study.py::test_every_study_flagfile_parses parses its flagfile")
_TENSORBOARD = "a server that runs until stopped; the test checks that the executable is installed"
_PIP = ("make check-package (CI runs it after the suite) installs the built wheel this way into a fresh virtual "
        "environment and runs the console scripts below from an empty folder; here they run from the suite's own")
_CHECK_PACKAGE = ("make check-package (CI runs it after the suite) runs it from the wheel installed in a fresh "
                  "virtual environment, in an empty folder (.ci/check-package)")
SKIPPED = {
    **{command: _CHECK_PACKAGE for command in CHECK_PACKAGE},
    LAUNCH_LOCAL: "tests/test_multi_worker.py runs launch_local --workers=2 -- train.py --strategy=multi_worker on "
                  "the same kind of shards and checks both workers' weights and the chief's run directory",
    "make demo": "its three commands run in test_the_demo_commands_run_as_documented (training 1 epoch); the "
                 "whole target takes about 5 minutes",
    "make test": "this test suite",
    "pip install -c constraints.txt '.[detect]'": _PIP,
    "pip install -c constraints.txt '.[detect,gpu]'": "downloads TensorFlow's CUDA wheels (gigabytes) for a GPU the "
                                                     "test machine does not have; " + _PIP,
    "make gpu": "downloads TensorFlow's CUDA wheels (gigabytes) for a GPU the test machine does not have",
    "tensorboard --logdir=demo/runs": _TENSORBOARD,
    "tensorboard --logdir=runs": _TENSORBOARD,
    "python train.py --flagfile=demo.flags --data_dir=demo/tfrecords_all --attributes=all "
    "--run_dir=demo/runs/all-none": "the run beside it without --attribute_weights=balanced; tests/"
                                    "test_multilabel.py trains and checks that path",
    "srun .venv/bin/python train.py --arch=resnet50v2 --run_dir=/shared/runs/resnet50v2-slurm": "needs Slurm",
    "export TF_CONFIG='{\"cluster\": {\"worker\": [\"host0:12345\", \"host1:12345\"]}, \"task\": {\"type\": "
    "\"worker\", \"index\": 1}}'": "needs two machines (tests/test_multi_worker.py runs two workers on one)",
    "python train.py --arch=resnet50v2 --strategy=multi_worker --batch=512 --lr=0.0004 "
    "--data_dir=gs://my-bucket/celeba/tfrecords --run_dir=gs://my-bucket/runs/resnet50v2-2x4gpu":
        "needs two machines and a Cloud Storage bucket",
    "srun .venv/bin/python train.py --arch=resnet50v2 --strategy=multi_worker --batch=512 --lr=0.0004 "
    "--data_dir=/shared/celeba/tfrecords --run_dir=/shared/runs/resnet50v2-slurm": "needs a Slurm cluster",
    "python study.py --flagfile=studies/batch_size.flags": _OFFLINE_STUDY,
    "python study.py --flagfile=studies/demo_batch_size.flags": "demo_epochs.flags' path with --vary=batch "
                                                                      "(tests/test_study.py parses its flagfile)",
    "python study.py --flagfile=studies/archs.flags": _OFFLINE_STUDY,
    "python study.py --flagfile=studies/small_vs_plain4.flags": "six 109x89 runs of 8 epochs, about 35 "
                                                                       "minutes; demo_epochs runs the same code",
}


def documented_commands(readme: str) -> list[str]:
    """The commands of a README: lines of its code blocks (YAML aside) that start a command, with continuation
    lines joined and trailing comments dropped, and commands quoted in its headings."""
    text = (ROOT / readme).read_text()
    found = []
    for block in re.finditer(r"^[ \t]*```(\w*)\n(.*?)^[ \t]*```[ \t]*$", text, re.S | re.M):
        if block.group(1) == "yaml":
            continue
        for line in re.sub(r"\\\n\s*", "", block.group(2)).splitlines():
            line = re.sub(r"\s+#(\s.*)?$", "", line.strip())
            if line.startswith(_PREFIXES):
                found.append(line)
    found += re.findall(r"^#+ .*?`((?:python|make) [^`]+)`", text, re.M)
    return found


def test_every_documented_command_is_run_here_or_skipped_with_a_reason():
    documented = [c for readme in READMES for c in documented_commands(readme)]
    assert len(documented) > 40  # the parser finds the commands at all
    accounted = DEMO_COMMANDS | REAL_CELEBA_COMMANDS | BENCHMARK_COMMANDS | set(SKIPPED)
    assert not set(documented) - accounted, "add these README commands to a test here (or to SKIPPED, with why)"
    assert not accounted - set(documented), "no longer in a README: remove them here"
    check_package = (ROOT / ".ci" / "check-package").read_text()
    assert all(run in check_package for run in CHECK_PACKAGE.values())
    assert "launch_local\", \"--workers=2\"" in (ROOT / "tests" / "test_multi_worker.py").read_text()


class Sandbox:
    """A folder that looks like a clone of the project (launchers, benchmarks/ linked in), where the
    documented commands run with the project's Python, a private HOME, no CelebA anywhere, and TensorFlow's own
    logging left on (so that its start-up lines can be counted)."""

    def __init__(self, path: Path):
        self.path = path
        for name in LAUNCHERS:
            (path / name).symlink_to(ROOT / name)
        (path / "benchmarks").mkdir()  # a real folder: the scripts write _data/ and results/ beside themselves
        for script in (ROOT / "benchmarks").glob("*.py"):
            (path / "benchmarks" / script.name).symlink_to(script)
        (path / "home").mkdir()
        self.env = {k: v for k, v in os.environ.items()
                    if k not in ("CELEBA_DIR", "KAGGLEHUB_CACHE", "KAGGLE_USERNAME", "KAGGLE_KEY", "KERAS_HOME",
                                 "TF_CPP_MIN_LOG_LEVEL", "TF_CONFIG")}
        self.env.update(PATH=BIN + os.pathsep + os.environ["PATH"], HOME=str(path / "home"), PYTHONUNBUFFERED="1")
        self.ran: set[str] = set()

    def run(self, documented: str, *, add: str = "", replace: dict | None = None, rc: int | tuple = 0,
            offline: bool = False, timeout: int = 300) -> subprocess.CompletedProcess:
        """Runs a documented command (with ``replace``'s substitutions and ``add``'s size-reducing flags
        appended) in bash; checks its exit code. ``offline``: downloads fail at once (a dead proxy)."""
        command = documented
        for old, new in (replace or {}).items():
            command = command.replace(old, new)
        env = dict(self.env)
        if offline:
            env.update(HTTPS_PROXY="http://127.0.0.1:9", HTTP_PROXY="http://127.0.0.1:9")
        result = subprocess.run(["bash", "-c", f"{command} {add}".strip()], cwd=self.path, env=env,
                                capture_output=True, text=True, timeout=timeout)
        expected = rc if isinstance(rc, tuple) else (rc,)
        assert result.returncode in expected, (command, add, result.stdout[-2000:], result.stderr[-3000:])
        assert "Traceback" not in result.stderr, (command, result.stderr[-3000:])
        assert "local_rendezvous" not in result.stderr, (command, result.stderr[-3000:])
        self.ran.add(documented)
        return result


def user_error_line(result: subprocess.CompletedProcess, prog: str) -> str:
    """The one error line of a failed command: exit code 2 and exactly one ``<prog>: error: ...`` line."""
    assert result.returncode == 2, result.stderr[-2000:]
    lines = [line for line in result.stderr.splitlines() if line.startswith(f"{prog}: error: ")]
    assert len(lines) == 1, result.stderr[-3000:]
    return lines[0]


def assert_tensorflow_start_up_lines_at_most_once(stderr: str) -> None:
    messages = [m.group(1) for line in stderr.splitlines() if (m := _TF_LOG.match(line))]
    repeated = {m: n for m, n in collections.Counter(messages).items() if n > 1}
    assert not repeated, repeated


def _files_named(section: str) -> set[str]:
    """File and folder names written in backquotes in a README section (``name.ext`` or ``name/``)."""
    text = (ROOT / "README.md").read_text()
    start = text.index(section)
    body = text[start:text.index("\n#", start + len(section))]
    return set(re.findall(r"`([\w.<>-]+(?:\.(?:json|txt|csv|png|md|keras|tflite)|/))`", body))


# What "### The run directory" and "## Evaluation" name, and where each is in a run of `make demo`'s training.
RUN_DIRECTORY = {
    "flags.txt": "flags.txt", "config.json": "config.json", "status.json": "status.json", "train/": "train",
    "validation/": "validation", "evaluation_<split>_<checkpoint>/": "evaluation_test_best",
    "checkpoints/": "checkpoints", "best/": "checkpoints/best", "history.csv": "history.csv", "export/": "export",
    "model.keras": "export/model.keras", "labels.json": "export/labels.json", "saved_model/": "export/saved_model",
    "model.tflite": "export/model.tflite",
    "report/": "report", "summary.json": "summary.json", "test_metrics.json": "test_metrics.json",
}
REPORT = {name: f"report/{name}" for name in (
    "report.json", "report.md", "confusion_matrix.png", "curves.png", "errors_Male_as_Female.png",
    "errors_Female_as_Male.png", "gradcam_Male_as_Female.png", "gradcam_Female_as_Male.png", "gradcam_correct.png")}
REPORT["RUN/report/"] = "report"
REPORT["RUN/report/<split>-<checkpoint>/"] = "report/validation-last"


def _readme_section_names_are_all_known():
    assert _files_named("### The run directory") == set(RUN_DIRECTORY)
    named = _files_named("## Evaluation: `evaluate.py`")
    assert named - {"report/"} <= set(REPORT) | {n.split("/")[-1] for n in REPORT}, named


@pytest.mark.slow
def test_the_demo_commands_run_as_documented(tmp_path):
    """`make demo`'s three commands (training 1 epoch instead of 8), then every documented command that works on
    its run: the exported models in a bare Python, evaluate.py, predict.py, the demo studies (tiny CNN, one
    value), the multi-attribute demo, two local workers; every file the README names is where it says."""
    _readme_section_names_are_all_known()
    box = Sandbox(tmp_path)
    box.run("python make_tfrecords.py --flagfile=convert/demo.flags", add="--synthetic=600")
    faces = "demo/synthetic_celeba_600_seed42"  # where the README's 3,000-face set is
    train = box.run("python train.py --flagfile=demo.flags", add="--epochs=1 --warmup_epochs=0")
    assert_tensorflow_start_up_lines_at_most_once(train.stderr)
    assert "test (best checkpoint): accuracy" in train.stdout
    run_dir = next((tmp_path / "demo" / "runs").glob("small-*"))
    for name, relative in RUN_DIRECTORY.items():
        assert (run_dir / relative).exists(), name

    script = "\n".join(c for c in sorted(DEMO_COMMANDS, key=lambda c: not c.startswith("RUN="))
                       if c.startswith(("RUN=", "python -c")))
    exported = box.run(script, replace={"demo/synthetic_celeba_3000_seed42": faces})
    assert re.search(r"\[\[\s*[\d.e+-]+\s+[\d.e+-]+\s*\]\]", exported.stdout) and "'class_name'" in exported.stdout
    box.ran.update(c for c in DEMO_COMMANDS if c.startswith(("RUN=", "python -c")))

    run = {"runs/inceptionv3-20261128-101500": str(run_dir), "runs/resnet50v2-...": str(run_dir),
           "runs/...": str(run_dir)}
    box.run("python evaluate.py --run_dir=runs/inceptionv3-20261128-101500", replace=run)
    other = box.run("python evaluate.py --run_dir=runs/... --split=validation --checkpoint=last", replace=run)
    assert "Split `validation`" in other.stdout and "last checkpoint" in other.stdout
    tta = box.run("python evaluate.py --run_dir=runs/... --tta=flip", replace=run)
    assert "Test-time augmentation: plain vs flip" in tta.stdout and "| ROC-AUC |" in tta.stdout
    saved = json.loads((run_dir / "report" / "report.json").read_text())
    assert saved["tta"]["mode"] == "flip" and len(saved["gradcam"]["correct"]) == 6  # --gradcam_size's default
    for name, relative in REPORT.items():
        assert (run_dir / relative).exists(), name

    from PIL import Image
    images = tmp_path / faces / "img_align_celeba"
    shutil.copy(images / "000001.jpg", tmp_path / "photo1.jpg")
    Image.open(images / "000002.jpg").save(tmp_path / "photo2.png")
    (tmp_path / "my_photos").mkdir()
    for name in ("000003.jpg", "000004.jpg", "000005.jpg"):
        shutil.copy(images / name, tmp_path / "my_photos" / name)
    two = box.run("python predict.py --run_dir=runs/resnet50v2-... photo1.jpg photo2.png", replace=run)
    assert "photo1.jpg" in two.stdout and "photo2.png" in two.stdout
    lite = box.run("python predict.py --model=runs/.../export/model.tflite photo1.jpg photo2.png", replace=run)
    assert lite.stdout == two.stdout  # the TensorFlow Lite model's answers are model.keras's, to 4 decimals
    # exit code 1 when a photo has no face the detector finds: documented, the others are still written
    box.run("python predict.py --run_dir=runs/... --detect_faces --output=predictions.csv my_photos/",
            replace=run, rc=(0, 1))
    assert (tmp_path / "predictions.csv").read_text().count("\n") >= 2
    box.run("python predict.py --run_dir=runs/... --tta=flip --explain --output=out/predictions.csv my_photos/",
            replace=run)
    assert len(list((tmp_path / "out" / "explain").iterdir())) == 3  # explain/ beside --output by default
    rows = list(csv.DictReader((tmp_path / "out" / "predictions.csv").open()))
    assert {(tmp_path / r["explanation"]).resolve().parent for r in rows} == {(tmp_path / "out/explain").resolve()}
    assert len(rows) == 3 and all((tmp_path / r["explanation"]).exists() for r in rows)

    box.run("python study.py --flagfile=studies/demo_epochs.flags", add="--archs=tiny --values=1")
    # Its faces are the 600 made above, not 3,000 more: the packaged demo_data.flags with that one change.
    data_flags = (flagfiles.PACKAGED / "studies" / "demo_data.flags").read_text()
    (tmp_path / "demo_data_600.flags").write_text(data_flags.replace("3000", "600"))
    box.run("python study.py --flagfile=studies/demo_dataset_size.flags",
            add="--archs=tiny --values=600 --convert_flagfile=demo_data_600.flags")
    for name in ("epochs", "dataset_size"):  # where the README says the demo studies write
        assert (tmp_path / "demo" / "studies" / name / "study.md").exists(), name

    box.run("python make_tfrecords.py --synthetic=3000 --nobalance --out_dir=demo/tfrecords_all", add="--synthetic=600")
    multi = box.run("python train.py --flagfile=demo.flags --data_dir=demo/tfrecords_all --attributes=all "
                    "--attribute_weights=balanced --run_dir=demo/runs/all-balanced",
                    add="--epochs=1 --warmup_epochs=0 --image_size=55,45")
    assert "mean accuracy" in multi.stdout and (tmp_path / "demo/runs/all-balanced/report/attributes.png").exists()

    assert DEMO_COMMANDS <= box.ran, DEMO_COMMANDS - box.ran


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_the_real_celeba_commands_run_as_documented_offline(tmp_path):
    """The commands for the real CelebA on a synthetic one in data/celeba, offline: conversions complete; every
    command that needs ImageNet weights or Kaggle stops at once with one line naming what to fetch (exit 2)."""
    box = Sandbox(tmp_path)
    subprocess.run([sys.executable, "-m", "celeba_gender.cli.synthetic", f"--out_dir={tmp_path}/data/celeba",
                    "--num_images=700", "--seed=5"], check=True, capture_output=True, env=box.env)
    (tmp_path / "home" / "data").mkdir()
    (tmp_path / "home" / "data" / "celeba").symlink_to(tmp_path / "data" / "celeba")

    gpu = box.run("make -s -C {root} check-gpu".format(root=ROOT), rc=0)
    box.ran.add("make check-gpu")
    assert "TensorFlow sees no GPU" in gpu.stdout or "GPU(s):" in gpu.stdout
    assert shutil.which("tensorboard", path=BIN)  # the tensorboard commands' executable

    converted = box.run("python make_tfrecords.py")
    assert "data/celeba" in converted.stderr and (tmp_path / "tfrecords" / "manifest.json").exists()
    download = box.run("python make_tfrecords.py --download", rc=2, offline=True)
    assert "kaggle.json" in user_error_line(download, "make_tfrecords")

    def needs_weights(documented: str, file: str, prog: str = "train", add: str = "") -> None:
        line = user_error_line(box.run(documented, add=add, rc=2, offline=True), prog)
        assert file in line and "--weights=none" in line, line

    inception = "inception_v3_weights_tf_dim_ordering_tf_kernels_notop.h5"
    resnet = "resnet50v2_weights_tf_dim_ordering_tf_kernels_notop.h5"
    needs_weights("python train.py --arch=inceptionv3 --batch=128", inception)
    needs_weights("python train.py --arch=resnet50v2", resnet)
    needs_weights("python train.py --arch=resnet50v2 --batch=256 --epochs=20", resnet)

    source = box.run("python make_tfrecords.py --flagfile=convert/source.flags --celeba_dir=~/data/celeba")
    assert "--limit=52,000 is more than the" in source.stdout
    needs_weights("python train.py --flagfile=source/resnet50v2.flags", resnet)

    box.run("python make_tfrecords.py --nobalance --out_dir=tfrecords/all")
    needs_weights("python train.py --arch=resnet50v2 --data_dir=tfrecords/all --attributes=all", resnet)
    needs_weights("python train.py --arch=resnet50v2 --data_dir=tfrecords/all --attributes=Smiling,Eyeglasses,Male "
                  "--attribute_weights=balanced", resnet)

    # The source's studies start with AlexNet, which trains from scratch for minutes: the first pretrained arch
    # instead, which is what fails offline.
    needs_weights("python study.py --flagfile=studies/epochs.flags", resnet, "study",
                  "--archs=resnet50v2 --values=5")
    needs_weights("python study.py --flagfile=studies/dataset_size.flags", resnet, "study",
                  "--archs=resnet50v2 --values=22000")

    # The tf.data service: both servers start and say where they listen (on free ports, not 5050/5051).
    dispatcher_port, worker_port = _free_port(), _free_port()
    servers = []
    try:
        for documented, ports in (
                ("python -m celeba_gender.cli.data_service dispatcher --port=5050", {"5050": str(dispatcher_port)}),
                ("python -m celeba_gender.cli.data_service worker --dispatcher=dispatcher-host:5050 --port=5051",
                 {"dispatcher-host:5050": f"127.0.0.1:{dispatcher_port}", "5051": str(worker_port)})):
            command = documented
            for old, new in ports.items():
                command = command.replace(old, new)
            servers.append(subprocess.Popen(["bash", "-c", f"exec {command}"], cwd=tmp_path, env=box.env,
                                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True))
            ready, _, _ = select.select([servers[-1].stdout], [], [], 120)
            assert ready and servers[-1].stdout.readline().startswith("tf.data service "), documented
            box.ran.add(documented)
        time.sleep(1)
        assert all(server.poll() is None for server in servers)  # still serving
    finally:
        for server in servers:
            server.send_signal(signal.SIGKILL)
            server.wait()
    assert REAL_CELEBA_COMMANDS <= box.ran, REAL_CELEBA_COMMANDS - box.ran


@pytest.mark.slow
def test_the_benchmarks_run_as_documented_at_a_small_size(tmp_path):
    """Each benchmark makes its own synthetic data (on a fresh clone there is none) and writes its JSON."""
    box = Sandbox(tmp_path)
    box.run("python benchmarks/convert.py", add="--num_images=300 --repeats=1")
    box.run("python benchmarks/input_pipeline.py",  # 300: the faces train_step.py reads too, made once
            add="--num_images=300 --passes=1 --idg_batches=2 --aug_batches=2 --batch=32")
    box.run("python benchmarks/train_step.py --steps=4",
            add="--archs=tiny --steps=2 --num_images=300 --configs=synthetic/float32,shards/float32")
    box.run("python benchmarks/full_size.py --seed=0", add="--num_images=300 --ceiling_images=200")
    for command in ("python benchmarks/face_alignment.py --picture=docs/face_alignment.png",
                    "python benchmarks/face_alignment.py --rule=eyes",
                    "python benchmarks/face_alignment.py --detector=haar"):
        box.run(command, add="--num_photos=3")
    assert (tmp_path / "docs" / "face_alignment.png").exists()
    box.run("python benchmarks/tflite.py", add="--synthetic=300 --arch=tiny --epochs=1 --warmup_epochs=0")
    written = {p.name for p in (tmp_path / "benchmarks" / "results").glob("*.json")}
    assert written == {"convert.json", "input_pipeline.json", "train_step.json", "full_size.json",
                       "face_alignment.json", "face_alignment_mtcnn_eyes.json", "face_alignment_haar_celeba.json",
                       "tflite.json"}
    assert BENCHMARK_COMMANDS <= box.ran, BENCHMARK_COMMANDS - box.ran


def _help_defaults(launcher: str) -> dict[str, str]:
    """flag -> default as ``python <launcher> --help`` prints it."""
    text = subprocess.run([sys.executable, launcher, "--help"], cwd=ROOT, capture_output=True, text=True,
                          timeout=120).stdout
    defaults, flag = {}, None
    for line in text.splitlines():
        if m := re.match(r"^  --(?:\[no\])?(\w+):", line):
            flag = m.group(1)
            defaults[flag] = ""  # absl prints no default line for an empty one
        elif (m := re.match(r"^\s+\(default: '(.*)'\)$", line)) and flag:
            defaults[flag] = m.group(1)
    assert len(defaults) > 5, text[-2000:]
    return defaults


# The README's words for defaults that --help writes as a value.
_WORDS = {"on": "true", "off": "false", "search (above)": "", "one per CPU": "0", "auto": "0", "0 (all)": "0",
          "studies/<name>": ""}


def _same_default(readme: str, help_value: str) -> bool:
    readme = _WORDS.get(readme.strip("`"), readme.strip("`").replace(",", ""))
    try:
        return float(readme) == float(help_value)
    except ValueError:
        return readme == help_value


def test_flag_defaults_in_the_readme_are_what_help_prints():
    text = (ROOT / "README.md").read_text()
    convert_help = _help_defaults("make_tfrecords.py")
    rows = re.findall(r"^\| ((?:`--[\w=N]+`(?: / )?)+) \| ([^|]+) \|", text, re.M)
    assert len(rows) >= 14, rows
    for flags_cell, default_cell in rows:
        names = re.findall(r"`--(\w+)", flags_cell)
        values = [v.strip() for v in default_cell.split(" / ")] if len(names) > 1 else [default_cell.strip()]
        for name, value in zip(names, values):
            assert name in convert_help, name
            assert _same_default(value, convert_help[name]), (name, value, convert_help[name])

    every = {}
    for launcher in LAUNCHERS:
        for name, value in _help_defaults(launcher).items():
            every.setdefault(name, set()).add(value)
    claims = re.findall(r"`--(\w+)`(?:,| \() ?default `?([^`\s)]+)", text)
    assert len(claims) >= 5, claims
    for name, value in claims:
        assert name in every, name
        assert any(_same_default(value.rstrip(",;."), v) for v in every[name]), (name, value, every[name])


_FLAGFILE_HEADER = {
    "the command": r"python |\.py",
    "the hardware": r"CPU|GPU|cores",
    "the time": r"\d\s*(s|min|minutes?|seconds?|hours?)\b|[Tt]ime",
    "the accuracy": r"accura|measured",
}


def test_every_flagfile_opens_with_what_it_is_for_and_what_was_measured():
    files = sorted(flagfiles.PACKAGED.rglob("*.flags"))
    assert len(files) >= 20
    for path in files:
        lines = path.read_text().splitlines()
        header = []
        for line in lines:
            if not line.startswith("#"):
                break
            header.append(line.lstrip("# ").strip())
        comment = " ".join(header)
        assert len(header) >= 2 and all(header), f"{path}: opening comment missing or has empty lines"
        for what, pattern in _FLAGFILE_HEADER.items():
            assert re.search(pattern, comment, re.I), \
                f"{path.relative_to(flagfiles.PACKAGED)}: its opening comment does not say {what}"
        assert "../shared" not in path.read_text(), path


def test_nothing_sends_a_user_outside_the_repository():
    paths = [ROOT / "README.md", ROOT / "benchmarks" / "README.md", ROOT / "Makefile", *ROOT.glob("*.py"),
             *flagfiles.PACKAGED.rglob("*.flags"), *(ROOT / "src").rglob("*.py"), *(ROOT / "docs").glob("*.md")]
    for path in paths:
        text = path.read_text()
        assert "../shared" not in text and "SEED.md" not in text and "DESIGN.md" not in text, path


def test_the_readme_recipe_table_is_the_registry():
    from celeba_gender.core import options
    from celeba_gender.models import registry
    from celeba_gender.train.trainer import TrainConfig

    text = (ROOT / "README.md").read_text()
    header = re.search(r"^\| arch \| optimizer \|.*$", text, re.M).group(0)
    columns = [c.strip() for c in header.strip("|").split("|")][1:]
    rows = re.findall(r"^\| `(\w+)` \| (adamw|adam|sgd)\b.*$", text, re.M)
    assert {name for name, _ in rows} == set(registry.ARCH_NAMES)
    for line in re.findall(r"^\| `\w+` \| (?:adamw|adam|sgd)\b.*$", text, re.M):
        cells = [c.strip().strip("`") for c in line.strip("|").split("|")]
        spec = registry.get(cells[0])
        recipe = {**{o.name: o.default for o in options.options(TrainConfig)}, **spec.recipe()}
        for column, cell in zip(columns, cells[1:]):
            if column == "image size":
                size = spec.default_size
                assert cell == f"{size[0]}x{size[1]}", (cells[0], column, cell)
            else:
                assert cell == options.format_value(recipe[column]), (cells[0], column, cell, recipe[column])


def test_flag_errors_are_one_line_with_exit_code_2(tmp_path):
    """absl's own parse errors (unknown flag, bad choice, missing value) are one line like every other error."""
    env = {**os.environ, "HOME": str(tmp_path)}

    def run(*args):
        return subprocess.run([sys.executable, str(ROOT / args[0]), *args[1:]], cwd=tmp_path, env=env,
                              capture_output=True, text=True, timeout=120)

    assert "--nosuch" in user_error_line(run("make_tfrecords.py", "--nosuch=1"), "make_tfrecords")
    assert "--dedupe" in user_error_line(run("make_tfrecords.py", "--dedupe=fuzzy"), "make_tfrecords")
    assert "--arch is required" in user_error_line(run("train.py"), "train")
    assert "did you mean --epochs?" in user_error_line(run("train.py", "--arch=tiny", "--epoch=1"), "train")
    assert "--run_dir" in user_error_line(run("evaluate.py"), "evaluate")
    assert "is not a directory" in user_error_line(run("evaluate.py", "--run_dir=/nonexistent"), "evaluate")
