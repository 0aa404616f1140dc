"""train.py end to end on synthetic shards: learning, artifacts, export, resume, strategies, bad flags."""

from __future__ import annotations

import csv
import dataclasses
import glob
import json
import os
import signal
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest
import tensorflow as tf

from celeba_gender.train import config as train_config
from celeba_gender.inputs import config as input_config
from celeba_gender.core import options
from celeba_gender.tasks import metrics
from celeba_gender.train import stopping
from celeba_gender.inputs import decode, pipeline
from celeba_gender.models import build, registry
from celeba_gender.shards import schema
from celeba_gender.rundir.directory import ChangedSettingsError, RunDirectory
from celeba_gender.train import epochs, optimizers, trainer
from celeba_gender.rundir.tensorboard import image_grid

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def tiny_config(data_dir: str, run_dir: str, **changes) -> train_config.TrainConfig:
    # model.tflite (1-2 s a run) is converted where a test reads it: trained_run, test_predict, test_multilabel.
    base = train_config.TrainConfig(arch="tiny", data_dir=data_dir, run_dir=run_dir, batch=16, epochs=1, lr=3e-3,
                                    precision="float32", progress=False, seed=1, tflite="none")
    return dataclasses.replace(base, **changes)


def event_tags(directory: str) -> dict[str, set]:
    """{tag: {steps}} of every summary in the event files directly under ``directory``."""
    tags: dict[str, set] = {}
    for path in glob.glob(os.path.join(directory, "events.out.tfevents.*")):
        for event in tf.compat.v1.train.summary_iterator(path):
            for value in event.summary.value:
                tags.setdefault(value.tag, set()).add(event.step)
    return tags


def dataset_loss(model: keras.Model, data_dir: str) -> float:
    ds = pipeline.eval_dataset(input_config.DataConfig(data_dir, (64, 52), 64), "train")
    probs, labels = zip(*[(model(tf.cast(x, tf.float32), training=False).numpy(), y.numpy()) for x, y in ds])
    return metrics.class_metrics(np.concatenate(probs), np.concatenate(labels), ["Female", "Male"])["log_loss"]


def test_one_epoch_lowers_the_loss_and_writes_every_artifact(trained_run, shards):
    config, result = trained_run
    run_dir = result["run_dir"]
    for name in ("flags.txt", "config.json", "history.csv", "report/report.json", "summary.json",
                 "export/model.keras", "export/labels.json", "export/saved_model/saved_model.pb",
                 "checkpoints/checkpoint", "checkpoints/best/checkpoint"):
        assert os.path.exists(os.path.join(run_dir, name)), name
    assert f"--run_dir={run_dir}" in open(os.path.join(run_dir, "flags.txt")).read()
    assert json.load(open(os.path.join(run_dir, "config.json")))["train"]["arch"] == "tiny"
    assert RunDirectory(run_dir).status()["status"] == "complete"
    train_tags, val_tags = event_tags(os.path.join(run_dir, "train")), event_tags(os.path.join(run_dir, "validation"))
    for tag in ("loss", "accuracy", "auc", "learning_rate", "images_per_sec", "input_wait_fraction",
                "augmented_inputs"):
        assert tag in train_tags, tag
    for tag in ("loss", "accuracy", "auc", "confusion_matrix"):
        assert tag in val_tags, tag
    assert "_hparams_/session_start_info" in event_tags(run_dir)
    assert glob.glob(os.path.join(run_dir, "train", "plugins", "profile", "*", "*.xplane.pb"))
    # Learning: the exported model has a lower training loss than the same model untrained.
    keras.utils.set_random_seed(config.seed)
    untrained = build.build_model(registry.ModelConfig(arch="tiny")).network
    trained_model = keras.models.load_model(os.path.join(run_dir, "export", "model.keras"))
    assert dataset_loss(trained_model, config.data_dir) < dataset_loss(untrained, config.data_dir) - 0.005
    test = result["test"]
    assert test["count"] == shards[1]["splits"]["test"]["count"]
    assert sum(map(sum, test["confusion_matrix"])) == test["count"]


