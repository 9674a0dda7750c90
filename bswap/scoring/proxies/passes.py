"""The passes the zero-cost proxies share (PROXIES.md section 2), whole network, plainly.

Each pass is a pure function of (model, variables, batch) that runs one kind
of forward/backward and reduces what it saw, on the device, to the small
per-layer pieces its proxies need; `jitted(name, model)` compiles it once per
architecture. One pass serves every proxy that needs it:

  loss   forward + backward of the mean cross-entropy, differentiating the
         weights, every conv/dense output and every block's probe at once:
         grad_norm, snip, plain, fisher (per layer) and fisher_potential (per block)
  jac    forward + backward of sum(logits) to the input: the rows of J (jacov, epe_nas)
  codes  forward: each ReLU's N x N Hamming kernel (nwot)
  meco   forward of one image: every tapped tensor (meco)
  syn    synflow's float64, BN-free, |weights| network on an all-ones image
  zen    two forwards of Gaussian inputs through N(0, 1) kernels (zen)
  hvp    GraSP's Hessian-vector product (forward-over-reverse)
  zico   the weight gradients of two batches, reduced to ZiCo's per-layer sums
  static parameter count, flops (tensorwatch's rules) and weight norms

Variables are used in the images' dtype (float32, or float64 under x64), so
weight gradients are not rounded to the float32 of the stored weights.
"""

from __future__ import annotations

import functools
import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from bswap import losses
from bswap.nets import blocks
from bswap.nets import weights
from bswap.scoring import fisher
from bswap.scoring.proxies import taps

ZEN_MIX = 1e-2  # gamma of x_mix = x1 + gamma * x2 (NASLib's zen)


def _clean(variables):
  """params and batch_stats only: perturbations made elsewhere would have another batch size."""
  return {k: v for k, v in variables.items() if k in ('params', 'batch_stats')}


def _cast(variables, dtype):
  return jax.tree.map(lambda v: v.astype(dtype), _clean(variables))


def network_dtype(images) -> jnp.dtype:
  """The dtype a pass runs in: the images' (float32 at least)."""
  return jnp.promote_types(images.dtype, jnp.float32)


def _by_path(pairs):
  return dict(pairs)


def loss(model: nn.Module, variables, images, labels):
  """P_loss: per-layer grad_norm, snip, plain and fisher terms; per-block Fisher potential."""
  variables = _cast(variables, network_dtype(images))
  params = variables['params']
  layer_zeros = taps.zero_layer_perturbations(model, variables, images)
  probe_zeros = fisher.zero_perturbations(model, variables, images)

  def objective(params, layer_pert, probe_pert):
    v = {
      **variables,
      'params': params,
      blocks.LAYER_PERTURBATIONS: layer_pert,
      'perturbations': probe_pert,
    }
    logits, sown = taps.forward(model, v, images, (blocks.TAPS, 'intermediates'))
    return losses.cross_entropy(logits, labels), sown

  grads, sown = jax.grad(objective, argnums=(0, 1, 2), has_aux=True)(
    params, layer_zeros, probe_zeros
  )
  weight_grads, layer_grads, probe_grads = grads
  inter = sown['intermediates']
  potential = [
    fisher.block_fisher(inter[b][blocks.PROBE][-1], probe_grads[b][blocks.PROBE])
    for b in (f'block_{i}' for i in range(len(inter)))
  ]
  terms = layer_terms(params, weight_grads, sown[blocks.TAPS], layer_grads)
  return {**terms, 'fisher_potential': jnp.stack(potential)}


def layer_terms(params, weight_grads, sown_taps, layer_grads) -> dict[str, jax.Array]:
  """Per-layer grad_norm, snip, plain and fisher terms of one loss backward (any part of a net)."""
  return {
    **weight_terms(params, weight_grads),
    'fisher': fisher_terms(params, sown_taps, layer_grads),
  }


def weight_terms(params, weight_grads) -> dict[str, jax.Array]:
  """Per-layer grad_norm, snip and plain terms from the weights and their gradients."""
  w = [k for _, k in taps.kernels(params)]
  g = [k for _, k in taps.kernels(weight_grads)]
  return {
    'grad_norm': jnp.stack([jnp.sqrt(jnp.sum(gi**2)) for gi in g]),
    'snip': jnp.stack([jnp.sum(jnp.abs(wi * gi)) for wi, gi in zip(w, g)]),
    'plain': jnp.stack([jnp.sum(wi * gi) for wi, gi in zip(w, g)]),
  }


def fisher_terms(params, sown_taps, layer_grads) -> jax.Array:
  """Per-layer NASLib fisher: fan_in x the channel saliency of each conv/dense output."""
  outputs = _by_path(taps.collect(sown_taps, blocks.LAYER_OUT))
  cotangents = taps.collect(layer_grads, blocks.LAYER_OUT)
  return jnp.stack(
    [
      _fan_in(taps.kernel_of(params, path)) * _layer_fisher(outputs[path], cot)
      for path, cot in cotangents
    ]
  )


