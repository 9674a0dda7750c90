"""Who a study trains: its members, each with a kind and a seed-contract index.

A study of `config.study` is either

  a population  N random genotypes inside the budget (the search's sampler and
                seed: candidate i of a search with the same seed is member i),
                the single-blocktype students whose parameters lie within
                budget +- single_band (the paper's Figure 2 lines), and the
                named genotypes (a list, genotype files, or the top k of an
                earlier search's candidates.csv); or
  sensitivity   (study.sensitivity) the all-Conv network of config.model, and
                for every position i that network with block i replaced by
                study.substitute (the paper's Figure 4).
"""

from __future__ import annotations

import csv
import dataclasses
import io

from bswap import files
from bswap.nets import accounting
from bswap.nets import arch as arch_lib
from bswap.nets import genotype as genotype_lib
from bswap.nets import menu
from bswap.search import strategies

KINDS = ('random', 'single', 'named', 'substituted')


@dataclasses.dataclass(frozen=True)
class Member:
  index: int  # seed-contract candidate index; also the member's run directory
  kind: str  # one of KINDS
  genotype: genotype_lib.Genotype
  params: int
  macs: int
  note: str = ''  # the single block type, the substituted position, or the source


def skeleton(config) -> arch_lib.Skeleton:
  m = config.model
  return arch_lib.skeleton(m.arch, m.depth, m.width, config.data.image_size, m.num_classes)


def _member(index, kind, geno, skel, note='') -> Member:
  count = accounting.count(geno, skel.image_size, skel.num_classes)
  return Member(index, kind, geno, count.params, count.macs, note)


def _genotype(skel: arch_lib.Skeleton, names) -> genotype_lib.Genotype:
  return genotype_lib.Genotype(tuple(names), skel.arch, skel.depth, skel.width)


def singles(skel: arch_lib.Skeleton, budget: float, band: float) -> list[tuple[str, int]]:
  """(type, params) of each menu type valid everywhere with params in budget +- band."""
  table = accounting.param_table(skel)
  fixed = accounting.fixed_params(skel)
  out = []
  for j, name in enumerate(menu.NAMES):
    column = table[:, j]
    if (column < 0).any():
      continue
    total = int(fixed + column.sum())
    if budget * (1 - band) <= total <= budget * (1 + band):
      out.append((name, total))
  return out


def named_genotypes(config, skel: arch_lib.Skeleton) -> list[tuple[genotype_lib.Genotype, str]]:
  """study.named (';'-separated block lists or genotype files) and study.candidates' top k."""
  sc = config.study
  out = []
  for entry in [e.strip() for e in (sc.named or '').split(';') if e.strip()]:
    geno = genotype_lib.parse(entry, skel.arch, skel.depth, skel.width)
    out.append((geno, entry))
  if sc.top_k:
    if not sc.candidates:
      raise ValueError(
        f'--config.study.top_k={sc.top_k} needs --config.study.candidates=PATH '
        "(an earlier search's candidates.csv)"
      )
    if not files.exists(sc.candidates):
      raise ValueError(f'--config.study.candidates={sc.candidates!r} does not exist')
    rows = list(csv.DictReader(io.StringIO(files.read_text(sc.candidates))))
    if not rows or 'blocks' not in rows[0]:
      raise ValueError(f'{sc.candidates} is not a candidates.csv (no "blocks" column)')
    for row in rows[: sc.top_k]:
      geno = _genotype(skel, row['blocks'].split())
      out.append((geno, f'{sc.candidates} rank {row["rank"]}'))
  return out


def population(config) -> list[Member]:
  """The members of config.study, in index order (see the module doc)."""
  skel = skeleton(config)
  sc = config.study
  if sc.sensitivity:
    return sensitivity(skel, sc.substitute)
  members = []
  if sc.num_random:
    sample = strategies.sample_candidates(config, skel, num=sc.num_random)
    members = [_member(i, 'random', g, skel) for i, g in enumerate(sample.genotypes)]
  for name, _ in singles(skel, config.search.budget, sc.single_band):
    members.append(
      _member(len(members), 'single', _genotype(skel, [name] * skel.num_blocks), skel, name)
    )
  for geno, source in named_genotypes(config, skel):
    members.append(_member(len(members), 'named', geno, skel, source))
  if not members:
    raise ValueError(
      'the study has no members: set --config.study.num_random, widen --config.study.single_band, '
      'or name genotypes with --config.study.named'
    )
  return members


def sensitivity(skel: arch_lib.Skeleton, substitute: str) -> list[Member]:
  """The all-Conv network (index 0) and, as member i + 1, it with block i substituted."""
  name = menu.canonical_name(substitute)
  base = ['Conv'] * skel.num_blocks
  members = [_member(0, 'single', _genotype(skel, base), skel, 'Conv')]
  for slot in skel.slots:
    blocks = list(base)
    blocks[slot.index] = name
    genotype_lib.check_valid_at(name, slot)
    members.append(
      _member(slot.index + 1, 'substituted', _genotype(skel, blocks), skel, str(slot.index))
    )
  return members


def shard(members: list[Member], spec: str) -> list[Member]:
  """The members shard 'i/n' trains: every n-th, from the i-th."""
  try:
    i, n = (int(x) for x in spec.split('/'))
    if not 0 <= i < n:
      raise ValueError
  except ValueError:
    raise ValueError(
      f'--config.study.shard={spec!r} must be i/n with 0 <= i < n, e.g. 0/1 (everything) or 1/4'
    ) from None
  return members[i::n]
