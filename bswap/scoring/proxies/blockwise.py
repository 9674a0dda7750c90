"""Zero-cost proxies block by block, with compiles shared by every candidate.

The same decomposition as `bswap.scoring.engine` (PROXIES.md section 8): a
candidate is its parts (stem, blocks, head), each compiled once per (part
module, input shape, dtype, pass) in the search's `Pieces`, so the number of
compiles is bounded by the menu, the skeleton and the passes, not by the
number of candidates. The passes:

  loss   (grad_norm, snip, plain, fisher, fisher_potential): a forward sweep keeping each
         part's pullback (conv outputs saved, as the Fisher engine), then from the head
         back, (dL/dx_b, part b's per-layer terms) = backward_b(pullback_b, dL/dx_{b+1}).
         Only what the metrics asked for read is formed: weight gradients (grad_norm,
         snip, plain), layer-output cotangents (fisher), probe cotangents (fisher_potential)
  syn    synflow: |weights| in float64, BN removed, all-ones input, R = sum logits; each
         backward piece recomputes its part's forward
  jac    (jacov, epe_nas): input cotangents of sum(logits); J at the stem's input
  codes  (nwot): each part's sum of ReLU Hamming kernels, on the forward sweep
         (with a loss pass on the same batch, `run_loss` takes codes from its forward
         sweep and J from a second backward sweep through its kept pullbacks)
  zico   a forward sweep per half of the batch, then one backward sweep whose pieces take
         both halves' cotangents and return ZiCo's per-layer sums of the two weight gradients
  meco   a batch-1 forward sweep returning each part's MeCo tensors
  zen    one forward sweep carrying both Gaussian streams (x1, x_mix); each part draws its
         N(0, 1) kernels from its own key (`passes.gaussian_kernels`) and returns its BN
         terms, the head Delta

Per-layer terms are the reference path's (`passes`), so a total is the same
sum in another order: equal to the reference within float rounding (float64:
1e-9 relative). l2_norm, params and flops need no pass: norms of the
candidate's weights and counts cached per part shape. grasp (forward-over-
reverse through the whole net) runs on the whole network.
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np

from bswap import losses
from bswap.nets import blocks
from bswap.nets import models
from bswap.scoring import engine as engine_lib
from bswap.scoring import fisher
from bswap.scoring.proxies import passes
from bswap.scoring.proxies import taps

# The passes this engine runs, and the static pseudo-pass.
PASSES = ('loss', 'syn', 'jac', 'codes', 'zico', 'meco', 'zen', 'static')


def _cast(v, dtype):
  return jax.tree.map(lambda a: a.astype(dtype), v)


def _apply(module, v, x, collections=()):
  """(output, sown) of one part in training mode; a block's output drops its probe."""
  out, state = module.apply(v, x, train=True, mutable=['batch_stats', *collections])
  y = out[0] if isinstance(out, tuple) else out
  return y, {c: state.get(c, {}) for c in collections}


def _forward(module):
  def forward(v, x):
    return _apply(module, _cast(v, passes.network_dtype(x)), x)[0]

  return forward


def _part_codes(sown_taps, n: int) -> jax.Array:
  """One part's summed ReLU kernel (N, N) in float32, from its taps.

  The reference's C C^T + (1 - C)(1 - C)^T per ReLU, as 2 C C^T - r_i - r_j + D
  (r the rows' counts of active units, D the units): one matrix product instead of
  two. Every term is an integer below 2^24, so float32 gives the reference's
  numbers exactly, in any order of summation.
  """
  dot = functools.partial(jnp.dot, precision=jax.lax.Precision.HIGHEST)
  k = jnp.zeros((n, n), jnp.float32)
  for _, x in taps.collect(sown_taps, blocks.RELU_IN):
    c = (x.reshape(n, -1) > 0).astype(jnp.float32)
    r = jnp.sum(c, axis=1)
    k = k + (2 * dot(c, c.T) - r[:, None] - r[None, :] + c.shape[1])
  return k


