"""The web dashboard (``buquet serve``): route tests with Starlette's TestClient on an
in-memory queue, and real-browser tests (Debian's Chromium driven by Selenium) against
a uvicorn server on a SeaweedFS-backed queue.

Browser tests skip when Chromium/chromedriver are missing — except when env ``CI`` is
set, where they fail with a message saying what to install.
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import socket
import threading
import time
import warnings
from datetime import timedelta
from pathlib import Path
from typing import Any, Callable

import pytest

pytest.importorskip("starlette")
with warnings.catch_warnings():  # starlette 1.x prefers httpx2; httpx (the dev extra) works
    warnings.simplefilter("ignore")
    from starlette.testclient import TestClient  # noqa: E402

from buquet import MemoryStore, Queue, Worker, connect  # noqa: E402
from buquet._registry import WorkerRegistration  # noqa: E402
from buquet.dashboard import create_app  # noqa: E402
from buquet.models import TaskStatus  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
TRACEBACK = (
    "Traceback (most recent call last):\n"
    '  File "billing.py", line 12, in charge\n'
    "    raise ValueError('card declined')\n"
    "ValueError: card declined\n"
)


# --------------------------------------------------------------------- data
async def _claim(q: Queue, task_type: str, input: Any, **kw: Any) -> Any:
    """Submit a task and claim it through the protocol as worker ``worker-a``."""
    task = await q.submit(task_type, input, **kw)
    now = await q.time()
    marker = next(m for m in await q.protocol.due_markers(task.shard, now, 1000) if m.task_id == task.id)
    lease = await q.protocol.claim(marker, "worker-a", 300, now)
    assert not hasattr(lease, "reason"), lease
    return lease


async def populate(q: Queue) -> dict[str, str]:
    """Tasks in every state, a schedule that ran once, a registered worker.
    Returns ids by state name."""
    ids: dict[str, str] = {}
    ids["pending"] = (await q.submit("send_email", {"to": "ada@example.com"})).id
    later = await q.time() + timedelta(hours=2)
    ids["scheduled"] = (await q.submit("build_report", {"kind": "weekly"}, schedule_at=later)).id

    lease = await _claim(q, "resize_image", {"image": "cat.png", "width": 640})
    await q.protocol.report_progress(lease, {"percent": 40, "current": 4, "total": 10, "message": "resizing"})
    ids["running"] = lease.task.id

    lease = await _claim(q, "send_email", {"to": "grace@example.com"})
    await q.store.delete_many(await q.protocol.complete(lease, {"sent": True, "message_id": "m-1"}))
    ids["completed"] = lease.task.id

    lease = await _claim(q, "charge_card", {"amount": 42}, max_retries=0)
    await q.store.delete_many(await q.protocol.fail(lease, "ValueError: card declined", retryable=False,
                                                    traceback=TRACEBACK))
    ids["failed"] = lease.task.id

    lease = await _claim(q, "send_email", {"to": "old@example.com"})
    await q.store.delete_many(await q.protocol.complete(lease, {"sent": True}))
    await q.archive(lease.task.id)
    ids["archived"] = lease.task.id

    ids["cancelled"] = (await q.cancel((await q.submit("send_email", {"to": "x@example.com"})).id)).id
    ids["to_cancel"] = (await q.submit("send_email", {"to": "cancel-me@example.com"})).id

    big = {"blob": "x" * 2000}
    ids["payload"] = (await q.submit("ingest", big, use_payload_refs=True, payload_ref_threshold_bytes=100)).id

    await q.create_schedule("nightly-report", "build_report", {"kind": "daily"}, "30 2 * * *",
                            timezone="Europe/London")
    ids["triggered"] = (await q.trigger_schedule("nightly-report")).id

    worker = Worker(q, "worker-a", q.shards)
    worker.task("resize_image")(lambda input: None)
    worker.stats.update({"claimed": 5, "completed": 3, "failed": 1})
    await WorkerRegistration(worker, 10.0).write()
    return ids


@pytest.fixture
async def mem() -> tuple[Queue, dict[str, str]]:
    q = await connect(store=MemoryStore())
    return q, await populate(q)


def client(q: Queue, **kw: Any) -> TestClient:
    return TestClient(create_app(q, **kw), follow_redirects=False)


def csrf_of(html: str) -> str:
    m = re.search(r'name="csrf" value="([^"]+)"', html)
    assert m, "no CSRF token in the page"
    return m.group(1)


# --------------------------------------------------------------- route tests
async def test_pages_render_with_counts_and_request_cost(mem: tuple[Queue, dict[str, str]]) -> None:
    q, ids = mem
    with client(q) as c:
        r = c.get("/")
        assert r.status_code == 200, r.text
        assert 'id="pending-count">' in r.text and "read-only" in r.text
        assert re.search(r'id="cost" data-requests="(\d+)"', r.text)
        assert "resize_image" in r.text or "send_email" in r.text
        tasks = c.get("/tasks?limit=200")
        assert tasks.status_code == 200
        for name, tid in ids.items():
            assert tid in tasks.text, name
        assert c.get("/schedules").status_code == 200
        assert "nightly-report" in c.get("/schedules").text and "Europe/London" in c.get("/schedules").text
        w = c.get("/workers")
        assert "worker-a" in w.text and "alive" in w.text


async def test_task_page_shows_history_traceback_progress_and_payload_on_demand(
        mem: tuple[Queue, dict[str, str]]) -> None:
    q, ids = mem
    with client(q) as c:
        failed = c.get(f"/tasks/{ids['failed']}").text
        assert "card declined" in failed and "Traceback (most recent call last)" in failed
        running = c.get(f"/tasks/{ids['running']}").text
        assert 'id="progress"' in running and "resizing" in running
        page = c.get(f"/tasks/{ids['payload']}").text
        assert "load input" in page and "xxxxxxxxxx" not in page
        body = c.get(f"/tasks/{ids['payload']}/input").json()
        assert body == {"input": {"blob": "x" * 2000}}
        assert c.get(f"/tasks/{ids['completed']}").text.count("message_id") == 1
        assert c.get("/tasks/0193a4f2-7c1e-7d2a-9b3c-4d5e6f708192").status_code == 404


async def test_task_list_pages_newest_first_and_filters(mem: tuple[Queue, dict[str, str]]) -> None:
    q, ids = mem
    with client(q) as c:
        seen: list[str] = []
        url = "/tasks?limit=3"
        pages = 0
        while url:
            r = c.get(url)
            assert r.status_code == 200
            rows = re.findall(r'data-task-id="([^"]+)"', r.text)
            assert len(rows) <= 3
            seen += rows
            m = re.search(r'href="([^"]+)" id="older"', r.text)
            url = m.group(1).replace("&amp;", "&") if m else ""
            pages += 1
        assert pages >= 4
        assert len(seen) == len(set(seen)) == len(set(ids.values()))
        assert seen == sorted(seen, reverse=True)  # UUIDv7: newest first

        failed = c.get("/tasks?status=failed").text
        assert re.findall(r'data-task-id="([^"]+)"', failed) == [ids["failed"]]
        emails = re.findall(r'data-status="(\w+)"', c.get("/tasks?type=send_email&status=pending").text)
        assert emails == ["pending", "pending"]
        assert ids["pending"] in c.get("/tasks?since=1h").text
        assert 'data-task-id' not in c.get("/tasks?until=1h").text  # nothing older than an hour
        shard = q.shard_of(ids["failed"])
        assert ids["failed"] in c.get(f"/tasks?shard={shard}").text


async def test_list_page_reads_only_what_it_shows(mem: tuple[Queue, dict[str, str]]) -> None:
    q, ids = mem
    with client(q) as c:
        r = c.get("/tasks?limit=2")
        cost = int(re.search(r'id="cost" data-requests="(\d+)"', r.text).group(1))
        # one LIST per shard, two GETs
        assert cost == q.shard_count + 2, r.text[-400:]
        r = c.get(f"/tasks/{ids['failed']}")
        assert int(re.search(r'data-requests="(\d+)"', r.text).group(1)) == 1


async def test_stored_text_is_escaped() -> None:
    q = await connect(store=MemoryStore())
    task = await q.submit("send_email", {"to": "<script>alert(1)</script>"})
    with client(q) as c:
        page = c.get(f"/tasks/{task.id}").text
        assert "<script>alert(1)" not in page and "&lt;script&gt;alert(1)" in page
        assert "<b>x" not in c.get("/tasks?msg=<b>x</b>").text


@pytest.mark.parametrize("query,param", [
    ("status=bogus", "status"), ("limit=0", "limit"), ("limit=abc", "limit"), ("limit=500", "limit"),
    ("type=bad%20type", "type"), ("shard=zz", "shard"), ("since=yesterday", "since"), ("until=3x", "until"),
    ("before=not-a-uuid", "before"),
])
async def test_bad_query_parameters_are_400_naming_the_parameter(query: str, param: str) -> None:
    q = await connect(store=MemoryStore())
    with client(q) as c:
        r = c.get(f"/tasks?{query}")
        assert r.status_code == 400
        assert f'data-param="{param}"' in r.text and f"&#39;{param}&#39;" in r.text
    with client(q) as c:
        assert c.get("/tasks/nope").status_code == 400


async def test_read_only_server_refuses_every_action_with_403(mem: tuple[Queue, dict[str, str]]) -> None:
    q, ids = mem
    with client(q) as c:
        page = c.get(f"/tasks/{ids['pending']}").text
        assert 'action="/tasks/' not in page  # no action buttons
        for verb in ("cancel", "retry", "archive", "delete"):
            assert c.post(f"/tasks/{ids['pending']}/{verb}", data={"csrf": "x"}).status_code == 403
        for verb in ("enable", "disable", "trigger"):
            assert c.post(f"/schedules/nightly-report/{verb}", data={"csrf": "x"}).status_code == 403
    assert (await q.get(ids["pending"])).status == TaskStatus.Pending


async def test_actions_need_the_csrf_token_and_same_origin(mem: tuple[Queue, dict[str, str]]) -> None:
    q, ids = mem
    with client(q, allow_actions=True) as c:
        page = c.get(f"/tasks/{ids['to_cancel']}").text
        token = csrf_of(page)
        assert c.post(f"/tasks/{ids['to_cancel']}/cancel", data={}).status_code == 403
        assert c.post(f"/tasks/{ids['to_cancel']}/cancel", data={"csrf": "wrong"}).status_code == 403
        evil = c.post(f"/tasks/{ids['to_cancel']}/cancel", data={"csrf": token},
                      headers={"Origin": "http://evil.example"})
        assert evil.status_code == 403
        assert (await q.get(ids["to_cancel"])).status == TaskStatus.Pending
        ok = c.post(f"/tasks/{ids['to_cancel']}/cancel", data={"csrf": token},
                    headers={"Origin": "http://testserver"})
        assert ok.status_code == 303 and ok.headers["location"].startswith(f"/tasks/{ids['to_cancel']}?msg=")
        assert (await q.get(ids["to_cancel"])).status == TaskStatus.Cancelled

        # a state the action does not allow: back to the page with the error, nothing changed
        r = c.post(f"/tasks/{ids['running']}/archive", data={"csrf": token})
        assert r.status_code == 303 and "error=" in r.headers["location"]
        assert "only completed or failed" in c.get(r.headers["location"]).text

        assert c.post(f"/tasks/{ids['running']}/request-cancel", data={"csrf": token}).status_code == 303
        assert (await q.get(ids["running"])).cancel_requested is True
        assert 'id="action-request-cancel"' not in c.get(f"/tasks/{ids['running']}").text  # asked once

        assert c.post(f"/tasks/{ids['failed']}/retry", data={"csrf": token}).status_code == 303
        assert (await q.get(ids["failed"])).status == TaskStatus.Pending
        assert c.post(f"/tasks/{ids['completed']}/archive", data={"csrf": token}).status_code == 303
        assert (await q.get(ids["completed"])).status == TaskStatus.Archived
        r = c.post(f"/tasks/{ids['archived']}/delete", data={"csrf": token})
        assert r.status_code == 303 and r.headers["location"].startswith("/tasks?")
        assert await q.get(ids["archived"]) is None

        assert c.post("/schedules/nightly-report/disable", data={"csrf": token}).status_code == 303
        assert (await q.get_schedule("nightly-report")).enabled is False
        assert c.post("/schedules/nightly-report/enable", data={"csrf": token}).status_code == 303
        assert (await q.get_schedule("nightly-report")).enabled is True
        r = c.post("/schedules/nightly-report/trigger", data={"csrf": token})
        assert r.status_code == 303 and "triggered" in c.get(r.headers["location"]).text
        assert c.post("/schedules/nope/trigger", data={"csrf": token}).status_code == 404
        assert c.post(f"/tasks/{ids['pending']}/explode", data={"csrf": token}).status_code == 404


async def test_throughput_rates_come_from_successive_registrations() -> None:
    from datetime import datetime, timezone
    from types import SimpleNamespace

    from buquet.dashboard.chart import Throughput, svg

    t0 = datetime(2026, 12, 1, 12, 0, tzinfo=timezone.utc)

    def w(seen_s: float, done: int, alive: bool = True, started: datetime = t0) -> Any:
        return SimpleNamespace(worker_id="w", started_at=started, last_seen_at=t0 + timedelta(seconds=seen_s),
                               counters={"completed": done, "failed": 0, "claimed": 999}, alive=alive)

    tp = Throughput(min_gap_seconds=1.0)
    tp.add(t0 + timedelta(seconds=10), [w(10, 50)])          # 50 tasks in its first 10 s: 5/s
    tp.add(t0 + timedelta(seconds=15), [w(10, 50)])          # no new registration: rate kept
    tp.add(t0 + timedelta(seconds=20), [w(20, 150)])         # 100 more in 10 s: 10/s
    tp.add(t0 + timedelta(seconds=30), [w(20, 150, alive=False)])
    assert [round(p.per_second, 3) for p in tp.points()] == [5.0, 5.0, 10.0, 0.0]
    assert "<polyline" in svg(tp.points()) and "throughput-empty" in svg(tp.points()[:1])


def test_serve_and_dashboard_commands() -> None:
    from click.testing import CliRunner

    from buquet.cli import cli

    for name in ("serve", "dashboard"):
        result = CliRunner().invoke(cli, [name, "--help"])
        assert result.exit_code == 0, result.output
        assert "--allow-actions" in result.output and "--port" in result.output
    bad = CliRunner().invoke(cli, ["serve", "--port", "70000"])
    assert bad.exit_code == 2 and "--port" in bad.output


# ------------------------------------------------------------ browser tests
def _browser_tools() -> tuple[str, str]:
    """Paths of Chromium and chromedriver; skip (locally) or fail (env CI) without them."""
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    if chromium and driver:
        return chromium, driver
    msg = ("the dashboard's browser tests need Debian's Chromium and its driver on PATH "
           "(apt-get install chromium chromium-driver); missing: "
           + ", ".join(n for n, p in (("chromium", chromium), ("chromedriver", driver)) if not p))
    if os.environ.get("CI"):
        pytest.fail(msg)
    pytest.skip(msg)


@pytest.fixture
def chrome(monkeypatch: pytest.MonkeyPatch) -> Any:
    """A headless Chromium driven by Selenium; selenium-manager never downloads anything
    (browser and driver paths are given, and it is told to stay offline)."""
    chromium, driver_path = _browser_tools()
    pytest.importorskip("selenium")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    monkeypatch.setenv("SE_OFFLINE", "true")
    monkeypatch.setenv("SE_AVOID_STATS", "true")
    opts = webdriver.ChromeOptions()
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1280,900",
                "--force-device-scale-factor=1", "--hide-scrollbars"):
        opts.add_argument(arg)
    opts.binary_location = chromium
    driver = webdriver.Chrome(options=opts, service=Service(executable_path=driver_path))
    driver.set_page_load_timeout(60)
    try:
        yield driver
    finally:
        driver.quit()


class Server:
    """uvicorn serving a dashboard app in a thread, on a free loopback port."""

    def __init__(self, app: Any) -> None:
        import uvicorn

        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning",
                                                    lifespan="on"))
        self.thread = threading.Thread(target=self.server.run, name="dashboard", daemon=True)
        self.url = f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> "Server":
        self.thread.start()
        deadline = time.monotonic() + 60
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the dashboard server did not start")
            time.sleep(0.02)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(30)


async def eventually(check: Callable[[], Any], what: str, timeout: float = 15.0) -> Any:
    """Poll the async ``check`` until it returns something truthy; fail after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while True:
        value = await check()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout} s waiting for {what}")
        await asyncio.sleep(0.05)


