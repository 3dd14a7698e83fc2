"""agegender-calibrate --adapt: model B's heads retrained for a user's population, on cached
backbone features of their fitting faces together with UTKFace's training faces.

A correction of the output cannot tell an older-looking 30-year-old from a younger-looking
50-year-old; the heads can, from the features. The backbone stays as it is (frozen, as in
model B's phase 1), so the features are computed once and each training takes seconds.
The heads start from model B's own weights; the user's faces (and their mirror images)
weigh as much in total as the training faces, so neither population is forgotten.

Two-fold cross-fitting gives every fitting face a prediction from heads that did not see it:
the calibration after adapting is fitted on those, so its range is honest about the new
heads (a little wide: those are one head's answers, the model kept averages several). The
heads kept are then trained on all the fitting faces, BAG times with other seeds, and the
model averages their answers: on 400 faces one head's MAE moves by up to 0.1 year with the
seed alone (AAF-train-2000, 1,600 faces checked: 5.51-5.60), five together hold it at 5.51
or below.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np

from agegender.errors import UserError
from agegender.files import atomic_path

LEARNING_RATE = 3e-4  # model B's phase 1 used 1e-3 from the file's heads: a gentler start
BATCH_SIZE = 64
# (epochs, the user's faces' share of the total sample weight): tried in turn, the one with
# the lowest cross-fitted age MAE on the fitting faces is kept (never the checking faces)
SETTINGS = ((8, 0.5), (16, 0.8), (24, 0.8))
BAG = 5  # heads trained on all the fitting faces, each with its own seed; the model averages
LOSS_WEIGHTS = {"age": 0.1, "gender": 1.0}  # model B's (params.yaml model_b.loss)


def _features(extractor, images: np.ndarray, batch_size: int = 256) -> np.ndarray:
    return extractor.predict(np.asarray(images), batch_size=batch_size, verbose=0)


def _train(head, initial, x, age, gender, weight, seed: int, epochs: int) -> None:
    import keras

    # each fold predicts a batch of another size: TensorFlow's retracing notice is no news
    logging.getLogger("tensorflow").setLevel(logging.ERROR)

    keras.utils.set_random_seed(seed)
    head.set_weights(initial)
    head.compile(
        optimizer=keras.optimizers.Adam(LEARNING_RATE),
        loss={"age": "mae", "gender": "binary_crossentropy"},
        loss_weights=LOSS_WEIGHTS,
    )
    targets = {"age": age.astype("float32"), "gender": gender.astype("float32")}
    head.fit(x, targets, sample_weight=weight, batch_size=BATCH_SIZE, epochs=epochs, verbose=0)


def _predict(head, plain: np.ndarray, mirrored: np.ndarray) -> np.ndarray:
    """(N, 2) age and P(female), averaged with the mirror image's, as evaluate does."""
    out = []
    for x in (plain, mirrored):
        y = head.predict(x, batch_size=1024, verbose=0)
        out.append(np.concatenate([np.asarray(y["age"]), np.asarray(y["gender"])], axis=1))
    return (out[0] + out[1]) / 2


def cache_folder() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "agegender"


def cached_features(extractor, images: np.ndarray, key: str) -> np.ndarray:
    """The training faces' features and their mirror images', computed once per model and
    training set (`key`) and kept in ~/.cache/agegender: a second --adapt starts at once."""
    path = cache_folder() / f"train-features-{key}.npy"
    if path.is_file():
        try:
            features = np.load(path, allow_pickle=False)
            if len(features) == 2 * len(images):
                print(f"adapt: UTKFace training faces' features from {path}")
                return features
        except (OSError, ValueError):
            pass  # a damaged cache file is computed again
    print(f"adapt: backbone features of {len(images)} UTKFace training faces, mirrored too")
    features = np.concatenate(
        [_features(extractor, images), _features(extractor, images[:, :, ::-1])]
    )
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(path) as tmp, open(tmp, "wb") as f:
            np.save(f, features, allow_pickle=False)
    except OSError as error:  # a cache that cannot be written only costs time
        print(f"adapt: not cached ({error.strerror or error})")
    return features


