"""bswap's side of the proxy parity check (docs/proxy_parity.md).

Builds one network by the seed contract, one batch, and writes to --out:

  case.npz    float64 weights under their Flax paths ('params/block_0/bn_in/scale', ...),
              'images' (N, H, W, 3), 'labels', bswap's training-mode 'logits', and zen's
              inputs: its N(0, 1) kernels ('zen/params/...') and draws 'zen_x1', 'zen_x2'
  case.json   the network's structure (what torch_side.py builds) and bswap's scores:
              the whole-network reference path and the block engine, every metric, float64

  python launch/proxy_parity/export_case.py --out /tmp/case --depth 10 --width 2 \
      --blocks Conv,Conv,Conv --image_size 32 --batch 16

Runs in float64 by default (x64 on, XLA's excess precision off), so the
comparison with PyTorch's float64 is limited by the formulas, not by rounding;
`--dtype float32` runs bswap's passes in float32 (synflow stays float64), the
precision NB-Zero's data were computed in. The arrays are float64 either way
(float32 values are exact in float64).
"""

from __future__ import annotations

import os

os.environ.setdefault('XLA_FLAGS', '--xla_allow_excess_precision=false')

import argparse  # noqa: E402
import json  # noqa: E402
import pathlib  # noqa: E402
import sys  # noqa: E402

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from bswap.nets import arch as arch_lib  # noqa: E402
from bswap.nets import genotype as genotype_lib  # noqa: E402
from bswap.nets import menu  # noqa: E402
from bswap.scoring import engine as engine_lib  # noqa: E402
from bswap.scoring import metrics  # noqa: E402
from bswap.scoring.proxies import blockwise  # noqa: E402
from bswap.scoring.proxies import candidate as candidate_lib  # noqa: E402
from bswap.scoring.proxies import formulas  # noqa: E402
from bswap.scoring.proxies import passes  # noqa: E402
from bswap.scoring.proxies import taps  # noqa: E402

INDEX = 0  # the candidate's index in the seed contract


def per_candidate_metrics() -> list[str]:
  return [n for n in metrics.METRICS if metrics.per_candidate(n)]


def block_spec(slot: arch_lib.Slot, name: str) -> dict:
  """What a PyTorch builder needs to rebuild one pre-activation block."""
  t = menu.get(name)
  spec = {
    'type': name,
    'family': t.family,
    'standard': t.is_standard_conv,
    'in_ch': slot.in_ch,
    'out_ch': slot.out_ch,
    'stride': slot.stride,
    'shortcut': slot.in_ch != slot.out_ch or slot.stride != 1,
  }
  if t.family == menu.BASIC:
    spec['groups'] = [t.groups(c) for c in t.grouped_widths(slot.in_ch, slot.out_ch)]
  else:
    spec['mid'] = slot.out_ch // t.bottleneck
    spec['groups'] = [t.groups(spec['mid'])]
  return spec


def network_spec(geno: genotype_lib.Genotype, skel: arch_lib.Skeleton) -> dict:
  if skel.post_activation:
    raise ValueError('the parity case builds WRNs only; give --depth/--width of a WideResNet')
  return {
    'image_size': skel.image_size,
    'num_classes': skel.num_classes,
    'stem_channels': skel.stem_channels,
    'head_channels': skel.head_channels,
    'blocks': [block_spec(s, b) for s, b in zip(skel.slots, geno.blocks)],
  }


def flat(tree, prefix: str) -> dict[str, np.ndarray]:
  """{'prefix/a/b': float64 array} of a nested dict of arrays."""
  return {
    '/'.join((prefix, *keys)): np.asarray(leaf, np.float64)
    for keys, leaf in taps.collect_leaves(tree)
  }


def batch(key: jax.Array, n: int, size: int, num_classes: int, dtype=jnp.float64):
  """A Gaussian batch and labels in [0, num_classes): some classes repeat, some not.

  Drawn in float64 and cast, so a float32 case has the float64 case's images, rounded.
  """
  kx, ky = jax.random.split(key)
  images = jax.random.normal(kx, (n, size, size, 3), jnp.float64).astype(dtype)
  labels = jax.random.randint(ky, (n,), 0, num_classes)
  return images, labels


def zen_inputs(candidate: candidate_lib.Candidate):
  """The Gaussian kernels and the two draws bswap's zen uses (candidate_lib.Candidate.run)."""
  k_weights, k1, k2 = jax.random.split(candidate.zen_key(), 3)
  x = candidate.images
  x1, x2 = (jax.random.normal(k, x.shape, jnp.float32).astype(x.dtype) for k in (k1, k2))
  return passes.gaussian_kernels(candidate._variables(), k_weights), x1, x2


