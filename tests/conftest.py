"""Test setup: runs before any test module imports JAX work.

Four fake CPU devices let multi-device code be tested on one CPU; the option
must be set before the first JAX operation, so it lives here.
"""

import jax

jax.config.update('jax_num_cpu_devices', 4)
