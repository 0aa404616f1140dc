"""What a finished run leaves for inference: ``export/model.keras`` and a SavedModel for TF Serving.

Both take the images as the pipeline gives them (uint8 RGB, any batch): the arch's preprocessing is
inside the model, so what is exported is what was trained. The SavedModel has two signatures:

- ``serving_default`` (alias of ``serve_jpeg``): a batch of encoded JPEG/PNG strings; each is decoded to the
  model's size by :func:`celeba_gender.inputs.decode.decode_image`, the training pipeline's own rule;
- ``serve_images``: uint8 images ``[N, height, width, 3]``.

Both return ``probabilities`` [N, classes], ``class_id`` [N] and ``class_name`` [N]; a multi-attribute model
returns ``probabilities`` [N, attributes] (one sigmoid each) and ``present`` [N, attributes] (probability >= the
attribute's decision threshold, chosen on the validation split and baked into the signature as a constant).
``model.tflite`` (:mod:`celeba_gender.serve.tflite`) is the same model for TensorFlow Lite runtimes (float32,
float16 or int8 weights), its probabilities only. ``labels.json`` names the outputs (``class_names``), says which kind the model is (``multi_label``) and, for a
multi-attribute model, holds the thresholds (``thresholds``, in the outputs' order) and the figure they were
chosen by (``threshold_metric``).
"""

from __future__ import annotations

import keras
import tensorflow as tf

from celeba_gender.core import fileio
from celeba_gender.inputs.decode import decode_image
from celeba_gender.serve import tflite as tflite_lib


def inference_model(core: keras.Model, image_size: tuple[int, int]) -> keras.Model:
    """uint8 images [N, h, w, 3] -> probabilities: the trained model (preprocessing inside) behind a uint8 input.

    Built-in Keras layers only (the training-only augmentation stays out), so ``model.keras`` loads with plain
    ``keras.models.load_model`` wherever Keras is installed, without this package.
    """
    inputs = keras.Input((*image_size, 3), dtype="uint8", name="image")
    as_float = keras.layers.Rescaling(1.0, name="as_float", dtype="float32")(inputs)  # a cast, as a layer
    return keras.Model(inputs, core(as_float), name=f"{core.name}_inference")


def export(core: keras.Model, export_dir: str, image_size: tuple[int, int], class_names: list[str],
           multi_label: bool = False, thresholds: tuple[float, ...] | None = None,
           threshold_metric: str = "", tflite: str = tflite_lib.FLOAT32) -> dict:
    """Writes the inference model of ``core`` as ``model.keras``, ``labels.json`` (output names, input size,
    kind, the arch's Grad-CAM layer, a multi-attribute model's decision ``thresholds``: 0.5 each when None),
    ``saved_model/`` and, unless ``tflite`` is ``none``, ``model.tflite`` with ``tflite``'s weights under
    ``export_dir``; returns their paths."""
    if multi_label:
        thresholds = tuple(float(t) for t in thresholds) if thresholds is not None else (0.5,) * len(class_names)
        if len(thresholds) != len(class_names):
            raise ValueError(f"{len(thresholds)} thresholds for {len(class_names)} attributes")
    model = inference_model(core, image_size)
    with fileio.disk_space_for("the export (model.keras, the SavedModel, model.tflite)", export_dir,
                                intact="The run's checkpoints are intact: rerun the same command to export again."):
        paths = _write(model, export_dir, image_size, class_names, multi_label, _gradcam_layer(core),
                       thresholds if multi_label else None, threshold_metric)
        paths["tflite"] = tflite_lib.write(model, export_dir, image_size, tflite)
        return paths


def _gradcam_layer(core: keras.Model) -> str:
    # predict.py --explain reads it from labels.json: the registry's layer for the arch the core is named after.
    from celeba_gender.models import registry

    spec = registry.ARCHS.get(core.name)
    return spec.gradcam_layer if spec else ""


def _write(model: keras.Model, export_dir: str, image_size: tuple[int, int], class_names: list[str],
           multi_label: bool = False, gradcam_layer: str = "", thresholds: tuple[float, ...] | None = None,
           threshold_metric: str = "") -> dict:
    fileio.makedirs(export_dir)  # local, or any tf.io.gfile URL
    keras_path = fileio.join(export_dir, "model.keras")
    model.save(keras_path)
    labels = {"class_names": list(class_names), "image_size": list(image_size), "multi_label": multi_label,
              "gradcam_layer": gradcam_layer}
    if multi_label:
        labels.update({"thresholds": list(thresholds), "threshold_metric": threshold_metric})
    fileio.write_json(fileio.join(export_dir, "labels.json"), labels)
    names = tf.constant(class_names)
    # float32, as the probabilities: the thresholds are float32 numbers (multilabel.choose_thresholds), so
    # this comparison decides exactly as evaluation and predict.py do.
    cut = tf.constant(thresholds, tf.float32) if multi_label else None

    def outputs(probs):
        probs = tf.cast(probs, tf.float32)
        if multi_label:
            return {"probabilities": probs, "present": probs >= cut}
        class_id = tf.argmax(probs, axis=-1, output_type=tf.int32)
        return {"probabilities": probs, "class_id": class_id, "class_name": tf.gather(names, class_id)}

    def serve_images(images):
        return outputs(model(images, training=False))

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
    saved_model = fileio.join(export_dir, "saved_model")
    archive.write_out(saved_model, verbose=False)
    return {"keras": keras_path, "saved_model": saved_model}