def test_saved_model_from_jpeg_bytes_equals_the_keras_model(trained_run, shards):
    _, result = trained_run
    data_dir, manifest = shards
    keras_model = keras.models.load_model(result["export"]["keras"])
    serving = tf.saved_model.load(result["export"]["saved_model"])
    files = [os.path.join(data_dir, s["file"]) for s in manifest["splits"]["test"]["shards"]]
    parsed = [schema.parse_example(r, len(manifest["attribute_names"]))
              for r in tf.data.TFRecordDataset(files).take(6)]
    jpegs = tf.stack([p["image/encoded"] for p in parsed])
    images = tf.stack([decode.fit_to_size(tf.io.decode_jpeg(j, channels=3), (64, 52)) for j in jpegs])
    expected = keras_model(images, training=False).numpy()
    from_jpeg = serving.signatures["serving_default"](jpeg=jpegs)
    from_images = serving.signatures["serve_images"](images=images)
    np.testing.assert_allclose(from_jpeg["probabilities"].numpy(), expected, atol=1e-5)
    np.testing.assert_allclose(from_images["probabilities"].numpy(), expected, atol=1e-5)
    names = [n.decode() for n in from_jpeg["class_name"].numpy()]
    assert names == [("Female", "Male")[i] for i in expected.argmax(-1)]


def test_summary_image_grid_shape():
    grid = image_grid(np.zeros((10, 4, 3, 3), np.uint8), columns=4)
    assert grid.shape == (1, 3 * 6, 4 * 5, 3) and grid.dtype == np.uint8


# Runs train.py and kills it with SIGKILL in the middle of epoch 2 (after 3 of its steps).
_KILL = textwrap.dedent("""
    import os, signal, sys
    from celeba_gender.train import step
    from celeba_gender.cli import train
    calls, original = [], step.TrainStep.train
    def train_steps(self, iterator, steps, *rest):
        calls.append(steps)
        out = original(self, iterator, steps, *rest)
        if len(calls) == STEPS_PER_EPOCH + 3:
            os.kill(os.getpid(), signal.SIGKILL)
        return out
    step.TrainStep.train = train_steps
    sys.argv[0] = "train.py"
    train.run()
""")


def run_train(args: list[str], script: str | None = None, timeout: int = 240) -> subprocess.CompletedProcess:
    args = [*args, "--tflite=none"]
    cmd = [sys.executable, os.path.join(ROOT, "train.py"), *args]
    if script is not None:
        cmd = [sys.executable, "-c", script, *args]
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=ROOT, env=env)


@pytest.mark.slow
def test_a_killed_run_resumes_from_its_checkpoint_when_the_command_is_rerun(shards, tmp_path):
    data_dir, manifest = shards
    batch = 16
    steps = manifest["splits"]["train"]["count"] // batch
    args = ["--arch=tiny", f"--data_dir={data_dir}", f"--runs_root={tmp_path}", f"--batch={batch}", "--epochs=3",
            "--checkpoint_steps=2", "--precision=float32", "--progress=false", "--evaluate_test=false"]
    killed = run_train(args, script=_KILL.replace("STEPS_PER_EPOCH", str(steps)))
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    (run_dir,) = glob.glob(str(tmp_path / "tiny-*"))
    history = open(os.path.join(run_dir, "history.csv")).read().splitlines()
    assert len(history) == 2  # header + epoch 1
    resumed = run_train(args)  # the same command: it must find the run and continue it
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert f"resuming run {run_dir}" in resumed.stdout
    assert glob.glob(str(tmp_path / "tiny-*")) == [run_dir]
    epochs = [line.split(",")[0] for line in open(os.path.join(run_dir, "history.csv")).read().splitlines()[1:]]
    assert epochs == ["1", "2", "3"]  # each epoch counted once
    reader = tf.train.load_checkpoint(tf.train.latest_checkpoint(os.path.join(run_dir, "checkpoints")))
    assert reader.get_tensor("epoch/.ATTRIBUTES/VARIABLE_VALUE") == 3
    assert reader.get_tensor("optimizer/_iterations/.ATTRIBUTES/VARIABLE_VALUE") == 3 * steps  # no step twice


