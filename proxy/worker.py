"""Entry point of one worker process started by the supervisor: ``python -m proxy.worker``.

Settings come from the environment the supervisor passed down (``CRIVLINE_*``).
"""

from __future__ import annotations

import sys

from crivline import logs
from crivline.errors import CrivlineError
from crivline.settings import Settings
from proxy.main import serve


def main() -> int:
    try:
        settings = Settings.from_env()
        logs.configure("proxy", settings.log_level)
        return serve(settings)
    except CrivlineError as exc:
        print(f"crivline proxy: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
