from bswap import defaults

__doc__ = defaults.cifar_doc('cifar_400k', 400_000)


def get_config(arg=None):
  return defaults.get(400_000, arg)
