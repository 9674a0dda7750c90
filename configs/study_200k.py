from bswap import defaults

__doc__ = defaults.study_doc('study_200k', 200_000)


def get_config(arg=None):
  return defaults.study(200_000, arg)