def scores(geno, skel, seed, images, labels, names):
  """{'reference': {name: score}, 'engine': {name: score}} for one candidate."""
  ref = candidate_lib.Candidate.build(geno, skel, seed, INDEX, images, labels)
  out = {'reference': metrics.evaluate(ref, names)}
  engine_names = [n for n in names if set(metrics.get(n).passes) <= set(blockwise.PASSES)]
  with engine_lib.Pieces() as pieces:
    proxy_engine = blockwise.ProxyEngine(skel, pieces, 'fast')
    fast = candidate_lib.Candidate.build(geno, skel, seed, INDEX, images, labels, proxy_engine)
    out['engine'] = metrics.evaluate(fast, engine_names)
  return out, ref


def zico_two_batches(candidate: candidate_lib.Candidate, images2, labels2) -> float:
  """bswap's ZiCo formula over two full batches, ZiCo's own input (metrics' zico uses halves)."""
  c = candidate
  batches = [(c.images, c.labels), (images2, labels2)]
  return formulas.zico(np.asarray(passes.zico(c.model, c._variables(), batches)))


def build_case(
  geno, image_size: int, batch_size: int, seed: int, num_classes=10, names=None, dtype='float64'
):
  """(arrays, description) of the case; call under `jax.enable_x64(True)`."""
  names = names or per_candidate_metrics()
  skel = geno.skeleton(image_size, num_classes)
  key = jax.random.PRNGKey(seed)
  images, labels = batch(key, batch_size, image_size, num_classes, dtype)
  images2, labels2 = batch(jax.random.fold_in(key, 1), batch_size, image_size, num_classes, dtype)
  result, candidate = scores(geno, skel, seed, images, labels, names)
  if 'zico' in names:
    result['two_batches'] = {'zico': zico_two_batches(candidate, images2, labels2)}
  variables = candidate._variables()
  logits, _ = taps.forward(candidate.model, passes._cast(variables, dtype), images, ())
  gaussian, x1, x2 = zen_inputs(candidate)
  arrays = {
    **flat(variables['params'], 'params'),
    **flat(variables['batch_stats'], 'batch_stats'),
    **flat(gaussian['params'], 'zen/params'),
    'images': np.asarray(images, np.float64),
    'labels': np.asarray(labels, np.int64),
    'images2': np.asarray(images2, np.float64),
    'labels2': np.asarray(labels2, np.int64),
    'logits': np.asarray(logits, np.float64),
    'zen_x1': np.asarray(x1, np.float64),
    'zen_x2': np.asarray(x2, np.float64),
  }
  description = {
    'genotype': list(geno.blocks),
    'depth': geno.depth,
    'width': geno.width,
    'seed': seed,
    'index': INDEX,
    'batch': batch_size,
    'dtype': dtype,
    'network': network_spec(geno, skel),
    'bswap': result,
    'versions': {'jax': jax.__version__, 'numpy': np.__version__},
  }
  return arrays, description


def write(out: pathlib.Path, arrays: dict, description: dict) -> None:
  out.mkdir(parents=True, exist_ok=True)
  np.savez(out / 'case.npz', **arrays)
  (out / 'case.json').write_text(json.dumps(description, indent=1, sort_keys=True) + '\n')


def main(argv=None) -> int:
  p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  p.add_argument('--out', required=True, type=pathlib.Path)
  p.add_argument('--depth', type=int, default=10)
  p.add_argument('--width', type=int, default=2)
  p.add_argument('--blocks', default='', help='comma list of block types (default: all Conv)')
  p.add_argument('--image_size', type=int, default=32)
  p.add_argument('--batch', type=int, default=16)
  p.add_argument('--seed', type=int, default=0)
  p.add_argument('--num_classes', type=int, default=10, help="over 100: epe_nas's other branch")
  p.add_argument('--dtype', default='float64', choices=('float64', 'float32'))
  p.add_argument('--metrics', default='', help='comma list (default: every per-candidate one)')
  args = p.parse_args(argv)
  skel = arch_lib.wrn_skeleton(args.depth, args.width, args.image_size, args.num_classes)
  blocks = menu.split_names(args.blocks) if args.blocks else ['Conv'] * skel.num_blocks
  try:
    geno = genotype_lib.Genotype(tuple(blocks), arch_lib.WRN, args.depth, args.width)
  except ValueError as e:
    print(f'--blocks: {e}', file=sys.stderr)
    return 2
  names = [n.strip() for n in args.metrics.split(',') if n.strip()] or None
  with jax.enable_x64(True):
    arrays, description = build_case(
      geno, args.image_size, args.batch, args.seed, args.num_classes, names, args.dtype
    )
  write(args.out, arrays, description)
  print(json.dumps(description['bswap'], indent=1, sort_keys=True))
  return 0


if __name__ == '__main__':
  sys.exit(main())