def plain_terms(params, sown_taps, layer_grads) -> jax.Array:
  """Per-layer plain without weight gradients: for a linear layer z = W x (+ b),
  sum W * dL/dW = sum over examples and positions of (z - b) * dL/dz."""
  outputs = _by_path(taps.collect(sown_taps, blocks.LAYER_OUT))
  terms = []
  for path, cot in taps.collect(layer_grads, blocks.LAYER_OUT):
    z, bias = outputs[path], taps.bias_of(params, path)
    terms.append(jnp.sum((z if bias is None else z - bias) * cot))
  return jnp.stack(terms)


def _fan_in(kernel) -> int:
  """kh * kw * C_in / groups for an HWIO conv kernel, in_features for a dense (in, out) one."""
  return math.prod(kernel.shape[:-1])


def _layer_fisher(z, g):
  """sum_c 0.5 * mean_n s[n, c]^2 with s = sum over positions of z * g (none for the dense)."""
  s = jnp.sum(z * g, axis=(1, 2)) if z.ndim == 4 else z * g
  return jnp.sum(0.5 * jnp.mean(s**2, axis=0))


def jac(model: nn.Module, variables, images):
  """P_jac: J = d(sum of every logit)/d(images), one row per example (N, H*W*3)."""
  variables = _cast(variables, network_dtype(images))
  logits, pullback = jax.vjp(lambda x: taps.forward(model, variables, x, ())[0], images)
  (j,) = pullback(jnp.ones_like(logits))
  return j.reshape(j.shape[0], -1)


def codes(model: nn.Module, variables, images):
  """P_fwd for nwot: (R, N, N) kernels C C^T + (1 - C)(1 - C)^T, one per ReLU application.

  Each entry is an integer below 2^24 (one ReLU's width), so float32 products
  are exact; the sum over ReLUs is taken in float64 by the caller.
  """
  variables = _cast(variables, network_dtype(images))
  _, sown = taps.forward(model, variables, images)
  return relu_kernels(sown[blocks.TAPS])


def relu_kernels(sown_taps) -> jax.Array:
  """(R, N, N): C C^T + (1 - C)(1 - C)^T of each sown ReLU input, C = (input > 0)."""
  kernels = []
  for _, x in taps.collect(sown_taps, blocks.RELU_IN):
    c = (x.reshape(x.shape[0], -1) > 0).astype(jnp.float32)
    dot = functools.partial(jnp.dot, precision=lax.Precision.HIGHEST)
    kernels.append(dot(c, c.T) + dot(1 - c, (1 - c).T))
  return jnp.stack(kernels)


def meco(model: nn.Module, variables, image):
  """P_fwd of one image (1, H, W, 3): MeCo's tensors (PROXIES.md 5), each (H*W, C).

  Every conv output, every BN output, every ReLU output, every block's output
  and a pooling stem's output, each once (a plain stem's output is its conv's).
  The logits (a vector) would contribute 0 and are left out.
  """
  variables = _cast(variables, network_dtype(image))
  _, sown = taps.forward(model, variables, image)
  return meco_tensors(sown[blocks.TAPS])


def meco_tensors(sown_taps) -> list[jax.Array]:
  """MeCo's tensors among what a forward (of a whole net or one part) sowed, each (H*W, C)."""
  t = sown_taps
  tensors = [x for _, x in taps.collect(t, blocks.LAYER_OUT) if x.ndim == 4]
  tensors += [x for _, x in taps.collect(t, blocks.BN_OUT)]
  tensors += [nn.relu(x) for _, x in taps.collect(t, blocks.RELU_IN)]
  tensors += [x for _, x in taps.collect(t, blocks.BLOCK_OUT)]
  tensors += [x for _, x in taps.collect(t, blocks.STEM_OUT)]
  return [x.reshape(-1, x.shape[-1]) for x in tensors]


def syn(model: nn.Module, variables, image_shape: tuple[int, ...]):
  """P_syn (run under x64): per-layer sum |W| * dR/d|W|, R = sum of logits, BN removed.

  Every parameter is replaced by its absolute value (biases too; they enter R
  but are not scored); the input is all ones at batch 1.
  """
  params = jax.tree.map(lambda v: jnp.abs(v.astype(jnp.float64)), _clean(variables)['params'])
  ones = jnp.ones((1, *image_shape[1:]), jnp.float64)

  def total(params):
    with taps.without_batch_norm():
      logits, _ = taps.forward(model, {'params': params}, ones, ())
    return jnp.sum(logits)

  return synflow_terms(params, jax.grad(total)(params))


