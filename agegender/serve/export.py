"""A trained model as a TensorFlow SavedModel and a TFLite file (`agegender-predict --export`)."""

from __future__ import annotations

from pathlib import Path

import keras

from agegender.errors import UserError
from agegender.files import atomic_folder, atomic_path


def export(model: keras.Model, folder: Path) -> None:
    """A TensorFlow SavedModel (endpoint `serve`) and, where it converts, a TFLite file.

    Both take uint8 (N, S, S, 3) and return age and gender like the .keras model; flip
    averaging is left to the caller, as it is a second forward pass. The endpoint passes
    training=False: `model.export()` traces the model with no training flag, so Keras uses
    training-time behaviour (random augmentation, BatchNorm batch statistics); model A's
    SavedModel then disagreed with predict() and TFLite had no kernels for the random ops.
    """
    import tensorflow as tf

    if folder.exists() and not folder.is_dir():
        raise UserError(f"--export {folder}: is a file; give a folder (new or existing)")
    for name, want_dir in (("model.tflite", False), ("saved_model", True)):
        taken = folder / name
        if taken.exists() and taken.is_dir() != want_dir:
            kind = "a folder" if taken.is_dir() else "a file"
            raise UserError(
                f"--export {folder}: {taken} is {kind}; remove it or choose another folder"
            )
    folder.mkdir(parents=True, exist_ok=True)
    saved = folder / "saved_model"
    archive = keras.export.ExportArchive()
    archive.track(model)
    archive.add_endpoint(
        "serve",
        lambda image: model(image, training=False),
        input_signature=[keras.InputSpec(shape=(None, *model.input_shape[1:]), dtype="uint8")],
    )
    with atomic_folder(saved) as tmp:
        archive.write_out(str(tmp), verbose=False)
    print(f"export: wrote {saved} (SavedModel, endpoint 'serve')")
    try:
        tflite = tf.lite.TFLiteConverter.from_saved_model(str(saved)).convert()
    except Exception as error:
        reason = (str(error).strip().splitlines() or [type(error).__name__])[0][:200]
        (folder / "model.tflite").unlink(missing_ok=True)  # an older one would not match
        print(f"export: no TFLite file, conversion failed ({reason}); the SavedModel is complete")
        return
    with atomic_path(folder / "model.tflite") as path:
        path.write_bytes(tflite)
    print(f"export: wrote {folder / 'model.tflite'} (TFLite)")