@pytest.mark.slow
def test_mirrored_strategy_on_two_cpu_devices_matches_one_device(shards, tmp_path):
    data_dir, _ = shards
    common = ["--arch=tiny", f"--data_dir={data_dir}", "--batch=32", "--epochs=2", "--precision=float32",
              "--augment_on=none", "--dropout=0", "--deterministic", "--progress=false", "--lr=0.003",
              "--evaluate_test=false", "--seed=3", "--cache=none"]
    one = run_train(common + [f"--run_dir={tmp_path}/one", "--strategy=default"])
    two = run_train(common + [f"--run_dir={tmp_path}/two", "--strategy=mirrored", "--num_cpu_devices=2"])
    assert one.returncode == 0, one.stderr[-2000:]
    assert two.returncode == 0, two.stderr[-2000:]
    assert "2 replica(s) (MirroredStrategy)" in two.stdout
    models = [keras.models.load_model(f"{tmp_path}/{name}/export/model.keras") for name in ("one", "two")]
    images = next(iter(pipeline.eval_dataset(input_config.DataConfig(data_dir, (64, 52), 32), "validation")))[0]
    p1, p2 = (m(images, training=False).numpy() for m in models)
    untrained = build.build_model(registry.ModelConfig(arch="tiny")).network(tf.cast(images, tf.float32)).numpy()
    # BatchNorm sees 16 examples per replica instead of 32, so the runs differ slightly, not like a new model.
    assert np.abs(p1 - p2).mean() < 0.02
    assert np.abs(p1 - untrained).mean() > 5 * np.abs(p1 - p2).mean()


def test_impossible_settings_fail_before_any_work(shards, tmp_path):
    data_dir, manifest = shards
    with pytest.raises(train_config.TrainError, match="below inceptionv3's minimum of 75x75"):  # the config's
        trainer.train(tiny_config(data_dir, str(tmp_path / "a"), arch="inceptionv3", image_size=(64, 64)))
    with pytest.raises(pipeline.DataError, match="larger than the training split"):
        trainer.train(tiny_config(data_dir, str(tmp_path / "b"), batch=manifest["splits"]["train"]["count"] + 1))
    with pytest.raises(pipeline.DataError, match="No manifest.json in .*convert CelebA first"):
        trainer.train(tiny_config(str(tmp_path / "nothing"), str(tmp_path / "c")))
    with pytest.raises(train_config.TrainError, match="--warmup_epochs=3 must be below --epochs=3"):
        trainer.train(tiny_config(data_dir, str(tmp_path / "d"), warmup_epochs=3, epochs=3))
    with pytest.raises(registry.ArchError, match="alexnet has no ImageNet weights"):
        trainer.train(tiny_config(data_dir, str(tmp_path / "e"), arch="alexnet", weights="imagenet"))
    (tmp_path / "a_file").write_text("")
    with pytest.raises(pipeline.DataError, match="--cache=.*a_file/cache: cannot create its folder"):
        trainer.train(tiny_config(data_dir, str(tmp_path / "f"), cache=str(tmp_path / "a_file" / "cache")))
    assert not any(os.path.exists(tmp_path / d) for d in "abf")  # nothing was started


def test_deterministic_refuses_what_it_cannot_reproduce():
    from celeba_gender.inputs.augment import AugmentConfig

    with pytest.raises(train_config.TrainError, match="--deterministic cannot be combined with --tf_data_service"):
        train_config.TrainConfig(arch="tiny", deterministic=True, tf_data_service="grpc://localhost:5050")
    with pytest.raises(train_config.TrainError, match="--random_erasing needs --augment_on=device"):
        train_config.TrainConfig(arch="tiny", deterministic=True, augment_on="host",
                                 augment=AugmentConfig(randaugment=True))
    # On the device their random states are checkpointed; without --deterministic nothing is promised.
    train_config.TrainConfig(arch="tiny", deterministic=True,
                             augment=AugmentConfig(randaugment=True, random_erasing=0.5))
    train_config.TrainConfig(arch="tiny", augment_on="host", augment=AugmentConfig(randaugment=True))


def test_a_diverging_run_stops_and_keeps_the_last_good_checkpoint(shards, tmp_path):
    data_dir, _ = shards
    config = tiny_config(data_dir, str(tmp_path / "nan"), optimizer="sgd", lr=1e35, momentum=0.0, epochs=2)
    with pytest.raises(epochs.Diverged, match="the training loss became nan.*last good checkpoint"):
        trainer.train(config)
    status = RunDirectory(str(tmp_path / "nan")).status()
    assert status["status"] == "failed" and "the training loss became nan" in status["error"]


def test_cli_errors_are_one_line(shards, tmp_path):
    data_dir, _ = shards
    bad_arch = run_train(["--arch=resnet", f"--data_dir={data_dir}"])
    assert bad_arch.returncode == 2 and "value should be one of <alexnet|resnet50v2|" in bad_arch.stderr
    too_small = run_train(["--arch=inceptionv3", "--image_size=64,64", f"--data_dir={data_dir}",
                           f"--runs_root={tmp_path}"])
    assert too_small.returncode == 2
    assert "train: error: --image_size=64,64 is below inceptionv3's minimum of 75x75" in too_small.stderr
    assert "Traceback" not in too_small.stderr + bad_arch.stderr


