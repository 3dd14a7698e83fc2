"""Training throughput of the configured models: images/s and parameter counts.

    python benchmarks/train_speed.py [a|b|b1] [--steps N] [-S key=value ...]

`b1` times model B with the backbone frozen (phase 1 without cached features; with them,
phase 1 costs one `predict` pass, the "predict" figure). `-S` overrides params like
`dvc exp run -S` does (e.g. -S model_a.trunk_filters=[24,48,96]). Random pixels are
enough: the cost of a step does not depend on what the images show.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import yaml

from agegender import params as P
from agegender.models.model_a import build_model_a
from agegender.models.model_b import backbone_of, build_model_b, unfreeze_top
from agegender.training.loop import setup
from agegender.training.objective import compile_model
from agegender.typed_yaml import set_dotted


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", choices=["a", "b", "b1"])
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("-S", dest="overrides", action="append", default=[])
    args = parser.parse_args()
    raw = yaml.safe_load(P.PARAMS_FILE.read_text())
    for assignment in args.overrides:
        set_dotted(raw, assignment)
    params: P.Params = P.build(P.Params, raw)  # type: ignore[assignment]
    setup(params.seed, params.train)
    size = params.data.image_size
    if args.model == "a":
        model, fit, loss = (
            build_model_a(params.model_a, size, 0),
            params.model_a.fit,
            params.model_a.loss,
        )
    else:
        p = params.model_b
        model, fit, loss = build_model_b(p, size, 0), p.phase1, p.loss
        if args.model == "b":
            unfreeze_top(backbone_of(model), p.phase2.unfreeze, p.batch_norm, p.bn_momentum)
            fit = p.phase2
    n = fit.batch_size * args.steps
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (n, size, size, 3), dtype=np.uint8)
    age = rng.uniform(0, 90, (n, 1)).astype("float32")
    gender = rng.integers(0, 2, (n, 1)).astype("float32")
    y = {name: gender if name == "gender" else age for name in model.output}  # age_probs: age
    compile_model(model, fit, loss, args.steps)
    model.fit(
        x[: fit.batch_size * 2],
        {k: v[: fit.batch_size * 2] for k, v in y.items()},
        batch_size=fit.batch_size,
        epochs=1,
        verbose=0,
    )  # warm-up: tracing, compilation
    start = time.perf_counter()
    model.fit(x, y, batch_size=fit.batch_size, epochs=1, verbose=0)
    seconds = time.perf_counter() - start
    model.predict(x[:256], batch_size=256, verbose=0)
    start = time.perf_counter()
    model.predict(x, batch_size=256, verbose=0)
    predict_seconds = time.perf_counter() - start
    trainable = sum(int(np.prod(w.shape)) for w in model.trainable_weights)
    print(
        f"model {args.model}: {model.count_params():,} parameters ({trainable:,} trainable), "
        f"train {n / seconds:.0f} images/s, predict {n / predict_seconds:.0f} images/s "
        f"({size}px, batch {fit.batch_size})"
    )


if __name__ == "__main__":
    main()