def _codes_forward(module):
  """(output, this part's summed ReLU kernel (N, N) in float32, exact)."""

  def forward(v, x):
    y, sown = _apply(module, _cast(v, passes.network_dtype(x)), x, (blocks.TAPS,))
    return y, _part_codes(sown[blocks.TAPS], x.shape[0])

  return forward


def _zeros_like_perturbations(module, v, x, collection):
  shapes = jax.eval_shape(
    lambda v, x: module.apply(v, x, train=True, mutable=['batch_stats', collection])[1], v, x
  )
  return jax.tree.map(lambda s: jnp.zeros(s.shape, x.dtype), shapes[collection])


def _loss_piece(module, is_block: bool, is_head: bool, synflow: bool = False, codes: bool = False):
  """(v, x, dy or labels) -> (dL/dx, per-layer terms) of one part, its forward recomputed.

  Loss mode: grad_norm/snip/plain/fisher terms (and the block's Fisher
  potential; with `codes`, the part's ReLU kernel as terms['codes']). Synflow
  mode: |weights|, BN removed, R = sum of logits.
  """

  def piece(v, x, dy):
    dtype = passes.network_dtype(x)
    v = _cast(v, dtype)
    if synflow:  # batch_stats kept for the shapes below; BN is removed from f
      v = {**v, 'params': jax.tree.map(jnp.abs, v['params'])}
    params = v['params']
    lp = _zeros_like_perturbations(module, v, x, blocks.LAYER_PERTURBATIONS)
    pp = _zeros_like_perturbations(module, v, x, 'perturbations') if is_block else {}

    def f(params, x, lp, pp):
      extra = {'perturbations': pp} if is_block else {}
      full = {**v, 'params': params, blocks.LAYER_PERTURBATIONS: lp, **extra}
      if synflow:
        with taps.without_batch_norm():
          return _apply(module, full, x, (blocks.TAPS, 'intermediates'))
      return _apply(module, full, x, (blocks.TAPS, 'intermediates'))

    y, pullback, sown = jax.vjp(f, params, x, lp, pp, has_aux=True)
    if is_head:
      labels = dy
      cot = jnp.ones_like(y) if synflow else jax.grad(losses.cross_entropy)(y, labels)
    else:
      cot = dy
    g_params, dx, g_layers, g_probe = pullback(cot)
    if synflow:
      return dx, {'synflow': passes.synflow_terms(params, g_params)}
    terms = passes.layer_terms(params, g_params, sown[blocks.TAPS], g_layers)
    if codes:
      terms['codes'] = _part_codes(sown[blocks.TAPS], x.shape[0])
    if is_block:
      probe = sown['intermediates'][blocks.PROBE][-1]
      terms['fisher_potential'] = fisher.block_fisher(probe, g_probe[blocks.PROBE])[None]
    return dx, terms

  return piece


# What each loss-family metric reads of the loss pass: weight gradients, every layer
# output's cotangent, or each block's probe. A pass computes only what its metrics read.
# plain reads the weight gradients when they are formed anyway, else the layer outputs'
# cotangents (sum W * dL/dW = sum (z - b) * dL/dz), which cost no weight gradient.
LOSS_OUTPUTS = {
  'grad_norm': 'weights',
  'snip': 'weights',
  'plain': 'layers',
  'fisher': 'layers',
  'fisher_potential': 'probe',
}
ALL_LOSS_OUTPUTS = ('layers', 'probe', 'weights')


def loss_outputs(names) -> tuple[str, ...]:
  """The loss pass outputs metrics `names` read (sorted; a compile key); () if none."""
  outputs = {LOSS_OUTPUTS[n] for n in names if n in LOSS_OUTPUTS}
  if 'plain' in names and 'weights' in outputs and 'fisher' not in names:
    outputs.discard('layers')  # plain from the weight gradients formed for grad_norm or snip
  return tuple(sorted(outputs))


