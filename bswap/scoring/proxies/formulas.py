"""The global statistics of the proxies, in float64 NumPy (PROXIES.md sections 3-5).

Each takes what a pass returned (`bswap.scoring.proxies.passes`) and gives
the raw score: no sign flip, no NaN replacement (`aggregate.nbzero_postprocess`
applies NASLib's rules).
"""

from __future__ import annotations

import numpy as np

K = 1e-5  # the small constant of jacov and epe_nas


def _corrcoef(rows: np.ndarray) -> np.ndarray:
  with np.errstate(divide='ignore', invalid='ignore'):
    return np.corrcoef(np.asarray(rows, np.float64))


def jacov(jacobian: np.ndarray) -> float:
  """-sum_i [ln(l_i + k) + 1/(l_i + k)] over the eigenvalues of corrcoef(J) (Mellor et al. 2021).

  NaN when a row is constant or an eigenvalue is <= -k.
  """
  r = _corrcoef(jacobian)
  if not np.all(np.isfinite(r)):
    return float('nan')
  lam = np.linalg.eigvalsh(r)
  with np.errstate(invalid='ignore', divide='ignore'):
    return float(-np.sum(np.log(lam + K) + 1.0 / (lam + K)))


def epe_nas(jacobian: np.ndarray, labels: np.ndarray, num_classes: int) -> float:
  """Per-class Jacobian decorrelation (Lopes et al. 2021), NASLib's exact rules."""
  jacobian, labels = np.asarray(jacobian, np.float64), np.asarray(labels)
  per_class = {}
  for c in dict.fromkeys(labels.tolist()):  # classes in order of first appearance
    rows = jacobian[labels == c]
    m = len(rows)
    if m == 1:
      if num_classes > 100:
        continue  # the canonical division by len() of a 0-d array fails: class skipped
      per_class[c] = float(np.log(1.0 + K))
      continue
    with np.errstate(divide='ignore', invalid='ignore'):
      s = float(np.sum(np.log(np.abs(_corrcoef(rows)) + K)))
    per_class[c] = s / m if num_classes > 100 else s
  values = np.asarray(list(per_class.values()), np.float64)
  if num_classes <= 100:
    return float(np.sum(np.abs(values)))
  if not len(values):
    return 0.0
  return float(np.sum(np.abs(values[:, None] - values[None, :])) / len(values))


def nwot(relu_kernels: np.ndarray) -> float:
  """ln|det K|, K = sum over ReLUs of the Hamming-similarity kernels (Mellor et al. 2021)."""
  k = np.sum(np.asarray(relu_kernels, np.float64), axis=0)
  return float(np.linalg.slogdet(k)[1])


def meco_term(tensor: np.ndarray) -> float:
  """The smallest eigenvalue of the channel correlation of one (positions, C) tensor."""
  p = _corrcoef(np.asarray(tensor, np.float64).T)
  p = np.atleast_2d(p)
  p = np.where(np.isfinite(p), np.clip(p, -1.0, 1.0), 0.0)
  return float(np.linalg.eigvalsh(p)[0])


def meco(tensors) -> float:
  """Sum over tapped tensors of the smallest channel-correlation eigenvalue (Jiang et al. 2023)."""
  terms = [meco_term(t) for t in tensors]
  return float(sum(t for t in terms if np.isfinite(t)))


def zico(layer_sums: np.ndarray) -> float:
  """sum over layers with S != 0 of ln S (Li et al. 2023)."""
  s = np.asarray(layer_sums, np.float64)
  return float(np.sum(np.log(s[s != 0])))


def zen(delta: float, bn_term: float) -> float:
  """ln Delta + the BN-variance term (Lin et al. 2021)."""
  with np.errstate(divide='ignore'):
    return float(np.log(np.float64(delta)) + np.float64(bn_term))
