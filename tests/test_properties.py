"""Properties of the numeric core that hold for any input (Hypothesis draws the inputs):
the conformal range's guarantee, ranges that hold their prediction inside [0, 120], ensemble
weights read by name, a box mapped back from a reduced decode that stays inside the image."""

from __future__ import annotations

import math

import numpy as np
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from agegender.evaluate import calibration as C
from agegender.evaluate.ensemble import combine
from agegender.serve.faces import unturned

FAST = settings(max_examples=200, deadline=None, derandomize=True)  # the same cases each run
levels = st.sampled_from([0.5, 0.8, 0.9, 0.95])
scores = st.lists(
    st.floats(0, 100, allow_nan=False), min_size=2, max_size=60, unique=True
)  # distinct: ties only make the guarantee easier


@FAST
@given(scores, levels)
def test_the_conformal_quantile_holds_a_new_exchangeable_score_at_least_level(values, level):
    """Exchangeability, exactly: leave each of the n + 1 scores out in turn, take the
    quantile of the other n; the share of left-out scores it holds is at least `level`
    (for n large enough to have that rank: ceil((n + 1) * level) <= n, as the 40 faces a
    bucket holds at least always are). ceil(n * level) fails this for n = 4 at 0.8."""
    x = np.array(values)
    n = len(x) - 1
    assume(math.ceil((n + 1) * level) <= n)
    held = [x[i] <= C.upper_quantile(np.delete(x, i), level) for i in range(len(x))]
    assert np.mean(held) >= level


@FAST
@given(
    st.lists(st.floats(-5, 130, allow_nan=False), min_size=1, max_size=30),
    st.lists(st.floats(0, 60, allow_nan=False), min_size=1, max_size=5),
)
def test_every_range_holds_its_prediction_and_stays_in_0_to_120(predicted, widths):
    """Any bucket layout whose ranges hold 0 (low <= 0 <= high, as fit_ranges and
    calibration.read make them): each range lies in [0, MAX_AGE] and holds the prediction
    clipped to it."""
    k = len(widths)
    ranges = {
        "edges": [0.0, *np.linspace(10, 80, k - 1).tolist()] if k > 1 else [0.0],
        "low": [-w for w in widths],
        "high": [w / 2 for w in widths],
    }
    p = np.array(predicted)
    low, high = C.age_range(p, ranges)
    clipped = np.clip(p, 0, C.MAX_AGE)
    assert (low >= 0).all() and (high <= C.MAX_AGE).all()
    assert (low <= clipped + 1e-9).all() and (clipped <= high + 1e-9).all()


@FAST
@given(
    st.floats(0, 1),
    st.floats(0, 1),
    st.lists(st.tuples(st.floats(0, 100), st.floats(0, 1)), min_size=1, max_size=10),
)
def test_the_ensemble_weighs_models_by_name_whatever_their_order(w_age, w_gender, rows):
    """Weights are read by model name: the same predictions in another dict order give the
    same ensemble, and the weights apply to the model they name."""
    a = np.array(rows, "float64")
    b = a[::-1].copy()
    weights = {
        "age": {"model_a": w_age, "model_b": 1 - w_age},
        "gender": {"model_a": w_gender, "model_b": 1 - w_gender},
    }
    forward = combine({"model_a": a, "model_b": b}, weights)
    backward = combine({"model_b": b, "model_a": a}, weights)
    np.testing.assert_array_equal(forward, backward)
    expected = w_age * a[:, 0] + (1 - w_age) * b[:, 0]
    np.testing.assert_allclose(forward[:, 0], expected, rtol=1e-6, atol=1e-4)  # float32


@FAST
@given(
    st.integers(40, 9000),
    st.integers(40, 9000),
    st.sampled_from([1, 2, 4, 8]),
    st.sampled_from([0, 90, 180, 270]),
    st.data(),
)
def test_a_box_found_in_a_reduced_decode_maps_back_inside_the_image(w, h, scale, angle, data):
    """A box inside the reduced (and maybe turned) image, scaled back per axis as crops()
    does, lies inside the full image: a 2000x1500 JPEG once got [0, 0, 2000, 1504]."""
    rw, rh = -(-w // scale), -(-h // scale)  # libjpeg rounds each reduced side up
    tw, th = (rh, rw) if angle in (90, 270) else (rw, rh)  # the turned view's size
    x = data.draw(st.integers(0, tw - 1))
    y = data.draw(st.integers(0, th - 1))
    bw = data.draw(st.integers(1, tw - x))
    bh = data.draw(st.integers(1, th - y))
    box = unturned([x, y, bw, bh], angle, rw, rh) if angle else [x, y, bw, bh]
    rx, ry = w / rw, h / rh
    full = [round(box[0] * rx), round(box[1] * ry), round(box[2] * rx), round(box[3] * ry)]
    assert full[0] >= 0 and full[1] >= 0
    assert full[0] + full[2] <= w and full[1] + full[3] <= h
