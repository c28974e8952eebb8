"""Task suites, datasets, published experiment configurations and throughput benchmarks."""
