"""Headroom (issue 18, item 1): seed-paired room between the reference teacher, its students and the no-teacher
student, on hand numbers with known answers."""


import pandas as pd
import pytest


def runs():
    rows = []
    teacher = [90.0, 91.0, 92.0]           # MLL teacher seeds 0, 1, 2
    kd, ce, few = [85.0, 87.0, 86.0], [83.0, 84.0, 84.0], [60.0, 62.0, 58.0]
    base = {"role": "student", "teacher_arch": "resnet20", "student": "resnet8", "status": "ok", "omitted": "",
            "teacher_objective": "mll", "teacher_variant": "mll", "method": "kd"}
    for s in range(3):
        rows.append({**base, "setting": "full", "seed": s, "teacher_seed": s, "last_acc": kd[s], "best_acc": kd[s]})
        rows.append({**base, "setting": "frac0.05", "seed": s, "teacher_seed": s, "last_acc": few[s],
                     "best_acc": few[s]})
        rows.append({**base, "teacher_variant": "mcmi-0.35", "teacher_objective": "mcmi", "setting": "full",
                     "seed": s, "teacher_seed": s, "last_acc": 0.0, "best_acc": 0.0})  # another objective: ignored
        rows.append({**base, "teacher_arch": "none", "teacher_objective": "none", "teacher_variant": "none",
                     "method": "ce", "setting": "full", "seed": s, "last_acc": ce[s], "best_acc": ce[s]})
        rows.append({"role": "teacher", "teacher_arch": "resnet20", "teacher_objective": "mll",
                     "teacher_variant": "mll", "teacher_seed": s, "status": "ok", "model_acc": teacher[s]})
    return pd.DataFrame(rows)


def test_headroom_on_hand_numbers():
    from mcmikd.headroom import headroom, headroom_markdown
    from mcmikd.stats import paired

    frame = headroom(runs(), "mll")
    got = {(r["setting"], r["comparison"]): r for _, r in frame.iterrows()}
    room = got[("full", "teacher − no teacher")]
    assert room["mean"] == pytest.approx((7 + 7 + 8) / 3) and room["n"] == 3
    kd = got[("full", "kd − no teacher")]
    assert kd["mean"] == pytest.approx(7 / 3) and kd["ci95"] == pytest.approx(paired([2.0, 3.0, 2.0])["ci"])
    assert got[("full", "teacher − kd")]["mean"] == pytest.approx((5 + 4 + 6) / 3)
    few = got[("frac0.05", "teacher − kd")]  # few-shot: no no-teacher student there, the ceiling gap only
    assert few["mean"] == pytest.approx((30 + 29 + 34) / 3)
    assert ("frac0.05", "kd − no teacher") not in got and ("frac0.05", "teacher − no teacher") not in got
    text = headroom_markdown(frame, "last")
    assert "| resnet20 → resnet8 | full | kd − no teacher | 3 | +2.33 [" in text
    assert headroom(runs().iloc[0:0], "mll").empty
