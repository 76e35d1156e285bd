"""The ``cratedigger`` command line (:mod:`cli.main`): the composition root over ``jobs``,
``webapp``, ``lab`` and ``migrations``."""
