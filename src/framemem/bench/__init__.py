"""`framemem bench`: the small-scale benchmarks (Table 1, scene returns). The library never imports this package."""
