"""pandas counterpart of the read+join part of `benches/data.rs`.

    cargo xtask bench data -- --keep DIR
    python3 crates/cxr-max/benches/pandas_join.py DIR

Reads the records with `pd.read_json(lines=True)` and merges them with the label and split
tables on study and image ids; prints one JSON line.
"""

import json
import sys
import time

import pandas as pd


def main():
    d = sys.argv[1]
    runs = []
    for _ in range(5):  # as benches/data.rs: the first run, then the median of five
        t = time.perf_counter()
        records = pd.read_json(f"{d}/cxr-max.jsonl", lines=True)
        read_s = time.perf_counter() - t
        t = time.perf_counter()
        labels = pd.read_csv(f"{d}/mimic-cxr-2.0.0-chexpert.csv.gz")
        split = pd.read_csv(f"{d}/mimic-cxr-2.0.0-split.csv.gz")
        joined = records.merge(labels, on=["study_id", "subject_id"]).merge(
            split[["dicom_id", "split"]], on="dicom_id")
        runs.append((read_s, time.perf_counter() - t))
        trajectories = int(records["trajectories"].map(len).sum())
        del records, labels, split
    totals = sorted(r + j for r, j in runs)
    print(json.dumps({"bench": "pandas-join", "pandas": pd.__version__, "trajectories": trajectories,
                      "first_read_records_s": round(runs[0][0], 3),
                      "first_read_tables_and_join_s": round(runs[0][1], 3),
                      "first_read_and_join_s": round(sum(runs[0]), 3),
                      "median_read_and_join_s": round(totals[len(totals) // 2], 3),
                      "runs": [round(x, 3) for x in totals], "joined": len(joined)}))


if __name__ == "__main__":
    main()