def test_every_flagfile_parses(tmp_path):
    """Every packaged train flagfile parses with train.py's flags, by its packaged name, from a folder without
    them (studies and convert have their own)."""
    code = textwrap.dedent("""
        import sys
        from absl import flags
        from celeba_gender.cli import config_flags, flagfiles, train
        FLAGS = flags.FLAGS
        files = [f for f in flagfiles.packaged()
                 if not f.startswith(("convert/", "studies/")) or f.endswith("_train.flags")]
        for f in sorted(files):
            FLAGS.unparse_flags()
            config_flags.parse(["train.py", f"--flagfile={f}"])
            assert FLAGS.arch or f.endswith(("common.flags", "_train.flags")), f
            config = train.build_config()[0] if FLAGS.arch else None
            print(f, FLAGS.arch, config.lr if config else "")
    """)
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.startswith("demo.flags small") and "\nsource/alexnet.flags alexnet" in result.stdout
    # demo, smoke, the six source-protocol files and the demo study's train flags: every one was read
    assert len(result.stdout.splitlines()) == 9, result.stdout


def test_the_arch_recipe_is_under_any_flagfile_and_any_explicit_flag(tmp_path):
    """Precedence: declared default < the arch's recipe < a flagfile < the command line; each value's source is
    recorded."""
    flagfile = tmp_path / "mine.flags"
    flagfile.write_text("--lr=0.0005\n--epochs=4\n")
    code = textwrap.dedent("""
        import json, sys
        from absl import flags
        from celeba_gender.train import config as train_config
        from celeba_gender.cli import train
        argv = ["train.py", "--arch=resnet50v2", "--flagfile=FLAGFILE", "--epochs=7", "--batch=64"]
        sys.argv = argv
        flags.FLAGS(argv)
        config, sources = train.build_config()
        print(json.dumps({"config": {k: getattr(config, k) for k in ("optimizer", "lr", "epochs", "batch",
                                      "label_smoothing", "momentum")}, "sources": sources}))
        bare = ["train.py", "--arch=inceptionv3"]
        flags.FLAGS.unparse_flags(); sys.argv = bare; flags.FLAGS(bare)
        assert train.build_config()[0] == train_config.config_for("inceptionv3"), train.build_config()[0]
    """).replace("FLAGFILE", str(flagfile))
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    out = json.loads(result.stdout.strip().splitlines()[-1])
    recipe = registry.get("resnet50v2").recipe()
    assert out["config"] == {"optimizer": recipe["optimizer"], "lr": 0.0005, "epochs": 7, "batch": 64,
                             "label_smoothing": recipe["label_smoothing"], "momentum": 0.9}
    assert (out["sources"]["optimizer"], out["sources"]["lr"], out["sources"]["epochs"], out["sources"]["batch"],
            out["sources"]["momentum"]) == ("recipe", "flagfile", "command line", "command line", "default")


# Runs a command's launcher with its library call replaced by a print of what it was given (config, sources, the
# run header's lines and flags.txt for train.py): the user's parse path, without the work.
_PARSE_ONLY = textwrap.dedent("""
    import json, sys
    from celeba_gender.cli import console
    from celeba_gender.convert import converter
    from celeba_gender.core import options
    from celeba_gender.train import trainer

    def show(config, sources=None, *rest):
        settings = options.flat_values(config)
        print(json.dumps({"settings": settings, "sources": sources,
                          "header": console.describe_settings(settings, sources or {}, settings.get("arch")),
                          "flags_txt": options.as_flagfile(config, sources)}, default=str))
        sys.exit(0)

    trainer.train = converter.convert = show
    sys.argv = sys.argv[1:]
    if sys.argv[0] == "train.py":
        from celeba_gender.cli import train as command
    else:
        from celeba_gender.cli import convert as command
    command.run()
""")


