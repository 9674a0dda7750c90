from bswap import defaults

__doc__ = defaults.study_doc('study_400k', 400_000)


def get_config(arg=None):
  return defaults.study(400_000, arg)
