"""Research tooling on top of the library: the study, the benchmarks, gpu-check, experiment reports and the deps check."""