def parsed(*argv: str) -> dict:
    """What ``argv`` (a launcher's name and its arguments) hands the library, parsed as the command parses it."""
    done = subprocess.run([sys.executable, "-c", _PARSE_ONLY, *argv], capture_output=True, text=True, cwd=ROOT,
                          timeout=120, env={**os.environ, "PYTHONPATH": os.path.join(ROOT, "src")})
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("order", ["flagfile-last", "two-tokens-last"])
def test_the_command_line_wins_over_a_flagfile_whatever_the_order_and_is_labelled_so(tmp_path, order):
    inner = tmp_path / "inner.flags"
    inner.write_text("--epochs=4\n--batch=8\n--lr=0.5\n")
    outer = tmp_path / "outer.flags"
    outer.write_text(f"--flagfile={inner}\n--lr=0.002\n--epochs=3\n")  # nested: outer's later lines win
    # (test_the_arch_recipe_is_under_any_flagfile_and_any_explicit_flag has the flagfile first)
    argv = {"flagfile-last": ["--arch=tiny", "--lr=0.01", f"--flagfile={outer}"],
            "two-tokens-last": ["--lr=0.01", "--flagfile", str(outer), "--arch=tiny"]}[order]
    out = parsed("train.py", *argv)
    settings, sources = out["settings"], out["sources"]
    assert (settings["lr"], settings["epochs"], settings["batch"], settings["optimizer"]) == (0.01, 3, 8, "adamw")
    assert (sources["lr"], sources["epochs"], sources["batch"], sources["optimizer"]) == (
        "command line", "flagfile", "flagfile", "recipe")
    assert "  command line: lr=0.01" in out["header"]
    flags_txt = out["flags_txt"]
    assert flags_txt.index("# from the command line") < flags_txt.index("--lr=0.01") < flags_txt.index("# flagfiles")
    assert "--lr=0.002" not in flags_txt and "--lr=0.5" not in flags_txt


def test_the_converter_command_line_wins_over_a_flagfile_named_after_it(tmp_path):
    flagfile = tmp_path / "convert.flags"
    flagfile.write_text("--out_dir=from_the_flagfile\n--limit=300\n")
    out = parsed("make_tfrecords.py", f"--out_dir={tmp_path}/mine", f"--flagfile={flagfile}")
    assert out["settings"]["out_dir"] == f"{tmp_path}/mine" and out["settings"]["limit"] == 300


_AWKWARD_FLOATS = (0.0012345678, 1 / 3, 0.1 + 0.2, 1e-12, 5e-05, 2.0 ** -40, 123456789.0123, 1e22, 0.0, 3.0)


def test_every_float_is_formatted_to_read_back_exactly():
    for value in _AWKWARD_FLOATS:
        assert float(options.format_value(value)) == value, value
    assert options.format_value(0.0005) == "0.0005" and options.format_value(3.0) == "3"  # short where exact


# Writes configs of every option type (and train.py's, with awkward values) as flags.txt does, parses each file
# back with the flags the command defines, and compares.
_ROUND_TRIP = textwrap.dedent("""
    import dataclasses, sys, tempfile
    from absl import flags
    from celeba_gender.cli import config_flags, train
    from celeba_gender.core import options
    from celeba_gender.core.options import option
    from celeba_gender.train import config as train_config

    @dataclasses.dataclass(frozen=True)
    class Every:
        count: int = option(3, "an int")
        rate: float = option(0.5, "a float")
        name: str = option("x", "a string")
        flag: bool = option(True, "a bool")
        kind: str = option("a", "an enum", choices=("a", "b"))
        pair: tuple[int, int] | None = option(None, "an optional pair")
        fractions: tuple[float, float, float] = option((0.8, 0.1, 0.1), "floats")
        names: tuple[str, ...] = option((), "strings")
        sizes: tuple[int, ...] | None = option((1, 2), "optional ints")

    config_flags.define(Every, "every")
    FLOATS = FLOATS_HERE
    cases = [Every(), Every(count=-7, rate=0.0012345678, name="runs/a b=c", flag=False, kind="b", pair=(218, 178),
                       fractions=(0.7, 0.2 + 0.1, 1 / 3), names=("Smiling", "Male"), sizes=None)]
    cases += [Every(rate=f, fractions=(f, f, f)) for f in FLOATS]
    cases += [train_config.config_for("tiny", lr=0.0012345678, weight_decay=1 / 3, warmup_epochs=0.1 + 0.2, epochs=3,
                                 image_size=(61, 49), attributes=("Smiling", "Male"), profile_steps=(2, 4),
                                 mixup=0.2 + 0.1, progress=False),
              train_config.config_for("small", dropout=2.0 ** -40, lr=1e-12, rotation_deg=123456789.0123)]
    for case in cases:
        with tempfile.NamedTemporaryFile("w", suffix=".flags", delete=False) as f:
            f.write(options.as_flagfile(case))
        flags.FLAGS.unparse_flags()
        argv = ["prog", f"--flagfile={f.name}"]
        flags.FLAGS(argv)
        back = train.build_config()[0] if isinstance(case, train_config.TrainConfig) else \
            config_flags.build(Every, argv=argv)[0]
        assert back == case, (case, back, open(f.name).read())
    for bad in (" runs/x", "runs/x ", "a\\nb"):  # what a flagfile line cannot hold is refused up front
        try:
            options.validate(Every(name=bad))
        except options.OptionError as e:
            assert "leading or trailing spaces or a line break" in str(e), e
        else:
            raise AssertionError(bad)
    print("round trips:", len(cases))
""").replace("FLOATS_HERE", repr(_AWKWARD_FLOATS))


