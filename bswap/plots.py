"""Pictures: why a search chose its genotype (search.png), and training curves (curves.png).

matplotlib (Agg, no display) is imported here only, so the rest of bswap never
pays for it.
"""

from __future__ import annotations

import io
import math

import matplotlib

matplotlib.use('Agg')
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib import patches  # noqa: E402
from matplotlib import ticker  # noqa: E402

STAGE_COLOURS = ('#4C72B0', '#DD8452', '#55A868', '#C44E52')


def _scatter(ax, ranked, budget: float, band: float, label: str):
  finite = [s for s in ranked if math.isfinite(s.score)]  # a dead net's proxy may be NaN
  params = [s.params for s in finite]
  scores = [s.score for s in finite]
  ax.axvspan(budget * (1 - band), budget * (1 + band), color='0.94', zorder=0, label='budget band')
  ax.axvline(budget, color='0.6', linestyle='--', linewidth=1, zorder=1)
  ax.scatter(params, scores, s=10, alpha=0.6, color='0.35', label=f'{len(ranked)} candidates')
  best = ranked[0]
  ax.scatter(
    [best.params], [best.score], s=160, marker='*', color='#C44E52', zorder=3, label='chosen'
  )
  if scores and min(scores) > 0:
    ax.set_yscale('log')
  ax.set_xlabel('parameters')
  ax.set_ylabel(label)
  ax.set_title('Candidates')
  ax.legend(loc='best', fontsize=8)
  ax.xaxis.set_major_locator(ticker.MaxNLocator(6, steps=[1, 2, 5, 10]))
  ax.xaxis.set_major_formatter(ticker.FuncFormatter(lambda x, _: f'{x / 1000:,.4g}K'))


def _blocks(ax, best, label: str):
  if not best.block_scores:  # a whole-network metric: nothing per block
    ax.text(0.5, 0.5, f'{label} has no per-block scores', ha='center', va='center')
    ax.set_axis_off()
    ax.set_title(f'Chosen: {best.params:,} params, {best.macs:,} MACs, score {best.score:.4g}')
    return
  skel = best.genotype.skeleton()
  stages = [slot.stage for slot in skel.slots]
  positions = range(len(best.block_scores))
  colours = [STAGE_COLOURS[(s - 1) % len(STAGE_COLOURS)] for s in stages]
  ax.bar(positions, best.block_scores, color=colours)
  if min(best.block_scores) > 0:  # block scores often span orders of magnitude
    ax.set_yscale('log')
  ax.set_xticks(list(positions))
  ax.set_xticklabels(best.genotype.paper_names, rotation=70, fontsize=8)
  ax.set_xlabel('block (type)')
  ax.set_ylabel(f'block {label}')
  handles = [
    patches.Patch(color=STAGE_COLOURS[(stage - 1) % len(STAGE_COLOURS)], label=f'stage {stage}')
    for stage in sorted(set(stages))
  ]
  ax.legend(handles=handles, fontsize=8)
  ax.set_title(f'Chosen: {best.params:,} params, {best.macs:,} MACs, score {best.score:.4g}')


def _png(fig, dpi: int) -> bytes:
  """The laid-out figure as PNG bytes, without a 'Software' stamp: same data, same bytes."""
  fig.tight_layout()
  buf = io.BytesIO()
  fig.savefig(buf, format='png', dpi=dpi, metadata={'Software': None})
  return buf.getvalue()


def search_figure(ranked, budget: float, band: float, label: str) -> bytes:
  """PNG bytes: params vs score (`label`, the metric's name) for all candidates, and the
  winner's blocks."""
  fig, (left, right) = plt.subplots(1, 2, figsize=(13, 4.8), width_ratios=(1, 1.4))
  try:
    _scatter(left, ranked, budget, band, label)
    _blocks(right, ranked[0], label)
    return _png(fig, dpi=110)
  finally:
    plt.close(fig)


def _curve(ax, records, key: str, label: str, style: str):
  points = [(r['epoch'], r[key]) for r in records if r.get(key) is not None]
  if points:
    ax.plot(*zip(*points), style, label=label, markersize=3)


def curves_figure(records) -> bytes:
  """PNG bytes: train and test cross-entropy (left) and error % (right) against the epoch.

  The train curve is the cross-entropy part of a student's objective, so that it
  compares with the test loss (cross-entropy alone).
  """
  fig, (loss_ax, error_ax) = plt.subplots(1, 2, figsize=(11, 4.2))
  try:
    panels = ((loss_ax, 'ce', 'loss', 'cross-entropy'), (error_ax, 'error', 'error', 'error (%)'))
    for ax, train_key, test_key, name in panels:
      _curve(ax, records, f'train_{train_key}', 'train', '-')
      _curve(ax, records, f'test_{test_key}', 'test', 'o-')
      ax.set_xlabel('epoch')
      ax.set_ylabel(name)
      ax.grid(alpha=0.3)
      if ax.lines:
        ax.legend(fontsize=8)
    best = [r['test_error'] for r in records if r.get('test_error') is not None]
    if best:
      error_ax.set_title(f'test error: last {best[-1]:.2f}%, best {min(best):.2f}%')
    return _png(fig, dpi=100)
  finally:
    plt.close(fig)


def _params_axis(ax):
  ax.set_xscale('log')
  ax.xaxis.set_major_formatter(
    ticker.FuncFormatter(lambda x, _: f'{x / 1e6:.3g}M' if x >= 1e6 else f'{x / 1e3:.3g}K')
  )
  ax.xaxis.set_minor_formatter(ticker.NullFormatter())
  ax.set_xlabel('parameters')


def _runs(n: int) -> str:
  return f'{n} run' if n == 1 else f'{n} runs'


def figure3(rows, paper) -> bytes:
  """PNG bytes: test error against parameters, one line per method (the paper's Figure 3).

  `rows`: bswap.report.Row with an error (mean, std over seeds as error bars);
  `paper`: dicts of bswap/paper.csv, drawn dashed with hollow markers in the
  colour of the method of the same name.
  """
  methods = list(dict.fromkeys([r.method for r in rows] + [p['method'] for p in paper]))
  colours = {m: plt.get_cmap('tab10')(i % 10) for i, m in enumerate(methods)}
  datasets = sorted({r.dataset for r in rows} | {p['dataset'] for p in paper})
  fig, ax = plt.subplots(figsize=(8, 5.2))
  try:
    for method in methods:
      ours = sorted((r for r in rows if r.method == method), key=lambda r: r.params)
      if ours:
        ax.errorbar(
          [r.params for r in ours],
          [r.error for r in ours],
          yerr=[r.std for r in ours],
          fmt='o-',
          capsize=3,
          color=colours[method],
          label=f'{method} ({_runs(sum(len(r.runs) for r in ours))})',
        )
      theirs = sorted((p for p in paper if p['method'] == method), key=lambda p: p['params'])
      if theirs:
        ax.plot(
          [p['params'] for p in theirs],
          [p['test_error'] for p in theirs],
          'o--',
          markerfacecolor='none',
          color=colours[method],
          alpha=0.8,
          label=f'{method} (paper)',
        )
    _params_axis(ax)
    ax.set_ylabel('test error (%)')
    ax.set_title(f'Test error against parameters ({", ".join(datasets) or "no runs"})')
    ax.grid(alpha=0.3, which='both')
    if ax.lines or ax.containers:
      ax.legend(fontsize=8, loc='best')
    return _png(fig, dpi=110)
  finally:
    plt.close(fig)
