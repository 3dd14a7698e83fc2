"""Hyperparameter search, the DVC way: a seeded Optuna study whose every trial is a DVC
experiment (its params.yaml and val scores in `dvc exp show`).

    python scripts/tune.py model_b --trials 40    # B's heads on cached features: seconds each
    python scripts/tune.py model_a --trials 30 --minutes 40   # A: shortened, pruned early
    dvc exp show --drop '.*' --keep 'Experiment|score|val_age_mae|val_gender_acc|dropout'
                                                   # every trial's values and val scores
    dvc exp apply tune-model_b-007 && dvc exp run -n tuned  # the best (on the study's commit;
                                                   # later, the `dvc exp run -S` it prints)
    python scripts/compare_runs.py HEAD tuned      # a gain beyond the spread of seeds?

The space is params.yaml's `tune:` section. Trial 0 is the defaults, at the trial's
schedule, so the best is judged against them on equal terms. A trial trains on train,
scores on val only (val age MAE + tune.gender_point x val gender error in points, at the
epoch of lowest val loss, whose weights training keeps) and reports that score every epoch
to a median pruner. Trial n samples with tune.seed + n, so a study stopped with Ctrl-C and
rerun continues where it stood and draws what an uninterrupted run would have. The study
is a SQLite file, reports/tune/<model>.db (not in git); each trial's DVCLive folder,
reports/tune/<model>/, goes into its experiment and leaves the workspace after it.
"""

from __future__ import annotations

from agegender import runtime

runtime.configure()  # backend and threads from params.yaml, before anything imports Keras

import argparse
import concurrent.futures
import contextlib
import dataclasses
import hashlib
import json
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import keras
import numpy as np
import optuna
from dvc.utils.serialize import modify_yaml
from dvclive import Live

from agegender import params as P
from agegender.data import load_split
from agegender.errors import UserError, run
from agegender.files import atomic_path
from agegender.layout import FIT
from agegender.models.model_a import build_model_a
from agegender.models.model_b import build_model_b, split_at_features
from agegender.params import Choice, Params
from agegender.training.features import cached_features
from agegender.training.loop import Trainer, fit_callbacks, setup
from agegender.training.objective import compile_model, targets
from agegender.typed_yaml import set_at

STUDIES = Path("reports/tune")
FEATURES = STUDIES / ".features"  # model B's backbone features, reused by reruns
FINISHED = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
PRUNER_WARMUP = 3  # epochs every trial trains before the median pruner may stop it
# A B trial's batches are tiny (two dense heads on pooled features): run 32 in one call to
# the compiled step instead of returning to Python after each. Same numbers to the bit
# (tests/test_tune.py; all 40 trials of the committed study), 40 % less time an epoch.
STEPS_PER_EXECUTION = 32


def score(logs: dict, gender_point: float) -> float:
    """Lower is better: val age MAE plus the gender error in points, weighed in years."""
    return logs["val_age_mae"] + gender_point * 100 * (1 - logs["val_gender_accuracy"])


class Report(keras.callbacks.Callback):
    """Reports each epoch's score to the trial, stops training when the pruner says so, and
    keeps the logs of the epoch of lowest val loss (the weights training keeps)."""

    def __init__(self, trial: optuna.Trial, gender_point: float):
        super().__init__()
        self.trial, self.gender_point = trial, gender_point
        self.best: dict = {}
        self.pruned = False

    def on_epoch_end(self, epoch, logs=None):
        logs = {k: float(v) for k, v in (logs or {}).items()}
        if not self.best or logs["val_loss"] < self.best["val_loss"]:
            self.best = {**logs, "epoch": epoch + 1}
        self.trial.report(score(logs, self.gender_point), epoch)
        if self.trial.should_prune():
            self.pruned, self.model.stop_training = True, True


def suggest(trial: optuna.Trial, search: P.Search) -> dict[str, object]:
    """The trial's value for each key of the space (a choice travels as JSON: Optuna's
    categories are numbers and strings, and a conv's filters are a list)."""
    values = {}
    for key, spec in search.space.items():
        if isinstance(spec, Choice):
            picked = trial.suggest_categorical(key, [json.dumps(c) for c in spec.choices])
            values[key] = json.loads(picked)
        else:
            values[key] = trial.suggest_float(key, spec.low, spec.high, log=spec.log)
    return values


