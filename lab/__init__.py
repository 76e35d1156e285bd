"""Research code the product does not run: the listening-world simulator (:mod:`lab.simulate`),
used by ``cratedigger simulate`` and ``demo``, the tests and the benchmarks."""
