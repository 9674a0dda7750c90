from bswap import defaults

__doc__ = defaults.cifar_doc('cifar_200k', 200_000)


def get_config(arg=None):
  return defaults.get(200_000, arg)
