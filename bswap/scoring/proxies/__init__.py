"""Zero-cost proxies (../shared/PROXIES.md): the whole-network reference path.

  taps.py      what a forward exposes (conv/dense outputs, BN and ReLU tensors, block outputs)
  passes.py    the passes the proxies share (loss backward, input Jacobian, forwards, synflow,
               zen, GraSP's Hessian-vector product, ZiCo's two backwards, static counts), each
               reduced on the device to the small per-layer pieces its proxies need
  formulas.py  the statistics on those pieces (correlations, eigenvalues, log-determinants)
  aggregate.py pool-level rank aggregates and NASLib's post-processing

The registry (`bswap.scoring.metrics`) names each proxy, its sign and its passes.
"""