def _kept(term: str, outputs: tuple[str, ...]) -> bool:
  """Whether a loss pass with `outputs` returns `term` (plain: from weights or layers)."""
  if term == 'plain':
    return 'weights' in outputs or 'layers' in outputs
  return LOSS_OUTPUTS[term] in outputs


def _loss_forward(module, is_block: bool, outputs: tuple[str, ...], codes: bool = False):
  """(v, x) -> (y, pullback, sown): a part's forward in the loss pass, its pullback kept.

  As in the Fisher engine, only conv outputs are saved (`dots_saveable`); the
  pullback gives the weight gradients only when 'weights' is asked for, the
  layer outputs' cotangents only for 'layers', the probe's only for 'probe'.
  With `codes`, nwot's ReLU kernel of the part is sown['codes']: the same
  batch and weights as the codes pass, so its forward is this one.
  """
  layers, probe = 'layers' in outputs, 'probe' in outputs and is_block
  tapped = layers or codes
  collections = ((blocks.TAPS,) if tapped else ()) + (('intermediates',) if probe else ())

  def forward(v, x):
    v = _cast(v, passes.network_dtype(x))
    lp = _zeros_like_perturbations(module, v, x, blocks.LAYER_PERTURBATIONS) if layers else {}
    pp = _zeros_like_perturbations(module, v, x, 'perturbations') if probe else {}

    def f(params, x, lp, pp):
      full = {**v, 'params': params}
      if layers:
        full[blocks.LAYER_PERTURBATIONS] = lp
      if probe:
        full['perturbations'] = pp
      return _apply(module, full, x, collections)

    f = jax.checkpoint(f, policy=jax.checkpoint_policies.dots_saveable)
    if 'weights' in outputs:
      y, pullback, sown = jax.vjp(f, v['params'], x, lp, pp, has_aux=True)
    else:
      y, pullback, sown = jax.vjp(
        lambda x, lp, pp: f(v['params'], x, lp, pp), x, lp, pp, has_aux=True
      )
    if codes:
      sown = {**sown, 'codes': _part_codes(sown[blocks.TAPS], x.shape[0])}
      if not layers:  # the backward reads no taps: do not keep them
        del sown[blocks.TAPS]
    return y, pullback, sown

  return forward


def _loss_backward(is_block: bool, outputs: tuple[str, ...], need_dx: bool):
  """(params, pullback, sown, dy) -> (dL/dx or None, the part's per-layer terms)."""

  def backward(params, pullback, sown, dy):
    grads = pullback(dy)
    if 'weights' not in outputs:
      grads = (None, *grads)
    g_params, dx, g_layers, g_probe = grads
    params = _cast(params, dy.dtype)
    terms = passes.weight_terms(params, g_params) if g_params is not None else {}
    if 'layers' in outputs:
      terms['fisher'] = passes.fisher_terms(params, sown[blocks.TAPS], g_layers)
      if g_params is None:
        terms['plain'] = passes.plain_terms(params, sown[blocks.TAPS], g_layers)
    if 'probe' in outputs and is_block:
      probe = sown['intermediates'][blocks.PROBE][-1]
      terms['fisher_potential'] = fisher.block_fisher(probe, g_probe[blocks.PROBE])[None]
    return (dx if need_dx else None), terms

  return backward


def _jac_backward(outputs: tuple[str, ...]):
  """(pullback, dy) -> d(sum logits)/dx through a part, by the loss pass's pullback.

  The pullback would also give weight gradients and layer cotangents: unused
  here, XLA removes them, so this is the jac pass's backward without its forward.
  """

  def backward(pullback, dy):
    return pullback(dy)[1 if 'weights' in outputs else 0]

  return backward


def _jac_piece(module, is_head: bool):
  """(v, x, dy) -> d(sum logits)/dx through one part (dy unused at the head)."""

  def piece(v, x, dy):
    v = _cast(v, passes.network_dtype(x))
    y, pullback = jax.vjp(lambda x: _apply(module, v, x)[0], x)
    (dx,) = pullback(jnp.ones_like(y) if is_head else dy)
    return dx

  return piece


