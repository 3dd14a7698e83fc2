"""scripts/tune.py's pieces: the search space in params.yaml, checked strictly; a trial's
params written into params.yaml with its comments and put back however the trial ends;
the score. (The search itself runs as DVC experiments in tests/test_pipeline.py.)"""

from __future__ import annotations

import copy

import optuna
import pytest
import yaml

from agegender import params as P
from agegender.errors import UserError
from scripts import tune
from tests.conftest import ROOT

BASE = yaml.safe_load((ROOT / "params.yaml").read_text())


def load_with(tmp_path, model: str, space: dict) -> P.Params:
    raw = copy.deepcopy(BASE)
    raw["tune"][model]["space"] = space
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    return P.load(tmp_path / "params.yaml")


@pytest.mark.parametrize(
    "space, message",
    [
        ({"model_a.colour": {"choices": [1]}}, "tune.model_a.space.model_a.colour: not a value"),
        ({"model_a.fit": {"choices": [1]}}, "space.model_a.fit: not a value"),  # a section
        ({"tune.seed": {"choices": [1]}}, "space.tune.seed: not a value"),
        ({"model_a.dropout": {"low": 0.5, "high": 0.1, "log": False}}, "low must be below high"),
        ({"model_a.l2": {"low": 0.0, "high": 0.1, "log": True}}, "log needs low > 0"),
        ({"model_a.dropout": {"low": 0.1, "high": 0.5}}, "log: missing"),
        ({"model_a.dropout": {"choices": []}}, "choices: must hold one value or more"),
        ({}, "tune.model_a.space: must name one key or more"),
    ],
)
def test_a_bad_search_space_is_one_line_naming_the_key(tmp_path, space, message):
    with pytest.raises(P.ParamsError, match=message.replace("(", r"\(").replace("[", r"\[")):
        load_with(tmp_path, "model_a", space)


def test_the_committed_space_loads_and_holds_the_defaults():
    """Trial 0 is the defaults: each must lie in its range or be among its choices."""
    params = P.load(ROOT / "params.yaml")
    for model in ("model_a", "model_b"):
        search = getattr(params.tune, model)
        for key, value in tune.defaults(params, search).items():
            spec = search.space[key]
            if isinstance(spec, P.Choice):
                assert value in [tune.json.dumps(c) for c in spec.choices], key
            else:
                assert spec.low <= value <= spec.high, key