def test_every_option_type_reads_back_exactly_from_a_written_flagfile():
    done = subprocess.run([sys.executable, "-c", _ROUND_TRIP], capture_output=True, text=True, cwd=ROOT,
                          timeout=120, env={**os.environ, "PYTHONPATH": os.path.join(ROOT, "src")})
    assert done.returncode == 0, done.stderr[-3000:]
    assert f"round trips: {2 + len(_AWKWARD_FLOATS) + 2}" in done.stdout


class StopAfter:
    """A stand-in for signals.StopSignals: asks the run to stop ("preempted") before its ``calls``+1-th call."""

    def __init__(self, calls: int):
        self.calls = calls

    def install(self) -> None:
        pass

    def __call__(self) -> str | None:
        self.calls -= 1
        return "preempted" if self.calls < 0 else None


@pytest.mark.slow
def test_a_stopped_run_with_an_unrounded_rate_resumes_from_its_flags_txt(shards, tmp_path):
    data_dir, _ = shards
    config = train_config.config_for("tiny", data_dir=data_dir, runs_root=str(tmp_path), lr=0.0012345678, epochs=1,
                                     batch=16, precision="float32", progress=False, evaluate_test=False,
                                     tflite="none")
    with pytest.raises(stopping.Stopped):
        trainer.train(config, stop=StopAfter(2))
    (run_dir,) = glob.glob(str(tmp_path / "tiny-*"))
    resumed = run_train([f"--flagfile={run_dir}/flags.txt"])
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert f"resuming run {run_dir}" in resumed.stdout
    assert glob.glob(str(tmp_path / "tiny-*")) == [run_dir]  # no new run beside the stopped one
    assert RunDirectory(run_dir).status()["status"] == "complete"


def test_a_pinned_unfinished_run_refuses_changed_settings_unless_allowed_and_records_the_change(shards, tmp_path):
    data_dir, _ = shards
    run_dir = str(tmp_path / "run")
    config = tiny_config(data_dir, run_dir, evaluate_test=False)
    with pytest.raises(stopping.Stopped):
        trainer.train(config, stop=StopAfter(1))
    record = {name: open(os.path.join(run_dir, name)).read() for name in ("config.json", "flags.txt", "status.json")}
    changed = dataclasses.replace(config, lr=0.01, epochs=2, progress=True)  # --progress may change freely
    with pytest.raises(ChangedSettingsError) as e:
        trainer.train(changed)
    message = str(e.value)
    assert f"{run_dir} holds an unfinished run recorded with other settings: epochs=1 (now 2), lr=0.003 (now 0.01)." \
        in message and "progress" not in message and "\n" not in message
    assert "--allow_changed_settings" in message and f"--flagfile={run_dir}/flags.txt" in message
    assert {name: open(os.path.join(run_dir, name)).read() for name in record} == record  # nothing written
    result = trainer.train(dataclasses.replace(changed, allow_changed_settings=True, progress=False))
    assert result["epochs"] == 2 and RunDirectory(run_dir).status()["status"] == "complete"
    recorded = json.load(open(os.path.join(run_dir, "config.json")))
    assert recorded["train"]["lr"] == 0.01 and recorded["train"]["epochs"] == 2
    (change,) = recorded["changes"]
    assert change["settings"] == {"epochs": [1, 2], "lr": [0.003, 0.01]} and change["time"]
    # flags.txt resumes the run as it now is, without carrying the one-time permission to later reruns
    flags_txt = open(os.path.join(run_dir, "flags.txt")).read()
    assert "--lr=0.01\n" in flags_txt and "--noallow_changed_settings" in flags_txt