def _zico_piece(module, is_head: bool):
  """(v, xa, xb, dya, dyb) -> (dL_a/dxa, dL_b/dxb, ZiCo's per-layer sums over the two batches).

  Each batch's weight gradients, its part's forward recomputed; at the head dya, dyb are
  the two halves' labels.
  """

  def piece(v, xa, xb, dya, dyb):
    v = _cast(v, passes.network_dtype(xa))

    def gradients(x, dy):
      f = lambda params, x: _apply(module, {**v, 'params': params}, x)[0]
      y, pullback = jax.vjp(f, v['params'], x)
      g_params, dx = pullback(jax.grad(losses.cross_entropy)(y, dy) if is_head else dy)
      return [k for _, k in taps.kernels(g_params)], dx

    ga, dxa = gradients(xa, dya)
    gb, dxb = gradients(xb, dyb)
    return dxa, dxb, passes.zico_sums([ga, gb])

  return piece


def _zico_backward(need_dx: bool):
  """(params, pullback_a, pullback_b, dya, dyb) -> (dxa, dxb, ZiCo's per-layer sums)."""

  def backward(params, pullback_a, pullback_b, dya, dyb):
    g_a, dxa, *_ = pullback_a(dya)
    g_b, dxb, *_ = pullback_b(dyb)
    kernels = lambda g: [k for _, k in taps.kernels(g)]
    sums = passes.zico_sums([kernels(g_a), kernels(g_b)])
    return (dxa, dxb, sums) if need_dx else (None, None, sums)

  return backward


def _meco_forward(module):
  """(v, image) -> (output, MeCo's tensors of this part), batch 1."""

  def forward(v, x):
    y, sown = _apply(module, _cast(v, passes.network_dtype(x)), x, (blocks.TAPS,))
    return y, passes.meco_tensors(sown[blocks.TAPS])

  return forward


def _zen_forward(module, is_head: bool):
  """(v, key, a, b) -> (a', b', per-BN terms), the head's Delta in place of (a', b').

  The part's kernels ~ N(0, 1) from its own key; a and b are the x1 and x_mix streams.
  """

  def forward(v, key, a, b):
    v = {**v, 'params': passes.gaussian_part(v['params'], key)}
    v = _cast(v, passes.network_dtype(a))
    ya, ta = _apply(module, v, a, (blocks.TAPS,))
    yb, tb = _apply(module, v, b, (blocks.TAPS,))
    ta, tb = ta[blocks.TAPS], tb[blocks.TAPS]
    terms = passes.zen_bn_terms(ta, tb)
    return (passes.zen_delta(ta, tb), terms) if is_head else (ya, yb, terms)

  return forward


@functools.lru_cache(maxsize=4096)
def _part_counts(module, shape: tuple[int, ...]) -> tuple[int, float]:
  """(parameters, tensorwatch flops) of one part at batch 1, from shapes only."""
  spec = jax.ShapeDtypeStruct((1, *shape), jnp.float32)

  def init_and_tap(x):
    v = module.init(jax.random.PRNGKey(0), x, train=False)
    v = {k: v[k] for k in ('params', 'batch_stats') if k in v}
    return v['params'], _apply(module, v, x, (blocks.TAPS,))[1][blocks.TAPS]

  params, t = jax.eval_shape(init_and_tap, spec)
  count = sum(math.prod(p.shape) for p in jax.tree.leaves(params))
  return count, passes.flops_of(params, t)


