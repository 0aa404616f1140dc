"""What a finished run leaves for inference: ``export/model.keras`` and a SavedModel for TF Serving.

Both take the images as the pipeline gives them (uint8 RGB, any batch): the arch's preprocessing is
inside the model, so what is exported is what was trained. The SavedModel has two signatures:

- ``serving_default`` (alias of ``serve_jpeg``): a batch of encoded JPEG/PNG strings; each is decoded to the
  model's size by :func:`celeba_gender.inputs.decode.decode_image`, the training pipeline's own rule;
- ``serve_images``: uint8 images ``[N, height, width, 3]``.

What they return is the task's (tasks.base.Task.serving_outputs): ``probabilities`` [N, classes], ``class_id``
[N] and ``class_name`` [N] for one attribute's classes; ``probabilities`` [N, attributes] (one sigmoid each) and
``present`` [N, attributes] (probability >= the attribute's decision threshold, chosen on the validation split and
baked into the signature as a constant) for several attributes. ``labels.json`` is the task's record (``kind``,
``outputs``, and for attributes the ``thresholds`` in the outputs' order and the ``threshold_metric`` they were
chosen by), with ``class_names`` (the outputs), the input size and the arch's Grad-CAM layer.
``model.tflite`` (:mod:`celeba_gender.serve.tflite`) is the same model for TensorFlow Lite runtimes (float32,
float16 or int8 weights): its probabilities only (labels.json beside it says what they are).
"""

from __future__ import annotations

import keras
import tensorflow as tf

from celeba_gender.core import fileio
from celeba_gender.inputs.decode import decode_image
from celeba_gender.models import registry
from celeba_gender.serve import tflite as tflite_lib
from celeba_gender.tasks.base import Task

LABELS = "labels.json"


def inference_model(core: keras.Model, image_size: tuple[int, int]) -> keras.Model:
    """uint8 images [N, h, w, 3] -> probabilities: the trained model (preprocessing inside) behind a uint8 input.

    Built-in Keras layers only (the training-only augmentation stays out), so ``model.keras`` loads with plain
    ``keras.models.load_model`` wherever Keras is installed, without this package.
    """
    inputs = keras.Input((*image_size, 3), dtype="uint8", name="image")
    as_float = keras.layers.Rescaling(1.0, name="as_float", dtype="float32")(inputs)  # a cast, as a layer
    return keras.Model(inputs, core(as_float), name=f"{core.name}_inference")


def export(core: keras.Model, export_dir: str, image_size: tuple[int, int], task: Task,
           tflite: str = tflite_lib.FLOAT32) -> dict:
    """Writes the inference model of ``core`` as ``model.keras``, ``labels.json`` (the task's record: its outputs,
    kind and decisions; the input size and the arch's Grad-CAM layer), ``saved_model/`` and, unless ``tflite`` is
    ``none``, ``model.tflite`` with ``tflite``'s weights under ``export_dir``; returns their paths."""
    model = inference_model(core, image_size)
    with fileio.disk_space_for("the export (model.keras, the SavedModel, model.tflite)", export_dir,
                               intact="The run's checkpoints are intact: rerun the same command to export again."):
        fileio.makedirs(export_dir)  # local, or any tf.io.gfile URL
        keras_path = fileio.join(export_dir, "model.keras")
        model.save(keras_path)
        fileio.write_json(fileio.join(export_dir, LABELS), {
            **task.to_record(), "class_names": list(task.outputs), "image_size": list(image_size),
            "gradcam_layer": gradcam_layer(core.name)})
        saved_model = fileio.join(export_dir, "saved_model")
        _write_saved_model(model, saved_model, image_size, task)
        return {"keras": keras_path, "saved_model": saved_model,
                "tflite": tflite_lib.write(model, export_dir, image_size, tflite)}


def gradcam_layer(arch: str) -> str:
    """The registry's Grad-CAM layer of an arch (the core model is named after it); "" when unknown.
    predict.py --explain reads it from labels.json."""
    spec = registry.ARCHS.get(arch)
    return spec.gradcam_layer if spec else ""


def _write_saved_model(model: keras.Model, path: str, image_size: tuple[int, int], task: Task) -> None:
    def serve_images(images):
        return task.serving_outputs(model(images, training=False))

    def serve_jpeg(encoded):
        # JPEG, PNG, BMP or GIF (first frame), any size: decoded exactly as training and evaluation decode.
        images = tf.map_fn(lambda e: decode_image(e, image_size), encoded,
                           fn_output_signature=tf.TensorSpec((*image_size, 3), tf.uint8))
        return serve_images(images)

    archive = keras.export.ExportArchive()
    archive.track(model)
    archive.add_endpoint("serve_jpeg", serve_jpeg, input_signature=[tf.TensorSpec([None], tf.string, name="jpeg")])
    archive.add_endpoint("serve_images", serve_images,
                         input_signature=[tf.TensorSpec([None, *image_size, 3], tf.uint8, name="images")])
    archive.write_out(path, verbose=False)
