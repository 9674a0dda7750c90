"""Combine torch_side.py results (--json files) into one markdown table (docs/proxy_parity.md).

  python launch/proxy_parity/summarize.py result1.json result2.json ...

One row per metric: the largest relative difference, over the cases, between
the canonical value and bswap's reference path, and bswap's block engine.
Plain Python: no JAX, no torch.
"""

from __future__ import annotations

import json
import sys


def worst(results: list[dict]) -> dict[str, dict]:
  """{metric: {'cases', 'ref', 'engine'}}: the number of cases and the largest differences."""
  out: dict[str, dict] = {}
  for result in results:
    for row in result['rows']:
      entry = out.setdefault(row['metric'], {'cases': 0, 'ref': None, 'engine': None})
      if row['canonical'] is None:
        continue
      entry['cases'] += 1
      for key, col in (('ref', 'rel_reference'), ('engine', 'rel_engine')):
        if row[col] is not None:
          entry[key] = max(entry[key] or 0.0, row[col])
  return out


def markdown(results: list[dict]) -> str:
  def f(v):
    return '-' if v is None else f'{v:.1e}'

  lines = [
    '| metric | cases | max rel. diff, reference path | max rel. diff, block engine |',
    '|---|---|---|---|',
  ]
  for name, e in sorted(worst(results).items()):
    lines.append(f'| {name} | {e["cases"]} | {f(e["ref"])} | {f(e["engine"])} |')
  cases = [
    f'- {", ".join(r["case"]["genotype"])} (WRN-{r["case"]["depth"]}-{r["case"]["width"]}, '
    f'{r["image_size"]} px, batch {r["case"]["batch"]}, seed {r["case"]["seed"]}): '
    f'logits {r["logits_max_rel_error"]:.1e}'
    for r in results
  ]
  return '\n'.join(lines + ['', 'Cases (max relative logit error, torch vs bswap):', *cases])


def main(argv: list[str]) -> int:
  if not argv:
    print('usage: summarize.py RESULT.json [RESULT.json ...]', file=sys.stderr)
    return 2
  results = [json.loads(open(path).read()) for path in argv]
  print(markdown(results))
  return 0


if __name__ == '__main__':
  sys.exit(main(sys.argv[1:]))
