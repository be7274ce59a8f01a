"""crowd-kit counterpart of `benches/dawid_skene.rs`: DawidSkene(n_iter=100, tol=1e-5) on the
14 vote tables written by `cargo xtask bench consensus -- --write DIR`. Prints one JSON line.

    python3 -m pip install crowd-kit==1.4.2 && python3 crates/apo-consensus/benches/crowdkit_bench.py DIR
"""

import json
import sys
import time

import pandas as pd
from crowdkit.aggregation import DawidSkene

d = sys.argv[1]
tables = [pd.read_csv(f"{d}/votes_{k}.csv") for k in range(14)]
start = time.perf_counter()
for df in tables:
    DawidSkene(n_iter=100, tol=1e-5).fit_predict(df)
print(json.dumps({"bench": "crowdkit-dawid-skene", "votes": int(sum(len(t) for t in tables)), "seconds": round(time.perf_counter() - start, 3)}))