class ProxyEngine:
  """Block-by-block proxies of one skeleton; compiled pieces shared across candidates."""

  def __init__(self, skel, pieces: engine_lib.Pieces, conv_impl: str = 'fast'):
    self.skeleton = skel
    self.base = engine_lib.Engine(skel, pieces, conv_impl)
    self.pieces = pieces

  def _piece(self, key, fn, *args):
    return self.pieces.get(key, lambda: jax.jit(fn).lower(*args).compile())

  def _parts(self, geno, seed, index):
    variables = self.base.variables(geno, seed, index)
    modules = self.base.modules(geno)
    return modules, variables

  def _forward_sweep(self, modules, variables, images, kind='forward'):
    """Each part's input, and the head's; with kind 'codes' (each part's ReLU kernel) or
    'meco' (each part's MeCo tensors), the head's too, and those outputs."""
    xs, outs, x = [], [], images
    with_head = kind in ('codes', 'meco')
    parts = zip(modules, variables) if with_head else zip(modules[:-1], variables[:-1])
    build = {'codes': _codes_forward, 'meco': _meco_forward, 'forward': _forward}[kind]
    for module, v in parts:
      xs.append(x)
      fn = self._piece((f'proxy-{kind}', module, engine_lib.spec(x)), build(module), v, x)
      if with_head:
        x, out = fn(v, x)
        outs.append(out)
      else:
        x = fn(v, x)
    xs.append(x)
    return xs, outs

  def _backward_sweep(self, kind, modules, variables, xs, head_arg):
    """[(part index, terms)] from the head back to the stem; kind 'loss', 'syn' or 'jac'."""
    out, dy = [], head_arg
    last = len(modules) - 1
    for p in range(last, -1, -1):
      module, v, x = modules[p], variables[p], xs[p]
      is_block, is_head = 0 < p < last, p == last
      if kind == 'jac':
        fn = _jac_piece(module, is_head)
      else:
        fn = _loss_piece(module, is_block, is_head, synflow=kind == 'syn')
      # Prefixed: the table is shared with the Fisher engine, whose keys are ('forward', ...).
      key = (f'proxy-{kind}', module, engine_lib.spec(x), engine_lib.spec(dy), is_head)
      result = self._piece(key, fn, v, x, dy)(v, x, dy)
      if kind == 'jac':
        dy = result
      else:
        dy, terms = result
        out.append(terms)
    return dy if kind == 'jac' else out

  def run(self, name: str, geno, seed: int, index: int, images, labels, outputs=()):
    """The outputs of pass `name` for candidate `index`, in the reference path's form.

    `outputs`: what the loss pass computes (`loss_outputs`); () for everything.
    """
    if name == 'loss':
      return self.run_loss(geno, seed, index, images, labels, outputs)['loss']
    modules, variables = self._parts(geno, seed, index)
    if name == 'static':
      shapes = [s for *_, s in models.build_parts(geno, self.skeleton, named=False)]
      counts = [_part_counts(m, s) for m, s in zip(modules, shapes)]
      kernels = [k for v in variables for _, k in taps.kernels(v['params'])]
      return {
        'params': sum(c for c, _ in counts) / 1e6,
        'flops': sum(f for _, f in counts) / 1e6,
        'l2_norm': np.asarray([np.linalg.norm(np.asarray(k, np.float64)) for k in kernels]),
      }
    if name == 'codes':
      _, kernels = self._forward_sweep(modules, variables, images, 'codes')
      return np.stack([np.asarray(k) for k in kernels])
    if name == 'jac':
      xs, _ = self._forward_sweep(modules, variables, images)
      j = self._backward_sweep('jac', modules, variables, xs, jnp.zeros((), images.dtype))
      return np.asarray(j).reshape(images.shape[0], -1)
    if name == 'syn':
      with jax.enable_x64(True):
        ones = jnp.ones((1, *images.shape[1:]), jnp.float64)
        xs, _ = self._syn_forward(modules, variables, ones)
        parts = self._backward_sweep('syn', modules, variables, xs, jnp.zeros((), jnp.float64))
        return np.concatenate([np.asarray(t['synflow']) for t in parts])
    if name == 'zico':
      return self._zico(modules, variables, images, labels)
    if name == 'meco':
      _, tensors = self._forward_sweep(modules, variables, images[:1], 'meco')
      return [np.asarray(t) for part in tensors for t in part]
    if name == 'zen':
      return self._zen(modules, variables, passes.zen_key(seed, index, len(modules) - 2), images)
    raise ValueError(f'the block engine has no pass {name!r}; it runs {", ".join(PASSES)}')

  def run_loss(self, geno, seed: int, index: int, images, labels, outputs=(), also=()):
    """{'loss': ..., and each pass of `also` ('codes', 'jac')}, in `run`'s forms.

    nwot's codes and jacov's Jacobian see the loss pass's batch and weights, so
    they come from its forward sweep: the codes as each part's forward runs,
    the Jacobian by a second backward sweep through the pullbacks it kept.
    That saves the two passes' own forward sweeps (about one Fisher's cost).
    """
    unknown = set(also) - {'codes', 'jac'}
    if unknown:
      raise ValueError(f'the loss pass can also give codes and jac, not {sorted(unknown)}')
    modules, variables = self._parts(geno, seed, index)
    outputs, codes = outputs or ALL_LOSS_OUTPUTS, 'codes' in also
    parts, saved, head_x = self._loss(modules, variables, images, labels, outputs, codes)
    merged = {}
    for terms in reversed(parts):  # stem first, as the parts are ordered
      for k, v in terms.items():
        merged.setdefault(k, []).append(np.asarray(v))
    result = {'loss': {k: np.concatenate(v) for k, v in merged.items() if k != 'codes'}}
    if codes:
      result['codes'] = np.stack(merged['codes'])
    if 'jac' in also:
      j = self._jac_through(modules, variables, saved, head_x, outputs)
      result['jac'] = np.asarray(j).reshape(images.shape[0], -1)
    return result

  def _jac_through(self, modules, variables, saved, head_x, outputs):
    """d(sum logits)/d(images) by the loss pass's kept pullbacks (the jac pass's backward)."""
    head, v = modules[-1], variables[-1]
    dy = jnp.zeros((), head_x.dtype)
    key = ('proxy-jac', head, engine_lib.spec(head_x), engine_lib.spec(dy), True)
    dy = self._piece(key, _jac_piece(head, True), v, head_x, dy)(v, head_x, dy)
    for p in range(len(saved) - 1, -1, -1):
      forward, x, pullback, _ = saved[p]
      # Each backward piece is keyed by its forward piece too (engine.Pieces).
      key = ('proxy-jac-backward', modules[p], engine_lib.spec(x), outputs, forward)

      def build(forward=forward):
        y_spec, pullback_spec, _ = forward.out_info
        return jax.jit(_jac_backward(outputs)).lower(pullback_spec, y_spec).compile()

      dy = self.pieces.get(key, build)(pullback, dy)
    return dy

  def _pullback_sweep(self, modules, variables, images, outputs, codes=False):
    """[(forward piece, part input, pullback, sown)] of stem and blocks, and the head's input."""
    saved, x = [], images
    for p, (module, v) in enumerate(zip(modules[:-1], variables[:-1])):
      key = ('proxy-loss-forward', module, engine_lib.spec(x), outputs) + (('codes',) * codes)
      forward = self._piece(key, _loss_forward(module, p > 0, outputs, codes), v, x)
      y, pullback, sown = forward(v, x)
      saved.append((forward, x, pullback, sown))
      x = y
    return saved, x

  def _loss(self, modules, variables, images, labels, outputs, codes=False):
    """([terms] of each part, head first; the sweep's saved pullbacks; the head's input):
    forward keeping each part's pullback, then back. With `codes`, terms['codes'] too."""
    saved, head_x = self._pullback_sweep(modules, variables, images, outputs, codes)
    head, v, x = modules[-1], variables[-1], head_x
    key = ('proxy-loss', head, engine_lib.spec(x), engine_lib.spec(labels), True)
    key += ('codes',) * codes
    fn = self._piece(key, _loss_piece(head, False, True, codes=codes), v, x, labels)
    dy, terms = fn(v, x, labels)
    out = [{k: t for k, t in terms.items() if k == 'codes' or _kept(k, outputs)}]
    for p in range(len(saved) - 1, -1, -1):
      forward, x, pullback, sown = saved[p]
      params = variables[p]['params']
      fn = _loss_backward(p > 0, outputs, need_dx=p > 0)
      # Keyed by its forward piece (engine.Pieces), which also fixes what it sowed (codes).
      key = ('proxy-loss-backward', modules[p], engine_lib.spec(x), outputs, forward)

      def build(forward=forward, fn=fn, params=params):
        _, pullback_spec, sown_spec = forward.out_info
        dy_spec = forward.out_info[0]
        return jax.jit(fn).lower(params, pullback_spec, sown_spec, dy_spec).compile()

      dy, terms = self.pieces.get(key, build)(params, pullback, sown, dy)
      if codes:
        terms = {**terms, 'codes': sown['codes']}
      out.append(terms)
    return out, saved, head_x

  def _zico(self, modules, variables, images, labels):
    """ZiCo's per-layer sums: a forward sweep per half keeping each part's pullback (the loss
    pass's weight-gradient pieces), then one backward sweep taking both halves."""
    (xa, ya), (xb, yb) = passes.halves(images, labels)
    saved_a, head_a = self._pullback_sweep(modules, variables, xa, ('weights',))
    saved_b, head_b = self._pullback_sweep(modules, variables, xb, ('weights',))
    head, v, last = modules[-1], variables[-1], len(modules) - 1
    args = (v, head_a, head_b, ya, yb)
    key = ('proxy-zico', head, *(engine_lib.spec(t) for t in args[1:]), True)
    dya, dyb, s = self._piece(key, _zico_piece(head, True), *args)(*args)
    sums = [s]
    for p in range(last - 1, -1, -1):
      (forward_a, _, pullback_a, _), (forward_b, _, pullback_b, _) = saved_a[p], saved_b[p]
      params = variables[p]['params']
      # Both forwards: an odd batch's halves differ in size, and either may be rebuilt.
      key = ('proxy-zico-backward', modules[p], p > 0, forward_a, forward_b)

      def build(forward_a=forward_a, forward_b=forward_b, params=params, need_dx=p > 0):
        (ya, pullback_a_spec, _), (yb, pullback_b_spec, _) = forward_a.out_info, forward_b.out_info
        args = (params, pullback_a_spec, pullback_b_spec, ya, yb)
        return jax.jit(_zico_backward(need_dx)).lower(*args).compile()

      dya, dyb, s = self.pieces.get(key, build)(params, pullback_a, pullback_b, dya, dyb)
      sums.append(s)
    return np.concatenate([np.asarray(s) for s in reversed(sums)])

  def _zen(self, modules, variables, key, images):
    """(Delta, BN term): both Gaussian streams through each part, its kernels drawn inside."""
    k_weights, x1, x2 = passes.zen_draws(key, images.shape, passes.network_dtype(images))
    a, b, terms = x1, x1 + passes.ZEN_MIX * x2, []
    last = len(modules) - 1
    for p, (module, v) in enumerate(zip(modules, variables)):
      args = (v, jax.random.fold_in(k_weights, p), a, b)
      key = ('proxy-zen', module, engine_lib.spec(a), p == last)
      fn = self._piece(key, _zen_forward(module, p == last), *args)
      if p == last:
        delta, t = fn(*args)
      else:
        a, b, t = fn(*args)
      terms.append(t)
    return float(delta), float(np.sum(np.concatenate([np.asarray(t, np.float64) for t in terms])))

  def _syn_forward(self, modules, variables, ones):
    """synflow's forward sweep: |weights|, BN removed, float64."""
    xs, x = [], ones
    for module, v in zip(modules[:-1], variables[:-1]):
      xs.append(x)
      key = ('proxy-syn-forward', module, engine_lib.spec(x))
      x = self._piece(key, _syn_forward(module), v, x)(v, x)
    xs.append(x)
    return xs, []


def _syn_forward(module):
  def forward(v, x):
    v = {'params': jax.tree.map(lambda a: jnp.abs(a.astype(x.dtype)), v['params'])}
    with taps.without_batch_norm():
      return _apply(module, v, x)[0]

  return forward
