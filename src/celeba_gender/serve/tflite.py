"""``export/model.tflite``: the exported model for phones and edge devices, and a small runner for it.

TensorFlow's own converter (``tf.lite.TFLiteConverter``) turns the inference model (uint8 images
``[N, height, width, 3]`` in, the probabilities out, the arch's preprocessing inside) into one TensorFlow Lite
flatbuffer of builtin ops only, so any TensorFlow Lite / LiteRT runtime (Android, iOS, a Raspberry Pi's
``ai-edge-litert``, microcontrollers aside) runs it without TensorFlow. Its one input is ``image`` (uint8,
any batch), its one output the probabilities [N, classes] (a softmax), or [N, attributes] (one sigmoid each)
for a multi-attribute model; ``labels.json`` beside it names the outputs and holds the attributes' decision
thresholds. The choices (``--tflite``):

- ``float32``: the weights as trained; the same probabilities as the SavedModel up to float rounding.
- ``float16``: the weights stored as float16 (half the file); computed in float32 on CPUs, in float16 by
  GPU delegates that support it.
- ``dynamic_int8``: the weights stored as int8 (a quarter of the file), activations quantized on the fly
  (dynamic-range quantization): smaller and faster on CPUs, at some cost in agreement.
- ``none``: no TensorFlow Lite file.

:class:`TFLiteModel` runs the file like a Keras model (``model(images)`` -> probabilities), with TensorFlow's
interpreter, so that ``predict.py --model=RUN/export/model.tflite`` answers with it.
"""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
import warnings
from collections.abc import Iterator

import numpy as np

FLOAT32, FLOAT16, DYNAMIC_INT8, NONE = "float32", "float16", "dynamic_int8", "none"
CHOICES = (FLOAT32, FLOAT16, DYNAMIC_INT8, NONE)
FILE = "model.tflite"


def _policies_to_float32(config):
    """A serialized Keras object with every layer's dtype policy float32 (a mixed policy's variables are float32
    already: only what the layers compute in changes)."""
    if isinstance(config, dict):
        if config.get("class_name") == "DTypePolicy" and isinstance(config.get("config"), dict):
            return {**config, "config": {**config["config"], "name": "float32"}}
        return {k: _policies_to_float32(v) for k, v in config.items()}
    if isinstance(config, list):
        return [_policies_to_float32(v) for v in config]
    return config


def in_float32(model):
    """``model`` itself when every layer computes in float32, else a float32 copy with the same weights: a model
    trained under mixed_float16 or mixed_bfloat16 (the GPU default) computes in 16 bits, which TensorFlow Lite's
    builtin kernels do not (they would need TensorFlow's own ops, Select TF ops, in the app)."""
    import keras

    computing = [layer for layer in _all_layers(model)
                 if not hasattr(layer, "layers") and not isinstance(layer, keras.layers.InputLayer)]
    if all(layer.dtype_policy.name == "float32" for layer in computing):
        return model
    copy = keras.saving.deserialize_keras_object(_policies_to_float32(keras.saving.serialize_keras_object(model)))
    copy.set_weights(model.get_weights())
    return copy


def _all_layers(model) -> list:
    layers = []
    for layer in model.layers:
        layers.append(layer)
        if hasattr(layer, "layers"):  # a nested model (the network inside the inference model)
            layers += _all_layers(layer)
    return layers


def convert(model, image_size: tuple[int, int], quantize: str = FLOAT32) -> bytes:
    """The TensorFlow Lite flatbuffer of ``model`` (uint8 images [N, h, w, 3] -> probabilities, as
    :func:`celeba_gender.serve.export.inference_model` builds it), computed in float32 (:func:`in_float32`),
    with ``quantize``'s weights."""
    import tensorflow as tf

    if quantize not in (FLOAT32, FLOAT16, DYNAMIC_INT8):
        raise ValueError(f"quantize={quantize!r}: choose one of {FLOAT32}, {FLOAT16}, {DYNAMIC_INT8}")
    model = in_float32(model)

    import keras

    def probabilities(images):
        return {"probabilities": tf.cast(model(images, training=False), tf.float32)}

    # Keras 3's documented path to the converter: an ExportArchive (its variables as the SavedModel's), then
    # from_saved_model (from_concrete_functions does not see a Keras 3 model's variables).
    with tempfile.TemporaryDirectory() as saved_model:
        archive = keras.export.ExportArchive()
        archive.track(model)
        archive.add_endpoint("serve", probabilities,
                             input_signature=[tf.TensorSpec([None, *image_size, 3], tf.uint8, name="image")])
        archive.write_out(saved_model, verbose=False)
        converter = tf.lite.TFLiteConverter.from_saved_model(saved_model)
        if quantize != FLOAT32:
            converter.optimizations = [tf.lite.Optimize.DEFAULT]  # without a representative set: weights only
        if quantize == FLOAT16:
            converter.target_spec.supported_types = [tf.float16]
        return converter.convert()