def synflow_terms(params, grads) -> jax.Array:
  """Per-layer sum |W| * dR/d|W| (params already absolute)."""
  w, g = taps.kernels(params), taps.kernels(grads)
  return jnp.stack([jnp.sum(wi * gi) for (_, wi), (_, gi) in zip(w, g)])


def zen_key(seed: int, index: int, num_blocks: int) -> jax.Array:
  """zen's key: a part index past the head's (B + 1), apart from the initial weights' keys."""
  return weights.part_key(seed, index, num_blocks + 2)


def zen_draws(key, shape: tuple[int, ...], dtype):
  """(kernel key, x1, x2): x1, x2 ~ N(0, 1) of the batch's shape, drawn in float32 whatever
  the dtype (float64 draws are other numbers), then cast."""
  k_weights, k1, k2 = jax.random.split(key, 3)
  x1, x2 = (jax.random.normal(k, shape, jnp.float32).astype(dtype) for k in (k1, k2))
  return k_weights, x1, x2


def gaussian_part(params, key):
  """One part's conv and dense kernels ~ N(0, 1) from that part's key; the rest unchanged."""
  leaves = taps.kernels(params)
  keys = iter(jax.random.split(key, max(len(leaves), 1)))
  return taps.map_kernels(lambda k: jax.random.normal(next(keys), k.shape, k.dtype), params)


def part_order(params) -> list[str]:
  """A whole network's part names in order: stem, block_0 .. block_{B-1}, head."""
  blocks_ = sorted((n for n in params if n.startswith('block_')), key=lambda n: int(n[6:]))
  return ['stem', *blocks_, 'head']


def gaussian_kernels(variables, key):
  """zen's re-initialisation: every conv and dense kernel ~ N(0, 1); the rest as initialised.

  Part by part: part p (stem 0, block b at b + 1, head last) draws from
  fold_in(key, p), so the block engine draws each part's kernels alone.
  """
  variables = _clean(variables)
  params = variables['params']
  drawn = {
    name: gaussian_part(params[name], jax.random.fold_in(key, p))
    for p, name in enumerate(part_order(params))
  }
  return {**variables, 'params': drawn}


def zen(model: nn.Module, variables, x1, x2):
  """P_zen: (Delta, BN term) for inputs x1 and x_mix = x1 + 1e-2 x2, training-mode BN.

  Per BN, the running variance PyTorch would hold after the two forwards,
  rv = 0.81 + 0.09 v(x1) + 0.1 v(x_mix), v the unbiased variance of the BN's input.
  """
  variables = _cast(variables, network_dtype(x1))
  x_mix = x1 + ZEN_MIX * x2
  _, t1 = taps.forward(model, variables, x1)
  _, t2 = taps.forward(model, variables, x_mix)
  t1, t2 = t1[blocks.TAPS], t2[blocks.TAPS]
  return zen_delta(t1, t2), jnp.sum(zen_bn_terms(t1, t2))


def zen_delta(t1, t2):
  """(1/N) sum |F(x1) - F(x_mix)| of the tensors entering global pooling (the head's taps)."""
  f1, f2 = taps.collect(t1, blocks.POOL_IN)[-1][1], taps.collect(t2, blocks.POOL_IN)[-1][1]
  return jnp.sum(jnp.abs(f1 - f2)) / f1.shape[0]


def zen_bn_terms(t1, t2) -> jax.Array:
  """Per BN, ln sqrt(mean_c rv_c) with rv = 0.81 + 0.09 v(x1) + 0.1 v(x_mix) (unbiased v)."""
  var = lambda x: jnp.var(x, axis=(0, 1, 2), ddof=1)
  a, b = taps.collect(t1, blocks.BN_IN), taps.collect(t2, blocks.BN_IN)
  terms = [
    jnp.log(jnp.sqrt(jnp.mean(0.81 + 0.09 * var(x) + 0.1 * var(y))))
    for (_, x), (_, y) in zip(a, b, strict=True)
  ]
  return jnp.stack(terms) if terms else jnp.zeros((0,))


def hvp(model: nn.Module, variables, images, labels):
  """GraSP: per-layer sum W * (H g), g = dL/dW over the layer set, held constant."""
  variables = _cast(variables, network_dtype(images))
  params = variables['params']

  def gradient(params):
    return jax.grad(lambda p: _loss_of(model, variables, p, images, labels))(params)

  g = jax.lax.stop_gradient(gradient(params))
  tangent = jax.tree_util.tree_map_with_path(
    lambda p, leaf: leaf if taps.is_kernel(p) else jnp.zeros_like(leaf), g
  )
  _, hg = jax.jvp(gradient, (params,), (tangent,))
  w, h = taps.kernels(params), taps.kernels(hg)
  return jnp.stack([jnp.sum(wi * hi) for (_, wi), (_, hi) in zip(w, h)])


