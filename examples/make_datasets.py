"""Writes the examples' data set: scikit-learn's digits (it ships with the package, nothing is
downloaded), 1797 8×8 images of handwritten digits, 10 classes, as a CSV of 64 standardized
pixel columns and a `digit` label column.

    python examples/make_datasets.py            # -> examples/data/digits.csv

Standardized (each pixel column to mean 0, standard deviation 1; the columns that are 0 in every
image stay 0) as a user would before training a deep network on it.
"""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
from sklearn.datasets import load_digits


def digits_csv(path: Path) -> Path:
    X, y = load_digits(return_X_y=True)
    std = X.std(axis=0)
    X = (X - X.mean(axis=0)) / np.where(std > 0, std, 1.0)
    path.parent.mkdir(parents=True, exist_ok=True)
    header = ",".join([f"px{i}" for i in range(X.shape[1])] + ["digit"])
    np.savetxt(path, np.column_stack([X, y]), delimiter=",", header=header, comments="",
               fmt=["%.5f"] * X.shape[1] + ["%d"])
    return path


if __name__ == "__main__":
    out = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).parent / "data" / "digits.csv"
    print(digits_csv(out))