def defaults(params: Params, search: P.Search) -> dict[str, object]:
    """The committed value of each key, as the study records it (trial 0)."""
    out = {}
    for key, spec in search.space.items():
        value = P.lookup(params, key)
        out[key] = json.dumps(value) if isinstance(spec, Choice) else value
    return out


def trial_params(committed: bytes, values: dict[str, object]) -> tuple[bytes, Params]:
    """The trial's params.yaml (the committed one with the trial's values, comments kept, as
    `dvc exp run -S` writes it) and its params, checked like the file's. Made in a scratch
    folder: the workspace's params.yaml changes only while the trial's experiment is saved."""
    with tempfile.TemporaryDirectory() as scratch:
        path = Path(scratch) / P.PARAMS_FILE.name
        path.write_bytes(committed)
        with modify_yaml(path) as data:
            for key, value in values.items():
                set_at(data, key, value)
        try:
            return path.read_bytes(), P.load(path)
        except P.ParamsError as error:
            detail = str(error).removeprefix(f"{path}: ")
            raise UserError(f"{P.PARAMS_FILE} with the trial's values {values}: {detail}") from None


@contextlib.contextmanager
def workspace_params(committed: bytes, trial: bytes):
    """params.yaml holds the trial's values while its experiment is saved; the committed
    file is back afterwards, however the save ends. Each put in place whole (a temporary,
    renamed): a kill mid-write must not leave the user's params.yaml half-written."""

    def put(data: bytes) -> None:
        with atomic_path(P.PARAMS_FILE) as tmp:
            tmp.write_bytes(data)

    try:
        put(trial)
        yield
    finally:
        put(committed)


class Saver:
    """Saves each trial's experiment in a thread while the next trial trains: a save takes
    seconds of one core (DVC reads its YAML files a dozen times, then commits), and a B
    trial's training leaves the second core mostly idle. One save at a time; a save's error
    is raised at the next save or at the end, and the end waits for the last one."""

    def __init__(self):
        self.pool = concurrent.futures.ThreadPoolExecutor(max_workers=1)
        self.pending: concurrent.futures.Future | None = None

    def submit(self, save, *args) -> None:
        self.wait()
        self.pending = self.pool.submit(save, *args)

    def wait(self) -> None:
        pending, self.pending = self.pending, None
        if pending is not None:
            pending.result()


class Features:
    """Model B's backbone features of train (and mirrored) and val: a trial of B retrains
    the heads only, so the frozen backbone's answers never change between trials. Computed
    once, then kept in reports/tune/.features/ under a digest of what they are made of (the
    backbone's params and weights, the faces' bytes): a rerun, after Ctrl-C or for more
    trials, starts its first trial at once instead of after minutes of backbone passes."""

    def __init__(self):
        self.key, self.data = None, None

    def get(self, params: Params, extractor, head, train, val):
        p = params.model_b
        key = (p.backbone, p.alpha, p.weights, p.input_size, p.pooling, p.norm, p.batch_norm)
        if key != self.key:
            folder = FEATURES / digest(key, extractor, train, val)
            if not (folder / "val.npy").is_file():
                batch, loader = p.phase1.batch_size, params.train.loader
                (x, _), (val_x, _) = cached_features(extractor, head, train, val, batch, loader)
                keep(folder, {"train": x, "val": val_x})
            else:
                print(f"phase1: backbone features from {folder}", flush=True)
            self.data = tuple(np.load(folder / f"{n}.npy", mmap_mode="r") for n in ("train", "val"))
            self.key = key
        return self.data


def digest(key: tuple, extractor: keras.Model, *splits) -> str:
    """What the features are a function of: the backbone's params, weights and inputs."""
    md5 = hashlib.md5(repr(key).encode())
    for array in [*extractor.get_weights(), *(split.images for split in splits)]:
        md5.update(np.ascontiguousarray(array).data)
    return md5.hexdigest()


def keep(folder: Path, arrays: dict[str, np.ndarray]) -> None:
    """The arrays as .npy files, each put in place whole (val, the last, marks the folder
    complete), so a Ctrl-C never leaves half a file to load."""
    for name, array in arrays.items():
        with atomic_path(folder / f"{name}.npy") as tmp:
            np.save(tmp, np.asarray(array))


