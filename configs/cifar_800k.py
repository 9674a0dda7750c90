from bswap import defaults

__doc__ = defaults.cifar_doc('cifar_800k', 800_000)


def get_config(arg=None):
  return defaults.get(800_000, arg)