def _screenshot(driver: Any, name: str, height: int | None = None) -> None:
    """Save ``docs/<name>`` when env BUQUET_SCREENSHOTS=1 (full page height)."""
    if os.environ.get("BUQUET_SCREENSHOTS") != "1":
        return
    full = height or driver.execute_script("return document.documentElement.scrollHeight")
    driver.set_window_size(1280, max(600, min(int(full) + 140, 2400)))
    driver.save_screenshot(str(ROOT / "docs" / name))
    driver.set_window_size(1280, 900)


class BackgroundWorker:
    """A real Worker (own thread, own event loop, own S3 connection) running
    ``thumbnail`` tasks, so the overview has live throughput to draw (screenshots)."""

    def __init__(self, endpoint: str, bucket: str) -> None:
        self.endpoint, self.bucket = endpoint, bucket
        self.ready = threading.Event()
        self.loop: asyncio.AbstractEventLoop | None = None
        self.worker: Worker | None = None
        self.thread = threading.Thread(target=lambda: asyncio.run(self._main()), daemon=True)

    async def _main(self) -> None:
        from buquet import WorkerRunOptions

        q = await connect(endpoint=self.endpoint, bucket=self.bucket, region="us-east-1")
        self.loop = asyncio.get_running_loop()
        self.worker = Worker(q, "worker-b", q.shards)

        @self.worker.task("thumbnail")
        async def thumbnail(input: Any) -> Any:
            await asyncio.sleep(0.02 + (input["n"] % 7) * 0.01)
            return {"ok": input["n"]}

        self.ready.set()
        async with q:
            await self.worker.run(WorkerRunOptions(max_concurrency=4, heartbeat_interval_s=1.0, poll_interval_ms=100,
                                                   max_poll_interval_ms=500, shutdown_grace_seconds=5))

    def __enter__(self) -> "BackgroundWorker":
        self.thread.start()
        assert self.ready.wait(30), "the background worker did not start"
        return self

    def __exit__(self, *exc: object) -> None:
        assert self.loop is not None and self.worker is not None
        self.loop.call_soon_threadsafe(self.worker.stop)
        self.thread.join(30)