def train_b(params: Params, search: P.Search, report: Report, splits, features: Features):
    p = params.model_b
    model = build_model_b(p, params.data.image_size, params.seed)
    extractor, head = split_at_features(model)
    x, val_x = features.get(params, extractor, head, *splits)
    y = {k: np.concatenate([v, v]) for k, v in targets(head, splits[0]).items()}
    fit = dataclasses.replace(p.phase1, epochs=search.epochs)
    compile_model(head, fit, p.loss, int(np.ceil(len(x) / fit.batch_size)))
    head.steps_per_execution = STEPS_PER_EXECUTION  # read when fit() builds the step
    head.fit(
        x, y, validation_data=(val_x, targets(head, splits[1])), batch_size=fit.batch_size,
        epochs=fit.epochs, shuffle=True, callbacks=[*fit_callbacks(fit), report], verbose=0,
    )  # fmt: skip


def train_a(params: Params, search: P.Search, report: Report, splits, folder: Path):
    p = params.model_a
    model = build_model_a(p, params.data.image_size, params.seed)
    trainer = Trainer(model, folder, *splits, None, params.train.loader, params.seed)
    fit = dataclasses.replace(p.fit, epochs=search.epochs)
    try:
        trainer.phase(FIT, fit, p.loss, extra=[report])
    finally:  # the trial's DVCLive folder is its experiment's, not this one
        shutil.rmtree(trainer.staged.tmp, ignore_errors=True)


def save_experiment(name: str, untracked: list[Path], params: Params) -> None:
    """The workspace (HEAD with the trial's params.yaml) as a DVC experiment, with the
    trial's DVCLive files. DVC caching is limited to the raw data's .dvc file (`dvc exp
    save TARGETS`): dvc.lock stays HEAD's, so after `dvc exp apply` the stages whose params
    the trial changed are out of date, and `dvc exp run` retrains them. (A plain `dvc exp
    save`, DVCLive's, records every stage as up to date with the trial's params.)"""
    from dvc.repo import Repo

    target = f"{params.data.raw}.dvc" if Path(f"{params.data.raw}.dvc").is_file() else "prepare"
    with Repo() as repo:
        repo.experiments.save(
            name=name, targets=[target], include_untracked=[str(p) for p in untracked], force=True
        )


def check_clean() -> None:
    """Each trial is saved as HEAD plus its params: other changes would ride along."""
    changed = subprocess.run(
        ["git", "status", "--porcelain", "--untracked-files=no"], capture_output=True, text=True
    ).stdout.split("\n")
    changed = [line[3:] for line in changed if line.strip()]
    if changed:
        raise UserError(
            f"scripts/tune.py: uncommitted changes to {', '.join(changed[:3])}; commit or "
            f"stash them first (each trial is saved as an experiment of HEAD and its params)"
        )


def check_names_free(model: str, study: optuna.Study) -> None:
    """A new study names its trials as an earlier one did (tune-model_b-000, ...): with both
    kept, under two commits, `dvc exp apply tune-model_b-003` cannot tell them apart."""
    if study.get_trials(states=FINISHED):
        return  # a study that continues: its new trials take numbers not saved before
    listed = subprocess.run(
        [sys.executable, "-m", "dvc", "exp", "list", "--all-commits", "--name-only"],
        capture_output=True, text=True,
    ).stdout.split()  # fmt: skip
    held = sorted(name for name in listed if name.startswith(f"tune-{model}-"))
    if held:
        raise UserError(
            f"scripts/tune.py: {STUDIES / model}.db starts a new study, but experiments "
            f"{held[0]}..{held[-1]} ({len(held)}) remain from an earlier one; remove them "
            f"first: dvc exp remove $(dvc exp list -A --name-only | grep '^tune-{model}-')"
        )


def save_trial(model: str, logged: dict, summary: dict, committed: bytes, text: bytes, params):
    """The trial's DVCLive folder (its params and val scores for `dvc exp show`) and the
    workspace with its params.yaml, as experiment tune-MODEL-NNN; then both out of the way."""
    live_dir, dvc_yaml = STUDIES / model, STUDIES / "dvc.yaml"  # dvc.yaml declares the metrics
    with workspace_params(committed, text):
        with Live(str(live_dir), save_dvc_exp=False, report=None, dvcyaml=str(dvc_yaml)) as live:
            live.log_params(logged)
            live.summary = summary
        save_experiment(f"tune-{model}-{logged['trial']:03d}", [live_dir, dvc_yaml], params)
    shutil.rmtree(live_dir, ignore_errors=True)  # in the experiment now
    dvc_yaml.unlink(missing_ok=True)


