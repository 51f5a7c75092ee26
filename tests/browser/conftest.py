"""Browser and Node tests: real clients (headless Debian Chromium through playwright-core;
the OpenFeature JS SDKs with the OFREP providers) against a real proxy fed by the real
control API and syncd.

The proxy fixtures come from ``tests/support/edgekit.py`` (imported, not copied). The
Node dependencies are installed by ``npm ci`` on first use (see
:func:`browserkit.ensure_node_modules`); without Node or Chromium these tests skip
saying what to install — except in CI, where they fail.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest
from browserkit import (
    Browser,
    Page,
    PageServer,
    build_pages,
    ensure_node_modules,
    find_chromium,
    find_node,
    output_dir,
    serve_pages,
)


@pytest.fixture(scope="session")
def node() -> str:
    """Node.js with tests/browser/js/node_modules installed from the lock file."""
    path = find_node()
    ensure_node_modules()
    return path


@pytest.fixture(scope="session")
def chromium() -> str:
    return find_chromium()


@pytest.fixture(scope="session")
def pages_dir(node: str, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The test pages, the web SDK bundled by esbuild, in a temporary folder."""
    return build_pages(node, tmp_path_factory.mktemp("pages"))


@pytest.fixture(scope="session")
async def browser(node: str, chromium: str) -> AsyncIterator[Browser]:
    running = await Browser.launch(node, chromium)
    try:
        yield running
    finally:
        await running.close()


@pytest.fixture
async def page_server(pages_dir: Path) -> AsyncIterator[PageServer]:
    server = await serve_pages(pages_dir)
    try:
        yield server
    finally:
        await server.stop()


@pytest.fixture
async def new_page(browser: Browser) -> AsyncIterator[Callable[[str], Awaitable[Page]]]:
    """Opens pages, each in a fresh browser context; closes them after the test."""
    opened: list[Page] = []

    async def open_(name: str) -> Page:
        page = await browser.open(name)
        opened.append(page)
        return page

    yield open_
    for page in opened:
        await page.close()


@pytest.fixture
def output(request: pytest.FixtureRequest) -> Path:
    """This test's output folder under tests/browser/output (screenshots)."""
    return output_dir(request.node.name)
