"""crowd-kit counterpart of `benches/dawid_skene.rs`: DawidSkene(n_iter=100, tol=1e-5),
OneCoinDawidSkene(n_iter=100, tol=1e-5), Wawa(), GLAD() and MACE() on the 14 vote tables written by
`cargo xtask bench consensus -- --write DIR`. Prints one JSON line.

    python3 -m pip install crowd-kit==1.4.2 scikit-learn==1.5.2
    python3 crates/apo-consensus/benches/crowdkit_bench.py DIR
"""

import json
import sys
import time

import pandas as pd
from crowdkit.aggregation import GLAD, MACE, DawidSkene, OneCoinDawidSkene, Wawa

d = sys.argv[1]
tables = [pd.read_csv(f"{d}/votes_{k}.csv") for k in range(14)]
out = {"bench": "crowdkit", "votes": int(sum(len(t) for t in tables))}
for name, make in [
    ("dawid_skene_seconds", lambda: DawidSkene(n_iter=100, tol=1e-5)),
    ("one_coin_seconds", lambda: OneCoinDawidSkene(n_iter=100, tol=1e-5)),
    ("wawa_seconds", Wawa),
    ("glad_seconds", GLAD),
    ("mace_seconds", MACE),
]:
    start = time.perf_counter()
    for df in tables:
        make().fit_predict(df)
    out[name] = round(time.perf_counter() - start, 3)
print(json.dumps(out))
