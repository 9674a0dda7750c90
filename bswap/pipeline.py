"""The stages `python -m bswap.main` runs, and which network each one trains.

`config.stage` names one of `STAGES`:

  search    rank genotypes inside the budget, write the search's files (bswap.search)
  teacher   train config.model's network, standard blocks only, in workdir/teacher
  student   train the genotype config.train.genotype names in workdir/student, with
            attention transfer from config.train.teacher_checkpoint when given
  pipeline  the paper's whole job after the teacher: search, then train the winner
            (a rerun reuses a finished search with the same settings)
  eval      test metrics of the trained run --workdir names (bswap.evaluate)
  study     train a population of students and rank-correlate every metric
            with their final errors (bswap.study.run)

This module and bswap.study.run are the only ones that know both the search
and training; neither imports the other.
"""

from __future__ import annotations

import os

import jax
from absl import logging

from bswap import evaluate
from bswap import files
from bswap import lock
from bswap.nets import genotype as genotype_lib
from bswap.search import record as record_lib
from bswap.search import run as search_lib
from bswap.search import strategies
from bswap.study import run as study_lib
from bswap.train import loop

TEACHER, STUDENT = 'teacher', 'student'  # run directories inside the workdir


def student_genotype(config, workdir: str) -> genotype_lib.Genotype:
  """The genotype config.train.genotype names.

  None: the search's workdir/best_genotype.json. 'random': one genotype drawn
  by the budgeted sampler at config.search.budget (seed config.seed). Else a
  genotype file (JSON or the reference CSV) or a comma-separated list of block
  names, at width config.train.genotype_width where the list gives none.
  """
  spec = config.train.genotype
  if spec is None:
    record_lib.check_outputs(workdir)
    path = os.path.join(workdir, record_lib.FILE)
    if not files.exists(path):
      raise ValueError(
        f'no {path}: run the search first (--config.stage=search, or --config.stage=pipeline '
        'for search then training), or name a genotype with --config.train.genotype=PATH'
      )
    return genotype_lib.load(path)
  if spec == 'random':
    return random_genotype(config)
  geno = genotype_lib.parse(spec, width=config.train.genotype_width)
  if geno.arch != config.model.arch:
    # A bare list of 16 names reads as a ResNet-34: say so rather than train one silently.
    raise ValueError(
      f'--config.train.genotype gives a {geno.arch} genotype ({len(geno.blocks)} block names) '
      f'but config.model.arch is {config.model.arch!r}; a WRN of depth d takes (d - 4) / 2 '
      "names and ResNet-34 16: give names for the config's network, or use a config of "
      f'{geno.arch} (e.g. configs/teacher_resnet34.py for ResNet-34)'
    )
  return geno


def random_genotype(config) -> genotype_lib.Genotype:
  """One genotype drawn uniformly inside the budget: BlockSwap without the ranking."""
  sample = strategies.sample_candidates(config, search_lib.skeleton(config), num=1)
  return sample.genotypes[0]


def train_teacher(config, workdir: str) -> loop.Summary:
  return loop.fit(config, os.path.join(workdir, TEACHER), loop.teacher_genotype(config))


def train_student(config, workdir: str) -> loop.Summary:
  geno = student_genotype(config, workdir)
  teacher = config.train.teacher_checkpoint
  if not teacher:
    logging.warning(
      'No --config.train.teacher_checkpoint: training the student with cross-entropy alone, '
      'without attention transfer'
    )
  return loop.fit(config, os.path.join(workdir, STUDENT), geno, teacher)


def search_mismatches(config, workdir: str) -> list[str] | None:
  """The settings workdir's search differs in from config's ([]: none); None without a search."""
  path = os.path.join(workdir, record_lib.FILE)
  if not files.exists(path):
    return None
  record = record_lib.SearchRecord.from_json(files.read_text(path), source=path)
  return record.mismatches(config)


def search_done(config, workdir: str) -> bool:
  """True if workdir holds a whole set of search outputs with this config's settings."""
  try:
    record_lib.check_outputs(workdir)
  except ValueError as e:
    logging.warning('%s: searching again', e)
    return False
  changed = search_mismatches(config, workdir)
  if changed:
    logging.info(
      '%s is a search with other settings (%s): searching again',
      os.path.join(workdir, record_lib.FILE),
      ', '.join(changed),
    )
  return changed == []


def check_student_free(config, workdir: str) -> None:
  """Refuses a new search in a workdir whose student was trained from another one."""
  student = os.path.join(workdir, STUDENT)
  if not files.exists(os.path.join(student, loop.GENOTYPE)):
    return
  changed = search_mismatches(config, workdir)
  if changed == []:  # the same search, rewritten: it chooses the same student
    return
  earlier = 'no search record' if changed is None else f'settings {", ".join(changed)}'
  raise ValueError(
    f'{student} holds the student of an earlier search ({earlier}); a new search could '
    'choose another network for it. Rerun with the earlier settings, use another --workdir, '
    f'or move {student} away to search again'
  )


def run_pipeline(config, workdir: str) -> loop.Summary:
  """The paper's whole job after the teacher: search, then train the best genotype.

  Everything that can refuse the training is checked before the search writes.
  """
  if config.train.genotype is not None:
    raise ValueError(
      'the pipeline trains the genotype its search finds; drop --config.train.genotype, '
      'or use --config.stage=student to train a given genotype'
    )
  loop.preflight(config, os.path.join(workdir, STUDENT), None, config.train.teacher_checkpoint)
  if search_done(config, workdir):
    logging.info(
      '%s holds this search already (a resumed pipeline): training its winner',
      os.path.join(workdir, record_lib.FILE),
    )
  else:
    check_student_free(config, workdir)
    search_lib.run_search(config, workdir)
  return train_student(config, workdir)


STAGES = {
  'search': search_lib.run_search,
  TEACHER: train_teacher,
  STUDENT: train_student,
  'pipeline': run_pipeline,
  'eval': evaluate.evaluate,
  'study': study_lib.run_study,
}


# Stages that only read a workdir, and may run beside the run that writes it.
READ_ONLY = ('eval',)


def run(config, workdir: str):
  """Runs the stage config.stage names; stages that write hold the workdir's lock."""
  if config.stage not in STAGES:
    raise ValueError(
      f'--config.stage={config.stage!r} is not available; choose one of {", ".join(STAGES)}'
    )
  if config.stage in READ_ONLY:
    return STAGES[config.stage](config, workdir)
  with lock.locked(workdir, jax.process_index()):
    return STAGES[config.stage](config, workdir)