@pytest.mark.s3
async def test_browser_pages_and_actions_on_seaweedfs(s3_endpoint: str, s3_bucket: str, chrome: Any) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import Select, WebDriverWait

    q = await connect(endpoint=s3_endpoint, bucket=s3_bucket, region="us-east-1")
    screenshots = os.environ.get("BUQUET_SCREENSHOTS") == "1"
    if screenshots:  # enough work for the throughput chart to show a curve (older than the rest)
        await q.submit_many([("thumbnail", {"n": i}) for i in range(600)])
    ids = await populate(q)

    def factory() -> Any:
        return connect(endpoint=s3_endpoint, bucket=s3_bucket, region="us-east-1")

    d = chrome
    wait = WebDriverWait(d, 20)
    app = create_app(factory, allow_actions=True, sample_seconds=1.0 if screenshots else None)
    with Server(app) as server:
        # ---- overview
        d.get(server.url + "/")
        wait.until(ec.presence_of_element_located((By.ID, "by-shard")))
        assert len(d.find_elements(By.CSS_SELECTOR, "#by-shard tbody tr")) == q.shard_count
        assert int(d.find_element(By.ID, "running-count").text) >= 0
        assert "read-only" not in d.find_element(By.TAG_NAME, "header").text
        assert re.match(r"This page: \d+ S3 requests", d.find_element(By.ID, "cost").text)
        if screenshots:
            with BackgroundWorker(s3_endpoint, s3_bucket):
                def chart_points(drv: Any) -> bool:
                    drv.refresh()
                    lines = drv.find_elements(By.CSS_SELECTOR, "#throughput-chart polyline")
                    return bool(lines) and len(lines[0].get_attribute("points").split()) >= 12
                WebDriverWait(d, 120, poll_frequency=2).until(chart_points)
                d.find_element(By.ID, "auto-refresh")  # present on the overview
            d.refresh()
            wait.until(ec.presence_of_element_located((By.ID, "throughput-chart")))
            _screenshot(d, "dashboard-overview.png")

        # ---- task list: every task, newest first, then the status filter through the form
        d.get(server.url + "/tasks?limit=200")
        wait.until(ec.presence_of_element_located((By.ID, "task-table")))
        rows = [r.get_attribute("data-task-id") for r in d.find_elements(By.CSS_SELECTOR, "#task-table tr[data-task-id]")]
        assert set(ids.values()) <= set(rows) and rows == sorted(rows, reverse=True)
        Select(d.find_element(By.NAME, "status")).select_by_value("failed")
        d.find_element(By.CSS_SELECTOR, "#filters button[type=submit]").click()
        wait.until(ec.url_contains("status=failed"))
        rows = d.find_elements(By.CSS_SELECTOR, "#task-table tr[data-task-id]")
        assert [r.get_attribute("data-task-id") for r in rows] == [ids["failed"]]

        # ---- the failed task: error, traceback, then replay it
        rows[0].find_element(By.TAG_NAME, "a").click()
        wait.until(ec.text_to_be_present_in_element((By.ID, "task-status"), "failed"))
        assert "card declined" in d.find_element(By.ID, "last-error").text
        d.find_element(By.CSS_SELECTOR, "details.tb summary").click()
        wait.until(ec.visibility_of_element_located((By.CSS_SELECTOR, "details.tb pre")))
        assert "ValueError: card declined" in d.find_element(By.CSS_SELECTOR, "details.tb pre").text
        _screenshot(d, "dashboard-task.png")
        d.find_element(By.ID, "action-retry").click()
        wait.until(ec.text_to_be_present_in_element((By.ID, "flash"), "is now pending"))
        assert d.find_element(By.ID, "task-status").text == "pending"

        async def status_is(tid: str, status: TaskStatus) -> bool:
            t = await q.get(tid)
            return t is not None and t.status == status

        await eventually(lambda: status_is(ids["failed"], TaskStatus.Pending), "the replayed task to be pending")

        # ---- cancel a pending task
        d.get(f"{server.url}/tasks/{ids['to_cancel']}")
        wait.until(ec.element_to_be_clickable((By.ID, "action-cancel"))).click()
        wait.until(ec.text_to_be_present_in_element((By.ID, "flash"), "is now cancelled"))
        await eventually(lambda: status_is(ids["to_cancel"], TaskStatus.Cancelled), "the task to be cancelled")

        # ---- delete an archived task (confirm dialog)
        d.get(f"{server.url}/tasks/{ids['archived']}")
        wait.until(ec.element_to_be_clickable((By.ID, "action-delete"))).click()
        wait.until(ec.alert_is_present()).accept()
        wait.until(ec.text_to_be_present_in_element((By.ID, "flash"), "Deleted task"))

        async def gone() -> bool:
            return await q.get(ids["archived"]) is None

        await eventually(gone, "the archived task to be deleted")

        # ---- running task: progress; payload object loaded on demand
        d.get(f"{server.url}/tasks/{ids['running']}")
        wait.until(ec.text_to_be_present_in_element((By.ID, "progress"), "resizing"))
        d.get(f"{server.url}/tasks/{ids['payload']}")
        d.find_element(By.CSS_SELECTOR, "a.load[data-target=input-json]").click()
        wait.until(ec.text_to_be_present_in_element((By.ID, "input-json"), '"blob": "xxxx'))

        # ---- schedules: the triggered run, then disable through the button
        d.get(server.url + "/schedules")
        row = wait.until(ec.presence_of_element_located((By.CSS_SELECTOR, 'tr[data-schedule-id="nightly-report"]')))
        assert "Europe/London" in row.text and "30 2 * * *" in row.text and ids["triggered"][:13] in row.text
        d.find_element(By.ID, "schedule-disable-nightly-report").click()
        wait.until(ec.text_to_be_present_in_element((By.ID, "flash"), "disabled"))

        async def disabled() -> bool:
            s = await q.get_schedule("nightly-report")
            return s is not None and not s.enabled

        await eventually(disabled, "the schedule to be disabled")

        # ---- workers
        d.get(server.url + "/workers")
        row = wait.until(ec.presence_of_element_located((By.CSS_SELECTOR, 'tr[data-worker-id="worker-a"]')))
        assert "alive" in row.text
    await q.close()
