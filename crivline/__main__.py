"""``python -m crivline`` is the ``crivline`` command."""

from crivline.cli import main

raise SystemExit(main())
