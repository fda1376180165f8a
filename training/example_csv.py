"""Write tables to try `--csv` with: scikit-learn's breast cancer set (it ships inside the
package) as a CSV with a text target column `diagnosis` (benign / malignant), and a made-up
passenger list with text categories and blanks (tests/data/training/passengers.csv is its output).

    python -m training.example_csv scratch/cancer.csv
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.datasets import load_breast_cancer


def write_cancer_csv(path: Path) -> Path:
    """Write the 569-row, 30-feature table with readable column names; returns the path."""
    frame = load_breast_cancer(as_frame=True).frame
    frame["diagnosis"] = frame.pop("target").map({0: "malignant", 1: "benign"})
    frame.columns = [c.replace(" ", "_") for c in frame.columns]
    path.parent.mkdir(parents=True, exist_ok=True)
    frame.to_csv(path, index=False)
    return path


def passengers(n: int = 300, seed: int = 15) -> pd.DataFrame:
    """A passenger list made with numpy: who `survived` (yes / no) depends on `class`, `sex` and
    `age`; `age` and `embarked` have blanks, `alone` is yes / no. Deterministic for a seed."""
    rng = np.random.default_rng(seed)
    cls = rng.choice(["1st", "2nd", "3rd", "crew"], n, p=[0.25, 0.2, 0.35, 0.2])
    sex = rng.choice(["female", "male"], n, p=[0.4, 0.6])
    age = rng.normal(32, 13, n).clip(1, 80).round()
    fare = np.select([cls == "1st", cls == "2nd", cls == "3rd"], [80.0, 25.0, 10.0], 0.0)
    fare = (fare * rng.lognormal(0, 0.3, n)).round(2)
    score = (1.8 * (sex == "female") + np.select([cls == "1st", cls == "2nd", cls == "crew"],
                                                 [1.2, 0.4, -0.4], -0.9) - 0.03 * (age - 32))
    survived = np.where(score + rng.logistic(0, 0.6, n) > 0.3, "yes", "no")
    frame = pd.DataFrame({"class": cls, "sex": sex, "age": age, "fare": fare,
                          "embarked": rng.choice(["Southampton", "Cherbourg", "Queenstown"], n,
                                                 p=[0.7, 0.2, 0.1]).astype(object),
                          "alone": rng.choice(["yes", "no"], n), "survived": survived})
    frame.loc[rng.random(n) < 0.12, "age"] = np.nan
    frame.loc[rng.random(n) < 0.05, "embarked"] = np.nan
    return frame


def write_passengers_csv(path: Path) -> Path:
    """Write `passengers()` as a CSV (blanks for missing values); returns the path."""
    path.parent.mkdir(parents=True, exist_ok=True)
    passengers().to_csv(path, index=False)
    return path


if __name__ == "__main__":
    out = Path(sys.argv[1] if len(sys.argv) > 1 else "scratch/cancer.csv")
    print(f"wrote {write_cancer_csv(out)}")