def objective(model: str, base: Params, splits, features: Features, saver: Saver):
    search: P.Search = getattr(base.tune, model)
    committed = P.PARAMS_FILE.read_bytes()  # read here, once: a save in flight rewrites it

    def run_trial(trial: optuna.Trial) -> float:
        values = suggest(trial, search)
        text, params = trial_params(committed, values)
        setup(params.seed, params.train)
        report = Report(trial, params.tune.gender_point)
        if model == "model_b":
            train_b(params, search, report, splits, features)
        else:
            train_a(params, search, report, splits, STUDIES / f".{model}-training")
        value = score(report.best, params.tune.gender_point)
        state = "pruned" if report.pruned else "complete"
        summary = {"score": round(value, 4), "epoch": report.best["epoch"]}
        for key in ("val_age_mae", "val_gender_accuracy", "val_loss"):
            summary[key] = round(report.best[key], 4)
        logged = {"trial": trial.number, "state": state, "epochs": search.epochs}
        saver.submit(save_trial, model, logged, summary, committed, text, params)
        print(f"trial {trial.number}: score {value:.4f} ({state}) {values}", flush=True)
        if report.pruned:
            raise optuna.TrialPruned()
        return value

    return run_trial


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", choices=["model_a", "model_b"])
    parser.add_argument("--trials", type=int, default=20, help="trials the study holds at the end")
    parser.add_argument("--minutes", type=float, help="start no trial after this long")
    args = parser.parse_args()
    if args.trials < 1:
        raise UserError(f"--trials must be >= 1, got {args.trials}")
    base = P.load()
    check_clean()
    STUDIES.mkdir(parents=True, exist_ok=True)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(
        study_name=args.model,
        storage=f"sqlite:///{STUDIES / args.model}.db",
        direction="minimize",
        pruner=optuna.pruners.MedianPruner(n_startup_trials=5, n_warmup_steps=PRUNER_WARMUP),
        load_if_exists=True,
    )
    check_names_free(args.model, study)
    search = getattr(base.tune, args.model)
    waiting = study.get_trials(states=(optuna.trial.TrialState.WAITING,))
    if not study.get_trials(states=FINISHED) and not waiting:  # trial 0: the defaults
        study.enqueue_trial(defaults(base, search), user_attrs={"defaults": True})
    splits = (load_split("train"), load_split("val"))
    saver = Saver()
    run_trial = objective(args.model, base, splits, Features(), saver)  # before any save
    start = time.monotonic()
    try:
        while (done := len(study.get_trials(states=FINISHED))) < args.trials:
            if args.minutes is not None and time.monotonic() - start > 60 * args.minutes:
                print(f"{args.model}: --minutes {args.minutes:g} spent; rerun to continue")
                break
            # seeded by the trials finished so far: a rerun after Ctrl-C draws the same
            study.sampler = optuna.samplers.TPESampler(seed=base.tune.seed + done)
            study.optimize(run_trial, n_trials=1)
            print(f"{args.model}: {done + 1} of {args.trials} trials", flush=True)
    finally:
        saver.wait()  # the last trial's experiment, also after Ctrl-C
    summarize(study)


def summarize(study: optuna.Study) -> None:
    complete = study.get_trials(states=(optuna.trial.TrialState.COMPLETE,))
    print(f"\n{study.study_name}: {len(study.trials)} trials, {len(complete)} complete")
    if not complete:  # stopped early (--minutes, Ctrl-C) or every trial pruned
        return
    best = min(complete, key=lambda t: t.value)
    # a defaults trial stopped by Ctrl-C is enqueued again: the finished one is the one to show
    default = next(t for t in study.get_trials(states=FINISHED) if t.user_attrs.get("defaults"))
    print(f"defaults (trial {default.number}): score {default.value}")
    print(f"best (trial {best.number}): score {best.value:.4f} with {best.params}")
    print(f"retrain it at the full schedule: {retrain_command(study.study_name, best.params)}")
    print(
        f"(or `dvc exp apply tune-{study.study_name}-{best.number:03d}` on the commit the "
        f"trial was saved on: applied on a later one, it also puts back that commit's files)"
    )


def retrain_command(model: str, values: dict[str, object]) -> str:
    """`dvc exp run` with the trial's values as -S overrides: only params.yaml changes, so
    it works on any later commit (a choice, kept as JSON, goes as YAML flow: [128])."""
    sets = (f"-S {shlex.quote(f'{key}={value}')}" for key, value in values.items())
    return f"dvc exp run -n tuned-{model} " + " ".join(sets)


if __name__ == "__main__":
    run(main)
