"""``values("samples")`` over 20,000 fits × 1,000 samples: time per fit and peak memory.

    .venv/bin/python -m bench.values_samples [--quick]      # --quick: 2,000 fits

The seed's loop, ``for samples in agg.values("samples"): max(samples.log_likelihood)``, runs in a
fresh child process over a cached database (``bench._dbcache``, 1,000 samples × 4 parameters a
fit); peak memory is the child's ``ru_maxrss``, measured once over all fits and once over the first
1,000 (flat memory means the two agree). Baselines, same run: plain sqlite reading the same blobs
(``SELECT data FROM payloads``, no decoding) and, when autofit is installed, PyAutoFit's
``values("samples")`` over its database of the folder-ingest folders (10^3 fits; 10^2 with --quick).
"""

from __future__ import annotations

import textwrap

from bench import Options, Row
from bench import _pyautofit as pyautofit
from bench._common import child, folder_tree, main, ms, times, verdict
from bench._dbcache import database

SECTION = 'values("samples"), 1,000 samples x 4 parameters a fit'
TARGET_MB = 300.0
TARGET_VS_PYAUTOFIT = 100.0  # issue 18: folder ingest may not buy its speed with slower reads (issue 8 asked 20x)

LENSD = textwrap.dedent("""
    import sys, time
    import lensd
    agg = lensd.Aggregator.from_database(sys.argv[1])
    if int(sys.argv[2]):
        agg = agg[:int(sys.argv[2])]
    start_mb = peak_rss_mb()
    began, n = time.perf_counter(), 0
    for samples in agg.values("samples"):
        max(samples.log_likelihood)
        n += 1
    result = {"seconds": time.perf_counter() - began, "fits": n, "start_mb": start_mb}
""")

RAW = textwrap.dedent("""
    import sqlite3, sys, time
    conn = sqlite3.connect(f"file:{sys.argv[1]}?mode=ro", uri=True)
    began, n = time.perf_counter(), 0
    for (data,) in conn.execute("SELECT data FROM payloads WHERE name = 'samples'"):
        n += 1
    result = {"seconds": time.perf_counter() - began, "fits": n}
""")


def run(options: Options) -> list[Row]:
    n = 2000 if options.quick else 20_000
    path, _ = database(options.cache, n, n_samples=1000)
    whole = child(LENSD, str(path), "0", timeout=1200)
    first = child(LENSD, str(path), "1000", timeout=600)
    raw = child(RAW, str(path), timeout=600)
    per_fit = whole["seconds"] / whole["fits"]
    raw_per_fit = raw["seconds"] / raw["fits"]
    rows = [Row(SECTION, f"time per fit over {whole['fits']:,} fits", ms(per_fit),
                f"sqlite blob read: {ms(raw_per_fit)}", f"{times(per_fit / raw_per_fit)} blob read")]
    peak = whole["peak_rss_mb"]
    rows.append(Row(SECTION, f"peak memory over {whole['fits']:,} fits (1,000 fits: {first['peak_rss_mb']:.0f} MB;"
                    f" after import: {whole['start_mb']:.0f} MB)", f"{peak:.0f} MB",
                    target=f"< {TARGET_MB:.0f} MB: {verdict(peak < TARGET_MB)}"))
    if pyautofit.available() is None:
        rows.append(Row(SECTION, "vs PyAutoFit values(\"samples\")", ms(per_fit), pyautofit="not installed"))
        return rows
    m = 100 if options.quick else 1000
    db, _ = pyautofit.database(options.work, folder_tree(options.work, m))
    theirs = pyautofit.values_samples(options.work, db)
    their_per_fit = theirs["seconds"] / theirs["fits"]
    speedup = their_per_fit / per_fit
    rows.append(Row(SECTION, f"vs PyAutoFit values(\"samples\"), its {theirs['fits']:,} fits", ms(per_fit),
                    ratio=f"{times(speedup)} faster",
                    pyautofit=f"{ms(their_per_fit)}, peak {theirs['peak_rss_mb']:.0f} MB",
                    target=f">= {TARGET_VS_PYAUTOFIT:.0f}x faster: {verdict(speedup >= TARGET_VS_PYAUTOFIT)}"))
    return rows


if __name__ == "__main__":
    main(run, __doc__)