def test_a_trial_writes_its_values_keeping_comments_and_puts_the_file_back(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    original = (ROOT / "params.yaml").read_bytes()
    (tmp_path / "params.yaml").write_bytes(original)
    values = {"model_a.dropout": 0.25, "model_a.branch_filters": [128]}
    text, params = tune.trial_params(original, values)
    assert params.model_a.dropout == 0.25 and params.model_a.branch_filters == [128]
    assert b"# multi-task CNN trained from scratch" in text  # comments kept
    assert (tmp_path / "params.yaml").read_bytes() == original  # untouched while it trains
    with tune.workspace_params(original, text):  # while its experiment is saved
        assert (tmp_path / "params.yaml").read_bytes() == text
    assert (tmp_path / "params.yaml").read_bytes() == original
    with pytest.raises(RuntimeError), tune.workspace_params(original, text):
        raise RuntimeError("a save that fails")
    assert (tmp_path / "params.yaml").read_bytes() == original
    with pytest.raises(UserError, match=r"params.yaml with the trial's values .*model_a.dropout"):
        tune.trial_params(original, {"model_a.dropout": 1.5})


def test_a_save_in_flight_is_waited_for_and_its_error_raised():
    """The next trial trains while the last one's experiment is saved; nothing is lost."""
    import threading
    import time

    saved, started = [], threading.Event()

    def save(n: int) -> None:
        started.set()
        time.sleep(0.2)
        if n == 2:
            raise OSError("disk full")
        saved.append(n)

    saver = tune.Saver()
    saver.submit(save, 1)
    assert started.wait(5) and saved == []  # in flight: submit() did not wait for it
    saver.submit(save, 2)  # waits for the first
    assert saved == [1]
    with pytest.raises(OSError, match="disk full"):
        saver.wait()
    saver.wait()  # raised once


def test_the_score_weighs_a_point_of_gender_accuracy_in_years():
    assert tune.score({"val_age_mae": 5.0, "val_gender_accuracy": 0.9}, 0.15) == pytest.approx(6.5)


def test_choices_travel_as_json_and_come_back_as_lists():
    search = P.Search(epochs=1, space={"model_a.branch_filters": P.Choice([[96], [192]])})
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    values = tune.suggest(study.ask(), search)
    assert values["model_a.branch_filters"] in ([96], [192])


def test_b_features_are_computed_once_and_reused_until_the_faces_or_weights_change(
    tmp_path, monkeypatch
):
    """A rerun (after Ctrl-C, or for more trials) loads the features a run before kept; new
    faces or new backbone weights are a new digest, so stale features are never read."""
    import keras
    import numpy as np

    from agegender.data import Split

    monkeypatch.setattr(tune, "FEATURES", tmp_path / "features")
    params = P.load(ROOT / "params.yaml")
    extractor = keras.Sequential([keras.Input((4, 4, 3)), keras.layers.Flatten()])
    rng = np.random.default_rng(0)

    def split(n: int) -> Split:
        images = rng.integers(0, 255, (n, 4, 4, 3), dtype=np.uint8)
        return Split(images, np.full(n, 30), np.zeros(n), np.zeros(n), np.array(["x"] * n))

    train, val = split(6), split(3)
    computed = []

    def flat(images: np.ndarray) -> np.ndarray:
        return (images.reshape(len(images), -1) / 255).astype("float32")

    def fake(extractor, head, train, val, batch, loader):  # the backbone pass, counted
        computed.append(len(train))
        mirrored = np.concatenate([train.images, train.images[:, :, ::-1]])
        return (flat(mirrored), None), (flat(val.images), None)

    monkeypatch.setattr(tune, "cached_features", fake)
    x, val_x = tune.Features().get(params, extractor, None, train, val)
    again_x, again_val = tune.Features().get(params, extractor, None, train, val)  # a rerun
    assert computed == [6] and x.shape == (12, 48) and val_x.shape == (3, 48)
    np.testing.assert_array_equal(again_x, x)
    np.testing.assert_array_equal(again_val, val_x)
    assert not [p for p in (tmp_path / "features").rglob(".*")]  # no temporary file left
    tune.Features().get(params, extractor, None, split(6), val)  # other faces: computed anew
    assert computed == [6, 6]
    weighted = keras.Sequential(
        [keras.Input((4, 4, 3)), keras.layers.Flatten(), keras.layers.Dense(48)]
    )
    fake_weights = [w + 1 for w in weighted.get_weights()]
    tune.Features().get(params, weighted, None, train, val)
    weighted.set_weights(fake_weights)  # other backbone weights: computed anew
    tune.Features().get(params, weighted, None, train, val)
    assert computed == [6, 6, 6, 6]


def test_the_retrain_command_sets_the_trial_values_and_parses_back():
    """Printed at the end of a study: `dvc exp run -S` per value, quoted for the shell, so
    it runs on any later commit (only params.yaml changes)."""
    import shlex

    values = {"model_a.dropout": 0.2085, "model_a.branch_filters": "[128, 256]"}
    command = tune.retrain_command("model_a", values)
    words = shlex.split(command)
    assert words[:5] == ["dvc", "exp", "run", "-n", "tuned-model_a"]
    assert words[5:] == ["-S", "model_a.dropout=0.2085", "-S", "model_a.branch_filters=[128, 256]"]


def test_b_trials_run_many_steps_per_call_and_learn_the_same_numbers(monkeypatch):
    """tune.STEPS_PER_EXECUTION only saves Python between a trial's batches: the trial's
    best epoch and its val scores are the same to the bit as one step per call."""
    import dataclasses

    import numpy as np

    from agegender.data import Split
    from agegender.training.loop import setup

    params = P.load(ROOT / "params.yaml")
    model_b = dataclasses.replace(params.model_b, weights=None, head_init="random")
    params = dataclasses.replace(params, model_b=model_b)
    search = dataclasses.replace(params.tune.model_b, epochs=4)
    rng = np.random.default_rng(0)

    def split(n: int) -> Split:
        age, gender = rng.integers(1, 90, n), rng.integers(0, 2, n)
        return Split(np.zeros((n, 4, 4, 3), "uint8"), age, gender, np.zeros(n), np.array(["x"] * n))

    train, val = split(1300), split(40)  # 41 batches an epoch: calls of 32, then of 9
    features = tuple(rng.normal(size=(n, 1024)).astype("float32") for n in (2600, 40))

    class Cached:  # the backbone's features, as tune.Features would give them
        def get(self, *args):
            return features

    def best(steps: int) -> dict:
        monkeypatch.setattr(tune, "STEPS_PER_EXECUTION", steps)
        setup(params.seed, params.train)
        report = tune.Report(optuna.create_study().ask(), params.tune.gender_point)
        tune.train_b(params, search, report, (train, val), Cached())
        assert report.model.steps_per_execution == steps  # the head fit() trained
        return report.best

    steps = tune.STEPS_PER_EXECUTION
    assert steps > 1
    one, many = best(1), best(steps)
    assert one["epoch"] >= 1 and many == one
