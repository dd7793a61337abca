#!/usr/bin/env python3
"""The statsforecast reference for trimtab's forecast backtest (issue 7), under the same protocol.

For each `timestamp,value` CSV given (or every CSV under data/traces/nab):

1. The rows are put on their step as trimtab's loader does: sorted, snapped to the median spacing, rows on the
   same step averaged, empty steps filled by linear interpolation.
2. The last round(0.2 * n) points are held out. The season M is one day in steps (86400 / step) unless
   --season is given; the MSTL also gets the weekly period 7M when M is one day and the training part holds
   two weeks.
3. AutoETS (season M), MSTL (M[, 7M]) with an AutoETS trend, and SeasonalNaive (M) are fitted once on the
   training part.
4. A rolling origin walks over the held-out part in non-overlapping windows of H steps, the first origin being
   the last training point; at each origin every model forecasts the next H steps from all data observed so far
   without refitting (`model.forward`, which is what `StatsForecast.cross_validation(refit=False)` does). A last
   window shorter than H is scored over the steps it has.
5. MASE = mean absolute error over every held-out step / in-sample MAE of the seasonal naive at lag M on the
   training part; sMAPE on the 0-200 scale.

Prints one JSON object per series (one per line), each with its `models` scores, `best` and `seconds`.
Needs a Python with statsforecast (for example `python3 -m venv /work/sfvenv && /work/sfvenv/bin/pip install
statsforecast`): `/work/sfvenv/bin/python scripts/statsforecast_reference.py [--season M] [FILE.csv ...]`.
"""

import argparse
import json
import os
import sys
import time
import warnings

import numpy as np
import pandas as pd
from statsforecast.models import MSTL, AutoETS, SeasonalNaive

DAY = 86_400


def load(path):
    """The series on its step, as trimtab's loader builds it: (values, step in seconds)."""
    frame = pd.read_csv(path)
    time_col = next((c for c in frame.columns if c.strip().lower() in ("timestamp", "time")), frame.columns[0])
    value_col = next((c for c in frame.columns if c.strip().lower() == "value"), frame.columns[1])
    seconds = pd.to_datetime(frame[time_col]).astype("int64").to_numpy() / 1e9
    values = frame[value_col].astype(float).to_numpy()
    order = np.argsort(seconds, kind="stable")
    seconds, values = seconds[order], values[order]
    unique, inverse = np.unique(seconds, return_inverse=True)
    merged = np.bincount(inverse, weights=values) / np.bincount(inverse)
    spacing = np.sort(np.diff(unique))
    step = int(round(spacing[len(spacing) // 2]))
    start = np.floor(unique[0])
    # Half a step rounds away from zero, as Rust's f64::round does (numpy's round goes to even).
    slots = np.floor((unique - start) / step + 0.5).astype(int)
    length = slots[-1] + 1
    sums = np.bincount(slots, weights=merged, minlength=length)
    counts = np.bincount(slots, minlength=length)
    filled = np.full(length, np.nan)
    filled[counts > 0] = sums[counts > 0] / counts[counts > 0]
    known = np.flatnonzero(counts > 0)
    filled = np.interp(np.arange(length), known, filled[known])
    return filled, step


def seasonal_naive_scale(train, season):
    return float(np.mean(np.abs(train[season:] - train[:-season])))


def smape(actual, forecast):
    denominator = np.abs(actual) + np.abs(forecast)
    terms = np.where(denominator > 0, 200.0 * np.abs(actual - forecast) / np.where(denominator > 0, denominator, 1), 0)
    return float(np.mean(terms))


def models_for(season, step, train_len):
    weekly = 7 * season
    daily = season * step == DAY
    mstl_seasons = [season, weekly] if daily and train_len >= 2 * weekly else [season]
    mstl_name = "MSTL(" + ",".join(map(str, mstl_seasons)) + ")+AutoETS trend"
    return [
        ("AutoETS", AutoETS(season_length=season)),
        (mstl_name, MSTL(season_length=mstl_seasons, trend_forecaster=AutoETS(model="ZZN"))),
        ("SeasonalNaive", SeasonalNaive(season_length=season)),
    ]


def backtest(path, horizon, holdout_share, season_arg, only=None):
    y, step = load(path)
    holdout = int(round(len(y) * holdout_share))
    train_len = len(y) - holdout
    train = y[:train_len]
    season = season_arg or max(2, DAY // step)
    scale = seasonal_naive_scale(train, season)
    report = {
        "series": os.path.relpath(path),
        "points": len(y),
        "step": step,
        "season": season,
        "train_points": train_len,
        "holdout_points": holdout,
        "horizon": horizon,
        "models": {},
    }
    for name, model in models_for(season, step, train_len):
        if only and not any(name.startswith(prefix) for prefix in only):
            continue
        started = time.time()
        predicted, actual = [], []
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                model.fit(train)
                origin = train_len - 1
                while origin + 1 < len(y):
                    steps = min(horizon, len(y) - 1 - origin)
                    if origin == train_len - 1:
                        mean = model.predict(h=horizon)["mean"]
                    else:
                        mean = model.forward(y=y[: origin + 1], h=horizon)["mean"]
                    predicted.extend(np.asarray(mean)[:steps])
                    actual.extend(y[origin + 1 : origin + 1 + steps])
                    origin += horizon
        except Exception as error:  # a model that cannot fit this series is reported, not fatal
            report["models"][name] = {"error": str(error), "seconds": time.time() - started}
            continue
        actual, predicted = np.asarray(actual), np.asarray(predicted)
        report["models"][name] = {
            "mase": float(np.mean(np.abs(actual - predicted)) / scale),
            "smape": smape(actual, predicted),
            "seconds": time.time() - started,
        }
    scored = {k: v for k, v in report["models"].items() if "mase" in v}
    report["best"] = min(scored, key=lambda k: scored[k]["mase"]) if scored else None
    report["best_mase"] = scored[report["best"]]["mase"] if scored else None
    return report


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("files", nargs="*")
    parser.add_argument("--horizon", type=int, default=12)
    parser.add_argument("--holdout", type=float, default=0.2)
    parser.add_argument("--season", type=int, default=None)
    parser.add_argument(
        "--models",
        default="",
        help="comma-separated model name prefixes to run (AutoETS, MSTL, SeasonalNaive); all when empty",
    )
    args = parser.parse_args()
    files = args.files
    if not files:
        root = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "data", "traces", "nab")
        files = sorted(
            os.path.join(d, f) for d, _, names in os.walk(root) for f in names if f.endswith(".csv")
        )
    for path in files:
        only = [m for m in args.models.split(",") if m]
        print(json.dumps(backtest(path, args.horizon, args.holdout, args.season, only)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
