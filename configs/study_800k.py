from bswap import defaults

__doc__ = defaults.study_doc('study_800k', 800_000)


def get_config(arg=None):
  return defaults.study(800_000, arg)
