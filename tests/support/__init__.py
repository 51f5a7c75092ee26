"""What several test areas share: the proxy and control kits, and :func:`waiting.eventually`.

``tests/conftest.py`` registers the fixtures in :mod:`support.edgekit` through
``pytest_plugins``; test modules import helpers as ``from support.edgekit import …``.
"""