@pytest.mark.parametrize("changes", [
    {"augment_on": "host"},
    {"precision": "mixed_float16", "jit_compile": True, "steps_per_execution": 3},
    {"augment_on": "none", "lr_schedule": "cosine", "warmup_epochs": 0.5, "epochs": 2, "optimizer": "adamw",
     "label_smoothing": 0.1, "class_weights": True, "mixup": True},
], ids=["host-augmentation", "float16-loss-scaling-xla", "cosine-adamw-smoothing-weights-mixup"])
def test_other_training_paths_run(shards, tmp_path, changes):
    data_dir, _ = shards
    from celeba_gender.inputs.augment import AugmentConfig

    mixup = changes.pop("mixup", False)
    config = tiny_config(data_dir, str(tmp_path / "run"), evaluate_test=False, **changes)
    if mixup:
        config = dataclasses.replace(config, augment_on="device", augment=AugmentConfig(mixup=0.2))
    result = trainer.train(config)
    history = open(os.path.join(result["run_dir"], "history.csv")).read().splitlines()
    row = dict(zip(history[0].split(","), history[1].split(",")))
    assert np.isfinite(float(row["loss"])) and 0 <= float(row["val_accuracy"]) <= 1
    assert result["precision"] == config.precision
    # The policy is process-wide: a mixed-precision run that left it set built the caller's next models in float16
    # (the loss tests of test_step failed by 4e-4 when they ran after this one in the same worker).
    assert keras.mixed_precision.global_policy().name == "float32"
    # Weighted classes: the best checkpoint is the best balanced accuracy, the figure the weights serve.
    metric = "balanced_accuracy" if config.class_weights else "accuracy"
    assert result["best_metric"] == metric and 0 <= float(row["val_balanced_accuracy"]) <= 1
    rows = list(csv.DictReader(open(os.path.join(result["run_dir"], "history.csv"))))
    assert result[f"best_validation_{metric}"] == pytest.approx(max(float(r[f"val_{metric}"]) for r in rows), abs=1e-6)
    if config.lr_schedule == "cosine":
        assert 0 < float(row["lr"]) < config.lr  # after epoch 1 of 2: past the warm-up peak, decaying
        assert float(history[2].split(",")[history[0].split(",").index("lr")]) < 1e-9  # decayed to 0 at the end


def test_under_loss_scaling_the_logged_rate_is_the_one_in_use_and_skipped_steps_are_counted(shards, tmp_path,
                                                                                            monkeypatch):
    """Dynamic loss scaling skips the update of a step whose gradients overflowed. The schedule follows the updates
    applied (optimizer.iterations, as Keras has it), so history.csv's lr must be the rate at those updates, not the
    nominal rate at the step count, and the skipped steps must be counted."""
    class Overflowing(keras.optimizers.LossScaleOptimizer):
        """An enormous initial scale: float16 gradients overflow until the scale has halved far enough."""

        def __init__(self, inner, **kwargs):
            super().__init__(inner, initial_scale=2.0**30, **kwargs)

    monkeypatch.setattr(keras.optimizers, "LossScaleOptimizer", Overflowing)
    data_dir, manifest = shards
    steps = manifest["splits"]["train"]["count"] // 16
    config = tiny_config(data_dir, str(tmp_path / "run"), precision="mixed_float16", lr_schedule="cosine", epochs=2,
                         augment_on="none", evaluate_test=False)
    result = trainer.train(config)
    lines = open(os.path.join(result["run_dir"], "history.csv")).read().splitlines()
    rows = [dict(zip(lines[0].split(","), line.split(","))) for line in lines[1:]]
    reader = tf.train.load_checkpoint(tf.train.latest_checkpoint(os.path.join(result["run_dir"], "checkpoints")))
    applied = int(reader.get_tensor("optimizer/inner_optimizer/_iterations/.ATTRIBUTES/VARIABLE_VALUE"))
    skipped = int(rows[-1]["skipped_steps"])
    assert 0 < skipped < 2 * steps and applied + skipped == 2 * steps
    schedule = keras.optimizers.schedules.CosineDecay(config.lr, decay_steps=2 * steps, alpha=0.0)
    assert float(rows[-1]["lr"]) == pytest.approx(float(schedule(applied)), rel=1e-4)  # not schedule(34) = 0
    assert float(rows[-1]["lr"]) > 0
    assert "skipped_steps" in event_tags(os.path.join(result["run_dir"], "train"))


