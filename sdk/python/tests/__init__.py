"""Unit tests of the Python SDK, run in plain CPython:
``python3 -m unittest discover -s sdk/python/tests -t sdk/python``.

The generated bindings (``wit_world``, ``componentize_py_types``) exist only
inside a componentize-py build, so :mod:`tests.fakes` installs stand-ins
before any test imports ``weft``; the real bindings are exercised by the
integration tests, under ``weft up``.
"""

from . import fakes

fakes.install()
