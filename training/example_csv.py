"""Write a real table to try `--csv` with: scikit-learn's breast cancer set (it ships inside the
package) as a CSV with a text target column `diagnosis` (benign / malignant).

    python -m training.example_csv scratch/cancer.csv
"""

from __future__ import annotations

import sys
from pathlib import Path

from sklearn.datasets import load_breast_cancer


def write_cancer_csv(path: Path) -> Path:
    """Write the 569-row, 30-feature table with readable column names; returns the path."""
    frame = load_breast_cancer(as_frame=True).frame
    frame["diagnosis"] = frame.pop("target").map({0: "malignant", 1: "benign"})
    frame.columns = [c.replace(" ", "_") for c in frame.columns]
    path.parent.mkdir(parents=True, exist_ok=True)
    frame.to_csv(path, index=False)
    return path


if __name__ == "__main__":
    out = Path(sys.argv[1] if len(sys.argv) > 1 else "scratch/cancer.csv")
    print(f"wrote {write_cancer_csv(out)}")