def test_float16_wraps_the_optimizer_in_loss_scaling():
    adam = train_config.OptimizerSettings("adam", 1e-3, epochs=1)
    assert isinstance(optimizers.make_optimizer(adam, 10, loss_scaling=True), keras.optimizers.LossScaleOptimizer)
    assert not isinstance(optimizers.make_optimizer(adam, 10), keras.optimizers.LossScaleOptimizer)


def test_adam_with_a_weight_decay_it_would_ignore_is_refused_in_one_line():
    # Keras' Adam here applies no decay at all (what flags.txt would still record): the recipes' 0.0005 was lost.
    adam = train_config.OptimizerSettings("adam", 1e-3, epochs=1, weight_decay=5e-4)
    assert optimizers.weight_decay(optimizers.make_optimizer(adam, 10)) == 0.0
    with pytest.raises(train_config.TrainError) as e:
        train_config.config_for("tiny", optimizer="adam")  # the tiny recipe's weight decay, 0.0005
    message = str(e.value)
    assert "--optimizer=adam applies no weight decay" in message and "--weight_decay=0.0005" in message
    assert "use --optimizer=adamw" in message and "or --weight_decay=0" in message and "\n" not in message
    assert train_config.config_for("tiny", optimizer="adam", weight_decay=0).optimizer == "adam"
    adamw = train_config.OptimizerSettings("adamw", 1e-3, epochs=1, weight_decay=5e-4)
    assert optimizers.weight_decay(optimizers.make_optimizer(adamw, 10)) == 5e-4


def test_a_log_file_gets_plain_lines_and_tensorboard_gets_scalars_every_n_steps(shards, tmp_path):
    """As a cluster runs it: output to a file, no terminal. No carriage returns; a line per logging window;
    per-step training scalars and per-epoch validation on the same global-step axis."""
    data_dir, manifest = shards
    steps = manifest["splits"]["train"]["count"] // 16
    run_dir = str(tmp_path / "run")
    log = tmp_path / "train.log"
    with open(log, "wb") as out:
        done = subprocess.run([sys.executable, os.path.join(ROOT, "train.py"), "--arch=tiny", f"--data_dir={data_dir}",
                               f"--run_dir={run_dir}", "--batch=16", "--epochs=2", "--log_every_steps=4",
                               "--evaluate_test=false", "--tflite=none"], stdout=out, stderr=subprocess.STDOUT,
                              cwd=ROOT, timeout=300, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})
    text = log.read_bytes()
    assert done.returncode == 0, text[-3000:]
    assert b"\r" not in text
    lines = text.decode().splitlines()
    windows = [line for line in lines if line.startswith("epoch 1/2 step ")]
    assert [w.split()[3] for w in windows] == [f"{s}/{steps}:" for s in range(4, steps, 4)] + [f"{steps}/{steps}:"]
    assert all(" lr " in w and " img/s, input wait " in w for w in windows)
    train_steps = event_tags(os.path.join(run_dir, "train"))
    expected = sorted({*range(4, 2 * steps + 1, 4), steps, 2 * steps})
    assert sorted(train_steps["loss"]) == sorted(train_steps["learning_rate"]) == expected
    assert sorted(event_tags(os.path.join(run_dir, "validation"))["accuracy"]) == [steps, 2 * steps]


def test_the_exported_keras_model_loads_in_a_python_that_never_imports_the_package(trained_run, tmp_path):
    _, result = trained_run
    code = textwrap.dedent("""
        import sys
        import keras, numpy as np
        model = keras.models.load_model(sys.argv[1])
        probs = model.predict(np.zeros((2, *model.input_shape[1:]), "uint8"), verbose=0)
        assert probs.shape == (2, 2) and np.allclose(probs.sum(-1), 1, atol=1e-5)
        assert not [m for m in sys.modules if m.startswith("celeba_gender")]
        print("loaded", model.input_shape, model.input.dtype)
    """)
    done = subprocess.run([sys.executable, "-c", code, result["export"]["keras"]], capture_output=True, text=True,
                          cwd=str(tmp_path), timeout=120, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})
    assert done.returncode == 0, done.stderr[-3000:]
    assert "loaded (None, 64, 52, 3) uint8" in done.stdout