def _loss_of(model, variables, params, images, labels):
  logits, _ = taps.forward(model, {**variables, 'params': params}, images, ())
  return losses.cross_entropy(logits, labels)


def kernel_gradients(model: nn.Module, variables, images, labels):
  """dL/dW over the layer set for one batch, in layer order."""
  variables = _cast(variables, network_dtype(images))
  g = jax.grad(lambda p: _loss_of(model, variables, p, images, labels))(variables['params'])
  return [k for _, k in taps.kernels(g)]


def zico_sums(gradients):
  """ZiCo's per-layer S = sum over weights with sigma != 0 of mean|g| / std(g) (ddof 0).

  `gradients`: one list of per-layer arrays per batch.
  """
  sums = []
  for per_batch in zip(*gradients, strict=True):
    g = jnp.stack(per_batch)
    mu, sigma = jnp.mean(jnp.abs(g), axis=0), jnp.std(g, axis=0)
    nonzero = sigma != 0
    sums.append(jnp.sum(jnp.where(nonzero, mu / jnp.where(nonzero, sigma, 1), 0)))
  return jnp.stack(sums)


def halves(images, labels):
  """zico's B = 2 batches: the scoring batch's two halves (canonical: two full batches)."""
  half = images.shape[0] // 2
  if half < 1:
    raise ValueError(f'zico needs a batch of at least 2 (two halves); got {images.shape[0]}')
  return [(images[:half], labels[:half]), (images[half:], labels[half:])]


def zico(model: nn.Module, variables, batches):
  """ZiCo's per-layer sums from the kernel gradients of each (images, labels) batch."""
  grads = [kernel_gradients(model, variables, x, y) for x, y in batches]
  return zico_sums(grads)


def counts(model: nn.Module, image_shape: tuple[int, ...]) -> dict[str, float]:
  """{'params': trainable count / 1e6, 'flops': tensorwatch's count at batch 1 / 1e6}.

  Shapes only (no compile): `image_shape` is (H, W, 3). tensorwatch counts per
  op application: conv kh*kw*C_in/g*C_out*H_out*W_out, BN 2*C*H*W, ReLU C*H*W,
  3x3 max pool C*H_out*W_out*9, global average pool C*(H+1)*(W+1), dense in*out.
  """
  spec = jax.ShapeDtypeStruct((1, *image_shape), jnp.float32)
  shapes = jax.eval_shape(lambda x: _init_and_tap(model, x), spec)
  params, t = shapes
  count = sum(math.prod(v.shape) for v in jax.tree.leaves(params))
  return {'params': count / 1e6, 'flops': flops_of(params, t) / 1e6}


def flops_of(params, sown_taps) -> int:
  """tensorwatch's count of a batch-1 forward from its taps' shapes (see `counts`)."""
  t, flops = sown_taps, 0
  for path, out in taps.collect(t, blocks.LAYER_OUT):
    kernel = taps.kernel_of(params, path)
    flops += math.prod(kernel.shape) * (math.prod(out.shape[1:3]) if len(out.shape) == 4 else 1)
  flops += sum(2 * math.prod(x.shape) for _, x in taps.collect(t, blocks.BN_OUT))
  flops += sum(math.prod(x.shape) for _, x in taps.collect(t, blocks.RELU_IN))
  flops += sum(9 * math.prod(x.shape) for _, x in taps.collect(t, blocks.STEM_OUT))
  for _, x in taps.collect(t, blocks.POOL_IN):
    _, h, w, c = x.shape
    flops += c * (h + 1) * (w + 1)
  return flops


def _init_and_tap(model, x):
  variables = model.init(jax.random.PRNGKey(0), x, train=False)
  _, sown = taps.forward(model, _clean(variables), x)
  return variables['params'], sown[blocks.TAPS]


def l2_norms(variables) -> np.ndarray:
  """Per-layer Frobenius norms of the layer set's kernels, in float64."""
  kernels = taps.kernels(_clean(variables)['params'])
  return np.asarray([np.linalg.norm(np.asarray(k, np.float64)) for _, k in kernels])


# Few: a whole network's executable holds over a thousand memory maps (memory_maps.py),
# and a search never scores one architecture twice.
@functools.lru_cache(maxsize=16)
def jitted(name: str, model: nn.Module):
  """Pass `name` compiled for one architecture (cached per model; shapes retrace)."""
  fn = {'loss': loss, 'jac': jac, 'codes': codes, 'meco': meco, 'hvp': hvp, 'zen': zen}
  fn.update(kernel_gradients=kernel_gradients)
  if name == 'syn':
    return jax.jit(functools.partial(syn, model), static_argnums=1)
  return jax.jit(functools.partial(fn[name], model))