def write(model, export_dir: str, image_size: tuple[int, int], quantize: str = FLOAT32) -> str | None:
    """Writes ``export_dir/model.tflite`` (:func:`convert`) and returns its path; None for ``quantize='none'``."""
    from celeba_gender.core import fileio

    if quantize == NONE:
        return None
    flatbuffer = convert(model, image_size, quantize)
    fileio.makedirs(export_dir)
    path = fileio.join(export_dir, FILE)
    fileio.write_bytes(path, flatbuffer)
    return path


@contextlib.contextmanager
def _without_delegate_notice() -> Iterator[None]:
    """The block's writes to file descriptor 2 without TensorFlow Lite's ``INFO: Created TensorFlow Lite XNNPACK
    delegate for CPU.`` (its own logger, which TF_CPP_MIN_LOG_LEVEL does not reach); anything else is kept."""
    sys.stderr.flush()
    try:
        saved = os.dup(2)
    except OSError:  # no stderr descriptor: nothing to tidy
        yield
        return
    with tempfile.TemporaryFile() as captured:
        os.dup2(captured.fileno(), 2)
        try:
            yield
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            captured.seek(0)
            text = captured.read().decode("utf-8", errors="replace")
            kept = "".join(line for line in text.splitlines(keepends=True)
                           if not line.startswith("INFO: Created TensorFlow Lite XNNPACK delegate"))
            if kept:
                sys.stderr.write(kept)
                sys.stderr.flush()


class TFLiteModel:
    """A ``model.tflite`` run by TensorFlow's interpreter, called like the Keras model it was converted from:
    ``model(images)`` with uint8 images [N, h, w, 3] gives the probabilities [N, outputs] as float32."""

    def __init__(self, path: str, num_threads: int | None = None):
        import tensorflow as tf

        self.path = path
        # TensorFlow's own interpreter, so that no other package is needed: TensorFlow 2.21 warns that it will
        # move to LiteRT (ai-edge-litert, whose Interpreter takes the same file); this package pins 2.21.
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*tf.lite.Interpreter is deprecated", category=UserWarning)
            self.interpreter = tf.lite.Interpreter(model_path=path, num_threads=num_threads or os.cpu_count())
        self._input = self.interpreter.get_input_details()[0]
        self._output = self.interpreter.get_output_details()[0]
        self.input_shape = (None, *(int(d) for d in self._input["shape"][1:]))
        with _without_delegate_notice():
            self.interpreter.allocate_tensors()  # applies the default (XNNPACK) delegate, which announces itself
        self._batch = int(self._input["shape"][0])

    def __call__(self, images, training: bool = False) -> np.ndarray:
        images = np.asarray(images, np.uint8)
        if len(images) != self._batch:  # the batch dimension is dynamic: size the tensors for this batch
            self.interpreter.resize_tensor_input(self._input["index"], [len(images), *self.input_shape[1:]])
            self.interpreter.allocate_tensors()
            self._batch = len(images)
        self.interpreter.set_tensor(self._input["index"], images)
        self.interpreter.invoke()
        return np.array(self.interpreter.get_tensor(self._output["index"]), np.float32)

    def predict(self, images, batch_size: int = 64, verbose: int = 0) -> np.ndarray:
        """Probabilities of ``images`` in batches of ``batch_size`` (as ``keras.Model.predict``)."""
        images = np.asarray(images, np.uint8)
        return np.concatenate([self(images[i:i + batch_size]) for i in range(0, len(images), batch_size)])