def adapt(
    model,
    fit_images: np.ndarray,
    fit_age: np.ndarray,
    fit_gender: np.ndarray,
    train: tuple[np.ndarray, np.ndarray, np.ndarray] | None,
    seed: int,
    cache_key: str = "",
) -> tuple[object, np.ndarray, callable]:
    """(the model with retrained heads, out-of-fold (N, 2) predictions on the fitting faces,
    a function giving the adapted model's predictions for more face images).

    `train`: UTKFace's training faces (images, age, gender), or None to adapt on the
    user's faces alone; `cache_key` names their features in the cache (cached_features).
    Faces without a gender label train the age head only."""
    from agegender.models.model_b import split_at_features

    try:
        model.get_layer("features")
    except ValueError:
        raise UserError(
            "--adapt retrains the heads of model B (a model with a `features` layer); pass "
            "--model B or a model B file"
        ) from None
    extractor, head = split_at_features(model)
    print(f"adapt: backbone features of {len(fit_images)} of your faces, mirrored too")
    mine = _features(extractor, fit_images)
    mine_mirrored = _features(extractor, fit_images[:, :, ::-1])
    parts_x, parts_age, parts_gender = [], [], []
    if train is not None:
        images, age, gender = train
        x = cached_features(extractor, images, cache_key)
        parts_x.append(x)
        parts_age.append(np.concatenate([age, age]))
        parts_gender.append(np.concatenate([gender, gender]))
    initial = head.get_weights()

    def train_on(rows: np.ndarray, epochs: int, share: float, train_seed: int = seed) -> None:
        x = np.concatenate([*parts_x, mine[rows], mine_mirrored[rows]])
        age = np.concatenate([*parts_age, fit_age[rows], fit_age[rows]])
        gender = np.concatenate([*parts_gender, fit_gender[rows], fit_gender[rows]])
        own = np.zeros(len(x), bool)
        own[len(x) - 2 * len(rows) :] = True
        share = share if parts_x else 1.0
        weight = np.where(own, share / own.sum(), (1 - share) / max((~own).sum(), 1))
        weight = (weight * len(x)).astype("float32")  # mean weight 1
        known = gender >= 0
        gender_weight = np.where(known, weight, 0.0).astype("float32")
        _train(
            head, initial, x, age, np.where(known, gender, 0),
            {"age": weight, "gender": gender_weight}, train_seed, epochs,
        )  # fmt: skip

    order = np.random.default_rng(seed).permutation(len(fit_images))
    folds = [np.sort(order[::2]), np.sort(order[1::2])]
    tried = {}
    for epochs, share in SETTINGS:
        out_of_fold = np.empty((len(fit_images), 2))
        for fit, held in (folds, folds[::-1]):
            train_on(fit, epochs, share)
            out_of_fold[held] = _predict(head, mine[held], mine_mirrored[held])
        tried[(epochs, share)] = out_of_fold
        mae = np.mean(np.abs(out_of_fold[:, 0] - fit_age))
        print(
            f"adapt: {epochs} epochs, your faces {share:.0%} of the weight: age MAE {mae:.2f} "
            f"on your fitting faces, each from heads trained on the other half"
        )
    (epochs, share), out_of_fold = min(
        tried.items(), key=lambda item: np.mean(np.abs(item[1][:, 0] - fit_age))
    )
    print(
        f"adapt: {BAG} heads trained on all your fitting faces ({epochs} epochs, {share:.0%}), "
        f"each with its own seed; the model averages them"
    )
    bag = []
    for k in range(BAG):
        train_on(np.arange(len(fit_images)), epochs, share, seed + k)
        bag.append(head.get_weights())
    bagged = averaged_heads(model, head, bag)
    extractor, head = split_at_features(bagged)

    def predict_images(images: np.ndarray) -> np.ndarray:
        return _predict(
            head, _features(extractor, images), _features(extractor, images[:, :, ::-1])
        )

    return bagged, out_of_fold, predict_images


def averaged_heads(model, head, weights: list[list[np.ndarray]]):
    """Model B with one copy of its heads per set of `weights`, their answers averaged: one
    file that still takes raw pixels, with its `features` layer where it was."""
    import keras

    features = model.get_layer("features").output
    answers = []
    for k, values in enumerate(weights):
        copy = keras.models.clone_model(head)
        copy = keras.Model(copy.input, copy.output, name=f"heads_{k}")  # outputs by name
        copy.set_weights(values)
        answers.append(copy(features))
    outputs = {
        name: keras.layers.Average(name=name)([answer[name] for answer in answers])
        for name in ("age", "gender")
    }
    return keras.Model(model.input, outputs, name=model.name)
