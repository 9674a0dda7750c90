"""The study's pictures (PNG bytes): the paper's Figures 2 and 4, and error against metrics."""

from __future__ import annotations

import io

import matplotlib

matplotlib.use('Agg')
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from bswap.nets import menu  # noqa: E402


def _png(fig, dpi: int = 110) -> bytes:
  """PNG bytes without a 'Software' stamp: same data, same bytes."""
  fig.tight_layout()
  buf = io.BytesIO()
  fig.savefig(buf, format='png', dpi=dpi, metadata={'Software': None})
  plt.close(fig)
  return buf.getvalue()


def _label(e) -> str:
  return e['metric'] if not e['k'] else f'{e["metric"]}@{e["k"]}'


def _density(ax, errors):
  """A histogram and, with enough distinct values, a Gaussian kernel density."""
  errors = np.asarray(errors, np.float64)
  ax.hist(errors, bins=min(20, max(5, errors.size // 4)), density=True, alpha=0.35, color='C0')
  if np.unique(errors).size > 2:
    from scipy import stats  # a dependency of jax

    grid = np.linspace(errors.min() - 1, errors.max() + 1, 200)
    ax.plot(grid, stats.gaussian_kde(errors)(grid), color='C0', label='random students')


def figure2(rows, entries, columns) -> bytes:
  """Density of the random students' final errors; single-blocktype students as red lines;
  each metric's top pick (at initialisation and at the largest k) as a marker."""
  randoms = [r for r in rows if r['kind'] == 'random']
  fig, ax = plt.subplots(figsize=(10, 4.8))
  if randoms:
    _density(ax, [r['final_error'] for r in randoms])
  top = ax.get_ylim()[1]
  for r in rows:
    if r['kind'] == 'single':
      ax.axvline(r['final_error'], color='red', lw=1)
      ax.text(
        r['final_error'],
        top * 0.95,
        menu.paper_name(r['note']),
        rotation=90,
        va='top',
        ha='right',
        fontsize=7,
        color='red',
      )
  pool = randoms or rows
  kmax = max((e['k'] for e in entries), default=0)
  shown = [e for e in entries if e['k'] in (0, kmax)]
  for n, e in enumerate(shown):
    column = next(c for c, name, k, _ in columns if name == e['metric'] and k == e['k'])
    best = max(pool, key=lambda r: (e['sign'] * r[column], -r['index']))
    ax.plot(
      best['final_error'],
      top * (0.05 + 0.06 * (n % 12)),
      'v',
      color=f'C{(n + 1) % 10}',
      label=f'top pick of {_label(e)}',
    )
  ax.set_xlabel('final test error (%)')
  ax.set_ylabel('density')
  ax.set_title(f'{len(randoms)} random students; red: single-blocktype students')
  ax.legend(fontsize=7, loc='upper left', bbox_to_anchor=(1.01, 1.0))  # clear of the lines
  return _png(fig)


def metrics_figure(rows, entries, columns, few: int = 4) -> bytes:
  """Final error against each of the `few` metrics with the most negative rho."""
  ranked = sorted((e for e in entries if np.isfinite(e['rho'])), key=lambda e: e['rho'])[:few]
  ranked = ranked or entries[:1]
  fig, axes = plt.subplots(1, len(ranked), figsize=(4 * len(ranked), 3.6), squeeze=False)
  for ax, e in zip(axes[0], ranked):
    column = next(c for c, name, k, _ in columns if name == e['metric'] and k == e['k'])
    for kind, marker in (('random', 'o'), ('single', 's'), ('named', '*'), ('substituted', 'D')):
      pts = [(r[column], r['final_error']) for r in rows if r['kind'] == kind]
      if pts:
        x, y = zip(*pts)
        ax.scatter(x, y, s=14, marker=marker, label=kind)
    if e['metric'] in ('fisher_potential',) and all(r[column] > 0 for r in rows):
      ax.set_xscale('log')
    ax.set_xlabel(_label(e))
    ax.set_ylabel('final test error (%)')
    ax.set_title(f'rho {e["rho"]:.2f}', fontsize=9)
    ax.legend(fontsize=7)
  return _png(fig)


def figure4(rows, skel, substitute: str) -> bytes:
  """Error and parameters per substituted block position, coloured by stage."""
  subs = sorted((r for r in rows if r['kind'] == 'substituted'), key=lambda r: int(r['note']))
  base = [r for r in rows if r['kind'] != 'substituted']
  fig, (top, bottom) = plt.subplots(2, 1, figsize=(8, 6), sharex=True)
  pos = [int(r['note']) for r in subs]
  colours = [f'C{skel.slots[p].stage - 1}' for p in pos]
  top.bar(pos, [r['final_error'] for r in subs], color=colours)
  bottom.bar(pos, [r['params'] for r in subs], color=colours)
  if base:
    top.axhline(base[0]['final_error'], color='k', ls='--', lw=1, label='unmodified')
    bottom.axhline(base[0]['params'], color='k', ls='--', lw=1)
    top.legend(fontsize=8)
  lo = min([r['final_error'] for r in rows])
  top.set_ylim(max(0.0, lo - 2), None)
  top.set_ylabel('final test error (%)')
  bottom.set_ylabel('parameters')
  bottom.set_xticks(pos)
  bottom.set_xlabel(f'block replaced by {menu.paper_name(menu.canonical_name(substitute))}')
  stages = sorted({skel.slots[p].stage for p in pos})
  handles = [plt.Rectangle((0, 0), 1, 1, color=f'C{s - 1}') for s in stages]
  bottom.legend(handles, [f'stage {s}' for s in stages], fontsize=8)
  return _png(fig)
