"""What a search produces: scored candidates, and the record of its choice.

`SearchRecord` is `best_genotype.json`, the one file that says which student a
search chose and under which settings. It is written by the search and read
by the pipeline (to reuse a finished search), by `bswap.show` and by the
genotype reader (which finds the genotype nested under "genotype").
`mismatches(config)` names every recorded setting that a config would change:
a rerun reuses a search only when there are none.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import jax

from bswap import files
from bswap.nets import convs
from bswap.nets import genotype as genotype_lib
from bswap.nets import menu
from bswap.scoring import fisher_engines
from bswap.scoring import metrics
from bswap.search import constraints

FILE = 'best_genotype.json'
# The search's outputs are written as one set (files.write_set); this lists them.
MANIFEST = 'search.manifest.json'


@dataclasses.dataclass(frozen=True)
class Scored:
  """One scored candidate."""

  index: int  # its position in the sample: the seed contract's candidate index
  genotype: genotype_lib.Genotype
  params: int
  macs: int
  score: float  # by the search's ranking metric
  block_scores: tuple[float, ...]
  recorded: dict[str, float] = dataclasses.field(default_factory=dict)  # record_metrics' scores


def versions() -> dict[str, str]:
  import flax
  import jax
  import optax

  return {'jax': jax.__version__, 'flax': flax.__version__, 'optax': optax.__version__}


# Fields of config.data that change no pixel of the Fisher batch.
_DATA_IGNORED = ('cache_dir', 'workers', 'prefetch', 'synthetic_size')


def _data_settings(config) -> dict[str, Any]:
  """config.data's fields that decide the Fisher batch (synthetic_size too, for synthetic data)."""
  data = config.data.to_dict()
  ignored = _DATA_IGNORED[:-1] if data['source'] == 'synthetic' else _DATA_IGNORED
  # An optional field left unset (None) is not recorded, so a record written
  # before such a field existed (train_examples, say) still matches.
  return {
    k: list(v) if isinstance(v, tuple) else v
    for k, v in data.items()
    if k not in ignored and v is not None
  }


def search_settings(config) -> dict[str, Any]:
  """Every setting of `config` that changes which candidate a search picks."""
  s, m = config.search, config.model
  settings = {
    'arch': m.arch,
    'depth': m.depth,
    'width': m.width,
    'num_classes': m.num_classes,
    'seed': config.seed,
    'metric': s.metric,
    'strategy': s.strategy,
    # 'auto' resolved: the engine that ran (their scores differ by float rounding).
    'engine': metrics.resolve_engine(config, jax.default_backend()),
    # 'fast' and 'xla' convolutions differ by float rounding: record the one that ran.
    'conv_impl': convs.resolve(s.conv_impl, jax.default_backend(), 'search.conv_impl'),
    'constraints': s.constraints,
    'budget': s.budget,
    'band': s.band,
    'menu': list(menu.split_names(s.menu)) if s.menu else list(menu.NAMES),
    'num_candidates': s.num_candidates,
    'batch_size': metrics.batch_size_of(config),  # None resolved: the batch scored on
    'fresh_batch_per_candidate': s.fresh_batch_per_candidate,
    'data': _data_settings(config),
  }
  init = fisher_engines.init_of(config)
  if init != 'per_candidate':  # unrecorded: per_candidate, so older records still match
    settings['init'] = init
  if 'macs' in constraints.names(config):
    settings.update(mac_budget=s.mac_budget, mac_band=s.mac_band)
  if s.metric == 'rank_aggregate':
    settings.update(aggregate=s.aggregate, aggregate_metrics=s.aggregate_metrics)
  return settings


@dataclasses.dataclass(frozen=True)
class SearchRecord:
  """best_genotype.json: the chosen candidate, how it was scored, and the search's settings."""

  genotype: genotype_lib.Genotype
  params: int
  macs: int
  score: float
  block_scores: tuple[float, ...]
  candidate_index: int
  acceptance: float
  settings: dict[str, Any]  # search_settings(config) of the search that chose it
  versions: dict[str, str] = dataclasses.field(default_factory=versions)
  recorded: dict[str, float] = dataclasses.field(default_factory=dict)  # its other metrics

  @classmethod
  def of(cls, config, best: Scored, acceptance: float) -> SearchRecord:
    return cls(
      best.genotype,
      best.params,
      best.macs,
      best.score,
      tuple(best.block_scores),
      best.index,
      acceptance,
      search_settings(config),
      recorded=dict(best.recorded),
    )

  @property
  def metric(self) -> str:
    return self.settings['metric']

  def to_json(self) -> str:
    record = {
      'genotype': self.genotype.to_dict(),
      'paper_names': list(self.genotype.paper_names),
      'params': self.params,
      'macs': self.macs,
      'metric': self.metric,
      'score': self.score,
      'block_scores': list(self.block_scores),
      'candidate_index': self.candidate_index,
      'acceptance': self.acceptance,
      'settings': self.settings,
      'versions': self.versions,
    }
    if self.recorded:
      record['recorded'] = self.recorded
    return json.dumps(record, indent=2) + '\n'

  @classmethod
  def from_json(cls, text: str, source: str = FILE) -> SearchRecord:
    """A record from best_genotype.json's text; a clear error naming `source` if malformed."""
    try:
      data = json.loads(text)
      record = cls(
        genotype_lib.from_dict(data['genotype'], source=source),
        int(data['params']),
        int(data['macs']),
        float(data['score']),
        tuple(float(s) for s in data['block_scores']),
        int(data['candidate_index']),
        float(data['acceptance']),
        dict(data['settings']),
        dict(data.get('versions', {})),
        {k: float(v) for k, v in data.get('recorded', {}).items()},
      )
    except (json.JSONDecodeError, KeyError, TypeError, ValueError) as e:
      raise ValueError(
        f'{source} is not a search record of this bswap version ({type(e).__name__}: {e}); '
        'delete it to search again, or move it away'
      ) from None
    return record

  def mismatches(self, config) -> list[str]:
    """The settings (recorded value -> config's) that differ; [] when the config would redo it."""
    return settings_mismatches(self.settings, config)

  def matches(self, config) -> bool:
    return not self.mismatches(config)


def settings_mismatches(recorded: dict[str, Any], config) -> list[str]:
  """'name: recorded -> config's' for every search setting that differs."""
  wanted = search_settings(config)
  keys = dict.fromkeys([*recorded, *wanted])
  return [
    f'{k}: {recorded.get(k)!r} -> {wanted.get(k)!r}'
    for k in keys
    if recorded.get(k) != wanted.get(k)
  ]


def check_outputs(workdir: str) -> None:
  """A ValueError if workdir's search outputs are a mix of two searches (files.check_set)."""
  differ = files.check_set(workdir, MANIFEST)
  if differ:
    raise ValueError(
      f'{workdir} holds a mixed set of search outputs ({", ".join(differ)} not as '
      f'{MANIFEST} lists them: a search stopped while writing them); rerun the search '
      '(--config.stage=search) with the same settings to rewrite them'
    )
