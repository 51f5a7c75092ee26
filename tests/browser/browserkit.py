"""Helpers for the browser tests: finding Node and Chromium, the Node dependencies, a
Playwright driver process, a page server on another origin, and the shop the tests
evaluate.

- :func:`unavailable`: a missing tool skips with what to install — or fails, in CI
  (``CI`` set to a true value, as ``.ci/run`` does), where these tests must run.
- :func:`ensure_node_modules`: ``npm ci`` in ``tests/browser/js`` when ``node_modules``
  is missing or was installed from another lock file (a stamp records the lock's hash);
  otherwise nothing, so repeated runs need no network. A file lock keeps two test runs
  in the same tree from installing at once.
- :class:`Browser` / :class:`Page`: ``js/driver.mjs`` (playwright-core driving Debian's
  Chromium) behind a line-of-JSON protocol; every call has a timeout.
- :func:`serve_pages`: the built test pages over HTTP on their own port — another
  origin than the proxy's, so the browser applies CORS for real.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import hashlib
import itertools
import json
import os
import re
import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

import orjson
import pytest
from aiohttp import web
from support.edgekit import Central, RunningProxy, StartProxy
from support.waiting import eventually

from crivline.embedded import free_port

HERE = Path(__file__).resolve().parent
JS = HERE / "js"
OUTPUT = HERE / "output"
CHROMIUM = os.environ.get("CRIVLINE_CHROMIUM", "/usr/bin/chromium")
NODE_MAJOR = 20
INSTALL_HINT = "run `make browser-deps` (apt-get install chromium; npm ci in tests/browser/js)"


def required() -> bool:
    """In CI the browser tests must run: a missing tool is a failure, not a skip."""
    return os.environ.get("CI", "").strip().lower() in ("1", "true", "yes")


def unavailable(reason: str) -> NoReturn:
    message = f"{reason}; {INSTALL_HINT}"
    if required():
        pytest.fail(f"browser tests cannot run in CI: {message}", pytrace=False)
    pytest.skip(message)


def find_node() -> str:
    node = shutil.which("node")
    if node is None:
        unavailable(f"Node.js {NODE_MAJOR}+ is not installed (no `node` on PATH)")
    version = subprocess.run(
        [node, "--version"], capture_output=True, text=True, timeout=30, check=False
    ).stdout.strip()
    match = re.match(r"v(\d+)\.", version)
    if match is None or int(match.group(1)) < NODE_MAJOR:
        unavailable(f"Node.js {NODE_MAJOR}+ is needed, found {version or 'nothing'}")
    return node


def find_chromium() -> str:
    if not os.access(CHROMIUM, os.X_OK):
        unavailable(f"Chromium is not installed ({CHROMIUM} is missing)")
    return CHROMIUM


def _lock_digest() -> str:
    digest = hashlib.sha256()
    for name in ("package.json", "package-lock.json"):
        digest.update((JS / name).read_bytes())
    return digest.hexdigest()


@contextlib.contextmanager
def _install_lock() -> Iterator[None]:
    with (JS / ".install.lock").open("w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def ensure_node_modules() -> None:
    """``npm ci`` unless node_modules was installed from this very lock file."""
    npm = shutil.which("npm")
    stamp = JS / "node_modules" / ".crivline-lock-sha256"
    with _install_lock():
        wanted = _lock_digest()
        if stamp.is_file() and stamp.read_text().strip() == wanted:
            return
        if npm is None:
            unavailable("npm is not installed, and tests/browser/js/node_modules is missing")
        result = subprocess.run(
            [npm, "ci", "--no-audit", "--no-fund", "--prefer-offline"],
            cwd=JS,
            capture_output=True,
            text=True,
            timeout=600,
            check=False,
        )
        if result.returncode != 0:
            tail = (result.stderr or result.stdout)[-2000:]
            unavailable(f"`npm ci` in {JS} failed ({result.returncode}): {tail}")
        stamp.write_text(wanted + "\n")


def build_pages(node: str, outdir: Path) -> Path:
    """Bundle the web SDK page with esbuild and copy the pages into ``outdir``."""
    result = subprocess.run(
        [node, str(JS / "build.mjs"), str(outdir)],
        cwd=JS,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, f"building the test pages failed:\n{result.stderr}"
    assert (outdir / "ofrep.bundle.js").is_file()
    return outdir


def output_dir(test_name: str) -> Path:
    """``tests/browser/output/<test>``: screenshots and logs a person can look at."""
    path = OUTPUT / re.sub(r"[^A-Za-z0-9_.-]+", "_", test_name)
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)
    return path


# -- the driver -------------------------------------------------------------------------------


class DriverError(AssertionError):
    pass


class Browser:
    """One ``node driver.mjs`` process holding one headless Chromium."""

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self._process = process
        self._ids = itertools.count(1)
        self._pending: dict[int, asyncio.Future[Any]] = {}
        self._stderr = bytearray()
        self._ready: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._pending[0] = self._ready
        self._reader = asyncio.create_task(self._read())
        self._errors = asyncio.create_task(self._read_stderr())
        self.version = ""

    @classmethod
    async def launch(cls, node: str, chromium: str, within: float = 30.0) -> Browser:
        process = await asyncio.create_subprocess_exec(
            node,
            str(JS / "driver.mjs"),
            chromium,
            cwd=JS,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            limit=64 * 1024 * 1024,
        )
        browser = cls(process)
        try:
            hello = await asyncio.wait_for(asyncio.shield(browser._ready), within)
        except BaseException:
            await browser.close()
            raise
        browser.version = str(hello["browser"])
        return browser

    async def _read(self) -> None:
        assert self._process.stdout is not None
        while line := await self._process.stdout.readline():
            message = json.loads(line)
            future = self._pending.pop(message.get("id"), None)
            if future is None or future.done():
                continue
            if message.get("ok"):
                future.set_result(message.get("value"))
            else:
                future.set_exception(DriverError(message.get("error")))
        await self._process.wait()
        error = DriverError(
            f"the browser driver exited ({self._process.returncode}): "
            f"{self._stderr.decode(errors='replace')[-3000:]}"
        )
        for future in self._pending.values():
            if not future.done():
                future.set_exception(error)
        self._pending.clear()

    async def _read_stderr(self) -> None:
        assert self._process.stderr is not None
        while chunk := await self._process.stderr.read(65536):
            self._stderr += chunk
            del self._stderr[:-65536]

    async def call(self, op: str, within: float = 15.0, **args: Any) -> Any:
        if self._process.returncode is not None:
            raise DriverError(f"the browser driver is gone: {self._stderr.decode()[-2000:]}")
        ident = next(self._ids)
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._pending[ident] = future
        assert self._process.stdin is not None
        self._process.stdin.write(orjson.dumps({"id": ident, "op": op, **args}) + b"\n")
        await self._process.stdin.drain()
        try:
            return await asyncio.wait_for(future, within)
        except TimeoutError:
            raise DriverError(f"the browser driver did not answer {op} within {within}s") from None
        finally:
            self._pending.pop(ident, None)

    async def open(self, name: str) -> Page:
        await self.call("open", page=name)
        return Page(self, name)

    async def close(self) -> None:
        if self._process.returncode is None and self._process.stdin is not None:
            self._process.stdin.close()
            try:
                await asyncio.wait_for(self._process.wait(), 10)
            except TimeoutError:
                self._process.kill()
                await self._process.wait()
        for task in (self._reader, self._errors):
            with contextlib.suppress(Exception):
                await asyncio.wait_for(task, 5)


@dataclass
class Page:
    browser: Browser
    name: str

    async def goto(self, url: str) -> int | None:
        status = await self.browser.call("goto", page=self.name, url=url, timeoutMs=10_000)
        return None if status is None else int(status)

    async def eval(self, expr: str, within: float = 15.0) -> Any:
        return await self.browser.call("eval", within, page=self.name, expr=expr)

    async def wait_for(self, expr: str, within: float = 5.0, what: str | None = None) -> Any:
        """The value of ``expr`` once it is truthy in the page (polled every 20 ms)."""
        try:
            return await self.browser.call(
                "waitFor", within + 5, page=self.name, expr=expr, timeoutMs=int(within * 1000)
            )
        except DriverError as exc:
            console = await self.console()
            raise AssertionError(
                f"timed out after {within}s waiting for {what or expr}: {exc}\n"
                f"page console: {console[-20:]}"
            ) from None

    async def fill(self, selector: str, value: str) -> None:
        await self.browser.call("fill", page=self.name, selector=selector, value=value)

    async def click(self, selector: str) -> None:
        await self.browser.call("click", page=self.name, selector=selector)

    async def screenshot(self, path: Path) -> Path:
        await self.browser.call("screenshot", page=self.name, path=str(path), fullPage=True)
        return path

    async def network(self) -> list[dict[str, Any]]:
        return list(await self.browser.call("network", page=self.name))

    async def console(self) -> list[dict[str, Any]]:
        return list(await self.browser.call("console", page=self.name))

    async def close(self) -> None:
        await self.browser.call("close", page=self.name)


# -- the page server --------------------------------------------------------------------------


@dataclass
class PageServer:
    url: str
    runner: web.AppRunner

    async def stop(self) -> None:
        await self.runner.cleanup()


async def serve_pages(directory: Path) -> PageServer:
    app = web.Application()
    app.router.add_static("/", directory)
    runner = web.AppRunner(app, handle_signals=False)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    return PageServer(f"http://127.0.0.1:{port}", runner)


# -- the shop: flags of every kind, created through the control API --------------------------

FLAGS: list[dict[str, Any]] = [
    {"key": "new-checkout", "type": "boolean", "variants": {"on": True, "off": False}},
    {
        "key": "banner-text",
        "type": "string",
        "variants": {"welcome": "Welcome back", "sale": "Summer sale", "beta": "Beta"},
    },
    {"key": "max-items", "type": "integer", "variants": {"few": 3, "many": 25}},
    {"key": "discount-rate", "type": "float", "variants": {"none": 0.0, "some": 0.15}},
    {
        "key": "theme",
        "type": "object",
        "variants": {"light": {"bg": "#ffffff", "sizes": [1, 2]}, "dark": {"bg": "#101010"}},
    },
    {"key": "old-banner", "type": "boolean", "variants": {"on": True, "off": False}},
    {"key": "bucket", "type": "string", "variants": {"a": "bucket-a", "b": "bucket-b"}},
]

STATES: dict[str, dict[str, Any]] = {
    "new-checkout": {"state": "ENABLED", "defaultVariant": "on"},
    "banner-text": {
        "state": "ENABLED",
        "defaultVariant": "welcome",
        "targeting": {"if": [{"ends_with": [{"var": "email"}, "@beta.example"]}, "beta", None]},
    },
    "max-items": {
        "state": "ENABLED",
        "defaultVariant": "few",
        "targeting": {"if": [{"==": [{"var": "plan"}, "pro"]}, "many", None]},
    },
    "discount-rate": {"state": "ENABLED", "defaultVariant": "some"},
    "theme": {"state": "ENABLED", "defaultVariant": "light"},
    "old-banner": {"state": "DISABLED", "defaultVariant": "on"},
    "bucket": {
        "state": "ENABLED",
        "defaultVariant": "a",
        "targeting": {"fractional": [["a", 50], ["b", 50]]},
    },
}

JS_TYPES = {"boolean": "boolean", "string": "string", "integer": "number", "float": "number"}
DEFAULTS: dict[str, Any] = {
    "boolean": False,
    "string": "code-default",
    "integer": -1,
    "float": -1.5,
    "object": {"from": "code"},
}
MISSING = {"key": "no-such-flag", "type": "string"}


def sdk_flags() -> list[dict[str, Any]]:
    """What a JS client asks for: key, JS type, code default (plus a missing flag)."""
    return [
        {
            "key": f["key"],
            "type": JS_TYPES.get(f["type"], f["type"]),
            "default": DEFAULTS[f["type"]],
            "kind": f["type"],
        }
        for f in [*FLAGS, MISSING]
    ]


@dataclass
class Shop:
    proxy: RunningProxy
    client_key: str
    server_key: str
    environment: str

    async def flag_set(self, version: int | None = None) -> dict[str, Any]:
        """The flag set the proxy serves (at ``version`` or newer)."""

        async def served() -> dict[str, Any] | None:
            response = await self.proxy.get(
                "/sdk/v1/flags", headers={"Authorization": f"Bearer {self.server_key}"}
            )
            if response.status != 200:
                return None
            if version is not None and int(response.headers["Crivline-Version"]) < version:
                return None
            doc: dict[str, Any] = orjson.loads(await response.read())
            return doc if len(doc.get("flags", {})) >= len(FLAGS) else None

        found: dict[str, Any] = await eventually(served, within=10, what="the shop's flags")
        return found


async def open_shop(central: Central, start_proxy: StartProxy, **settings: Any) -> Shop:
    """Project ``shop`` with environment ``prod``: every flag, a client and a server key,
    and a proxy that serves them."""
    await central.ok("POST", "/projects", {"key": "shop", "name": "Shop"})
    await central.ok("POST", "/projects/shop/environments", {"key": "prod"})
    for definition in FLAGS:
        first = next(iter(definition["variants"]))
        await central.ok("POST", "/projects/shop/flags", {**definition, "defaultVariant": first})
        await central.set_state("shop", definition["key"], "prod", **STATES[definition["key"]])
    server, _ = await central.create_key("shop", "prod", "server")
    client, _ = await central.create_key("shop", "prod", "client")
    proxy = await start_proxy(**settings)
    environment = await central.environment_id("shop", "prod")
    shop = Shop(proxy, client, server, environment)
    # Settled: the proxy serves the version of the last write (the keys), so no change
    # from the set-up arrives later and gets counted as one of the test's.
    version = await central.db.fetchval(
        "SELECT version FROM environments WHERE id = $1::uuid", environment
    )
    await proxy.loaded(environment, int(version))
    await shop.flag_set(int(version))
    return shop


def expected_details(
    compiled: Any, flag: dict[str, Any], context: dict[str, Any]
) -> dict[str, Any]:
    """What an OpenFeature SDK should report for ``flag``, from our own evaluator."""
    ours = compiled.evaluate(flag["key"], context)
    if ours.error_code is not None:
        return {"value": flag["default"], "errorCode": ours.error_code.value}
    return {
        "value": ours.value if ours.value is not None else flag["default"],
        "variant": ours.variant,
        "reason": ours.reason.value,
        "errorCode": None,
        "codeDefault": ours.value is None,  # OFREP answers without a value (ADR-0006)
    }


def since(t0: float) -> float:
    return time.time() - t0
