"""river 0.26 counterpart of `benches/detectors.rs`: values per second of ADWIN,
Page-Hinkley, DDM, EDDM, FHDDM, HDDM_A and HDDM_W on 1e6-value streams built the same way (level shift every
100,000 values; 0/1 errors with a changing rate for the binary detectors). Prints one JSON
line.

    python3 -m pip install river==0.26.0
    cargo xtask bench drift -- --write-streams /some/dir
    python3 crates/apo-drift/benches/river_detectors.py --streams /some/dir
"""

import csv
import json
import random
import sys
import time

if sys.version_info < (3, 12) and not hasattr(csv.DictReader, "__class_getitem__"):
    csv.DictReader.__class_getitem__ = classmethod(lambda cls, item: cls)

from river import drift  # noqa: E402


def main():
    if "--streams" in sys.argv:
        # The exact streams of `cargo xtask bench drift -- --write-streams DIR`.
        d = sys.argv[sys.argv.index("--streams") + 1]
        values = [float(line) for line in open(f"{d}/values.txt")]
        errors = [float(line) for line in open(f"{d}/errors.txt")]
        n = len(values)
    else:
        n = int(sys.argv[sys.argv.index("--n") + 1]) if "--n" in sys.argv else 1_000_000
        rng = random.Random(1)
        values = [((i // 100_000) % 3) * 0.5 + (rng.random() + rng.random() + rng.random() - 1.5) * 0.5 for i in range(n)]
        errors = [float(rng.random() < (0.1 if (i // 100_000) % 2 == 0 else 0.3)) for i in range(n)]
    out = {"bench": "river-detectors", "n": n}
    for name, det, stream in [
        ("adwin", drift.ADWIN(), values),
        ("page-hinkley", drift.PageHinkley(), values),
        ("ddm", drift.binary.DDM(), errors),
        ("eddm", drift.binary.EDDM(), errors),
        ("fhddm", drift.binary.FHDDM(), errors),
        ("hddm-a", drift.binary.HDDMA(), errors),
        ("hddm-w", drift.binary.HDDMW(), errors),
    ]:
        hits = 0
        start = time.perf_counter()
        for x in stream:
            det.update(x)
            if det.drift_detected:
                hits += 1
        secs = time.perf_counter() - start
        out[name] = {"values_per_second": round(n / secs), "seconds": round(secs, 3), "detections": hits}
    print(json.dumps(out))


if __name__ == "__main__":
    main()
