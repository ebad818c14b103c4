"""``make demo`` and the synthetic PyAutoFit folders it and the benchmarks use."""
