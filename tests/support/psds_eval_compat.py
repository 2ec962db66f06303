"""psds_eval 0.5.3 (the older PSDS reference, a test extra) on pandas 3 and numpy 2.4: two of its helpers use
calls those versions removed. The replacements below compute the same thing with today's spelling:

* `PSDSEval.step_curve`: `DataFrame.fillna(method="ffill")` (removed in pandas 3) -> `DataFrame.ffill()`;
* `PSDSEval._auc`: `int(np.argwhere(...))` of a (1, 1) array (an error in numpy 2.4) -> its one element.
"""

from __future__ import annotations

import numpy as np
import pandas as pd


def step_curve(x, xp, yp):
    """The ROC (xp, yp) made non-decreasing and sampled at `x`, 0 before its first point (psds_eval's)."""
    roc = pd.DataFrame({"x": xp, "y": yp}).groupby("x").agg("max").reset_index().sort_values(by="x")
    roc.y = roc.y.cummax()
    return pd.merge(pd.Series(x, name="x"), roc, how="outer", on="x").ffill().fillna(value=0).y.values


def auc(x, y, max_x=None, decreasing_y=False):
    """Area under the staircase (x, y) up to `max_x` (psds_eval's, without its input checks)."""
    _x, _y = np.array(x), np.array(y)
    max_x = _x.max() if max_x is None else max_x
    if max_x not in _x:
        _x = np.sort(np.concatenate([_x, [max_x]]))
        max_i = int(np.argwhere(_x == max_x)[0, 0])
        _y = np.concatenate([_y[:max_i], [_y[max_i - 1]], _y[max_i:]])
    valid = _x <= max_x
    return np.sum(np.diff(_x[valid]) * np.array(_y[valid])[:-1])


def patch(monkeypatch) -> None:
    """Use the replacements for the duration of a test (pytest's `monkeypatch`)."""
    from psds_eval import PSDSEval

    monkeypatch.setattr(PSDSEval, "step_curve", staticmethod(step_curve))
    monkeypatch.setattr(PSDSEval, "_auc", staticmethod(auc))
