"""The dashboard in a real headless Chromium against a real API process: pages load without
console errors, a progress bar moves while a job runs, a training curve is drawn."""

from __future__ import annotations

import shutil
import threading
import time
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from query_support import chunk_count, register_model, run_chunk, run_job, submit, unique
from sqlalchemy.orm import Session

from nightowl.common.config import Settings
from nightowl.common.enums import RunStatus, TaskKind
from nightowl.platform.auth import authenticate
from nightowl.platform.orm import (
    Schedule,
    TrainingEvent,
    TrainingMetric,
    TrainingRun,
    new_id,
    utcnow,
)

CHROMIUM = "/usr/bin/chromium"
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "dashboard"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync"]

pytestmark = pytest.mark.skipif(
    shutil.which(CHROMIUM) is None,
    reason=f"no Chromium at {CHROMIUM}: `apt-get install -y chromium` (.ci/run does it)")


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        yield b
        b.close()


class Page:
    """A browser tab that fails the test on any console error or uncaught exception."""

    def __init__(self, browser: Any, base: str) -> None:
        self.context = browser.new_context(viewport={"width": 1400, "height": 900})
        self.page = self.context.new_page()
        self.base = base
        self.errors: list[str] = []
        self.page.on("console", lambda m: m.type == "error" and self.errors.append(m.text))
        self.page.on("pageerror", lambda e: self.errors.append(str(e)))

    def open(self, path: str) -> Any:
        response = self.page.goto(self.base + path)
        assert response is not None and response.ok, f"{path}: {response and response.status}"
        return response

    def shot(self, name: str) -> None:
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        self.page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)

    def close(self) -> None:
        self.context.close()
        assert self.errors == [], f"console errors: {self.errors}"


@pytest.fixture
def tenant(session: Session, make_api_key: Callable[[str], str]) -> dict[str, str]:
    key = make_api_key(unique("dash"))
    tenant_id = authenticate(session, key)
    session.commit()
    return {"key": key, "id": tenant_id}


@pytest.fixture
def tab(browser: Any, api_server: str, tenant: dict[str, str]) -> Iterator[Page]:
    page = Page(browser, api_server)
    page.open("/")  # no key yet: the login form, which keeps the key out of every URL
    page.page.fill("input[name=key]", tenant["key"])
    page.page.click("button[type=submit]")
    page.page.wait_for_url(lambda url: "/ui/login" not in url)
    assert "key=" not in page.page.url
    yield page
    page.close()


def test_pages_load_and_results_page_filters_and_pages(
        tab: Page, tenant: dict[str, str], migrated: Settings, session: Session) -> None:
    name = unique("sentiment")
    register_model(session, name, metrics={"eval/accuracy": 0.9})
    texts = [f"terrible thing {i}" if i % 3 == 0 else f"fine thing {i}" for i in range(120)]
    job = submit(migrated, model=f"{name}@prod", texts=texts, tenant_id=tenant["id"],
                 chunk_size=60)
    run_job(migrated, job)
    session.add(Schedule(name=unique("nightly"), cron="0 2 * * *", timezone="Europe/Paris",
                         target="finetune", spec={}, tenant_id=tenant["id"]))
    session.commit()

    tab.open("/")
    assert tab.page.locator(f"tr[data-job='{job}'] .status").inner_text() == "completed"
    tab.shot("jobs")
    tab.page.click(f"a[href='/ui/jobs/{job}']")
    tab.page.wait_for_selector("#results")
    assert tab.page.locator("#results tbody tr").count() == 50
    tab.page.click("#next-page")
    tab.page.wait_for_selector("#first-page")
    assert tab.page.locator("#results tbody tr").first.inner_text().startswith("r50")
    tab.page.select_option("select[name=status]", "succeeded")
    tab.page.fill("input[name=label]", "negative")
    tab.page.click("form.filters button")
    tab.page.wait_for_load_state()
    labels = tab.page.locator("#results tbody tr td:nth-child(4)").all_inner_texts()
    assert len(labels) == 40 and all(t.startswith("negative") for t in labels)
    tab.shot("job-results")
    tab.open("/ui/models")
    assert f"{name}@v1" in tab.page.inner_text("#models") and "@prod" in tab.page.inner_text(
        "#models")
    tab.open("/ui/schedules")
    next_fire = tab.page.locator("#schedules td.next").first.inner_text()
    assert "02:00 CE" in next_fire  # 02:00 Paris time, CET or CEST
    tab.shot("schedules")
    tab.open("/ui/runs")


def test_progress_bar_moves_while_a_job_runs(
        tab: Page, tenant: dict[str, str], migrated: Settings, session: Session) -> None:
    name = unique("sentiment")
    register_model(session, name)
    job = submit(migrated, model=f"{name}@prod", texts=[f"review {i}" for i in range(60)],
                 tenant_id=tenant["id"], chunk_size=10)
    tab.open("/")
    bar = f"tr[data-job='{job}'] .bar"
    tab.page.wait_for_selector(bar)

    def worker() -> None:
        for n in range(chunk_count(migrated, job)):
            time.sleep(0.7)
            run_chunk(migrated, job, n)

    thread = threading.Thread(target=worker)
    thread.start()
    seen: list[int] = []
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        seen.append(int(tab.page.get_attribute(bar, "data-done") or 0))
        if len(seen) == 8:
            tab.shot("jobs-progress")
        if seen[-1] == 60:
            break
        time.sleep(0.25)
    thread.join()
    steps = sorted(set(seen))
    assert steps[-1] == 60 and len(steps) >= 4, seen
    assert seen == sorted(seen), "progress went backwards"
    width = tab.page.eval_on_selector(f"{bar} .fill", "e => e.style.width")
    assert width == "100%"
    tab.page.click(f"a[href='/ui/jobs/{job}']")
    assert tab.page.inner_text("#job-status") == "completed"


def new_run(session: Session, tenant: dict[str, str], status: RunStatus,
            hyperparams: dict[str, Any]) -> TrainingRun:
    """A sentiment fine-tune run of the tenant's on a new base model, flushed (it has its id)."""
    base = register_model(session, unique("sentiment"))
    run = TrainingRun(id=new_id("ft"), tenant_id=tenant["id"], kind=TaskKind.SENTIMENT,
                      base_version_id=base.id, status=status, hyperparams=hyperparams)
    session.add(run)
    session.flush()
    return run


def test_training_curve_is_drawn(tab: Page, tenant: dict[str, str], session: Session) -> None:
    run = new_run(session, tenant, RunStatus.RUNNING, {"lr": 5e-5, "epochs": 2})
    t0 = utcnow() - timedelta(minutes=5)
    for step in range(1, 61):
        session.add(TrainingMetric(run_id=run.id, step=step, key="train/loss",
                                   value=1.2 * 0.97 ** step, ts=t0 + timedelta(seconds=step)))
        session.add(TrainingMetric(run_id=run.id, step=step, key="lr",
                                   value=5e-5 * (1 - step / 60)))
        if step % 20 == 0:
            session.add(TrainingMetric(run_id=run.id, step=step, key="eval/loss",
                                       value=1.0 * 0.98 ** step))
            session.add(TrainingMetric(run_id=run.id, step=step, key="eval/accuracy",
                                       value=0.6 + step / 300))
    session.add(TrainingEvent(run_id=run.id, kind="started", details={"worker": "test"}))
    session.commit()

    tab.open("/ui/runs")
    tab.page.click(f"a[href='/ui/runs/{run.id}']")
    tab.page.wait_for_selector("#charts[data-drawn=true]")
    loss = tab.page.locator(".chart[data-metric=loss]")
    assert loss.get_attribute("data-series") == "eval/loss,train/loss"
    assert loss.get_attribute("data-points") == "60"
    assert tab.page.locator(".chart").count() == 3  # loss, lr, accuracy
    inked = tab.page.eval_on_selector(
        ".chart[data-metric=loss] canvas",
        """c => { const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
                  let n = 0; for (let i = 3; i < d.length; i += 4) if (d[i] > 0) n++;
                  return n; }""")
    assert inked > 500, "the loss chart's canvas is blank"
    # The run is still going: a new point shows up without a reload.
    session.add(TrainingMetric(run_id=run.id, step=61, key="train/loss", value=0.15))
    session.commit()
    # A selector, not wait_for_function: the dashboard's CSP forbids evaluating strings.
    tab.page.locator(".chart[data-metric=loss][data-points='61']").wait_for(timeout=10_000)
    tab.shot("training-curve")


def test_without_a_key_the_dashboard_asks_for_one(browser: Any, api_server: str,
                                                  tenant: dict[str, str]) -> None:
    page = Page(browser, api_server)
    try:
        page.page.goto(api_server + "/ui/models")
        assert "/ui/login" in page.page.url
        page.page.fill("input[name=key]", "nk-wrong")
        page.page.click("form.login button")
        page.page.wait_for_url("**/ui/login?**refused=1*")
        page.page.fill("input[name=key]", tenant["key"])
        page.page.click("form.login button")
        page.page.wait_for_url("**/ui/models")
        assert page.page.locator("#models").count() == 1
        page.shot("login")
    finally:
        page.context.close()
    # The 401 of the wrong key and the redirect are expected; nothing else may have failed.
    assert [e for e in page.errors if "401" not in e] == []


def test_cancelled_job_promotion_in_words_metrics_page_and_404(
        tab: Page, tenant: dict[str, str], migrated: Settings, session: Session) -> None:
    from nightowl.jobs import service as job_service
    from nightowl.platform.db import session_factory

    name = unique("sentiment")
    v1 = register_model(session, name, metrics={"eval/accuracy": 0.75})
    job = submit(migrated, model=f"{name}@prod", texts=[f"review {i}" for i in range(40)],
                 tenant_id=tenant["id"], chunk_size=10)
    run_chunk(migrated, job, 0)
    with session_factory(migrated)() as s:
        job_service.cancel_job(s, job)
    v2 = register_model(session, name, alias=None, metrics={"eval/accuracy": 0.8125})
    run = TrainingRun(id=new_id("ft"), tenant_id=tenant["id"], kind=TaskKind.SENTIMENT,
                      base_version_id=v1.id, status=RunStatus.SUCCEEDED, hyperparams={},
                      register_as=name, promote_to="prod", gate_metric="eval/accuracy",
                      result_version_id=v2.id, promotion={
                          "alias": "prod", "metric": "eval/accuracy", "promoted": True,
                          "candidate_version": v2.ref, "candidate": 0.8125,
                          "incumbent_version": v1.ref, "incumbent": 0.75})
    session.add(run)
    session.commit()

    tab.open("/")
    row = f"tr[data-job='{job}']"
    assert tab.page.inner_text(f"{row} .status") == "cancelled"
    assert tab.page.inner_text(f"{row} .done") == "10 succeeded, 30 cancelled of 40"
    assert tab.page.inner_text(f"{row} td:nth-child(3)") == f"{name}@v1"  # pinned, not @prod
    time.sleep(1.5)  # the list re-polls each second: the counts must survive a refresh
    assert tab.page.inner_text(f"{row} .done") == "10 succeeded, 30 cancelled of 40"
    tab.shot("jobs-cancelled")

    tab.open("/ui/runs")
    cell = tab.page.locator("#runs tr", has_text=run.id).locator("td.promotion").inner_text()
    assert cell == (f"promoted to @prod: eval/accuracy 0.8125 beats 0.7500 of {name}@v1")
    tab.open(f"/ui/runs/{run.id}")
    assert "promoted to @prod" in tab.page.inner_text("#promotion")

    tab.page.click("nav >> text=Metrics")
    tab.page.wait_for_selector("#metrics")
    assert tab.page.url.endswith("/ui/metrics")
    assert "nightowl_jobs" in tab.page.inner_text("#metrics")
    tab.shot("metrics")

    response = tab.page.goto(tab.base + "/ui/jobs/job_doesnotexist")
    assert response is not None and response.status == 404
    assert "Nothing lives at" in tab.page.inner_text("#not-found")
    assert tab.page.locator("nav a").count() >= 4  # a way back, not raw JSON
    tab.shot("not-found")
    tab.errors = [e for e in tab.errors if "404" not in e]  # the page's own status


def test_api_docs_render_without_internet(browser: Any, api_server: str) -> None:
    page = Page(browser, api_server)
    requested: list[str] = []
    # Anything not from this server is refused, as it would be with no internet.
    page.page.route("**/*", lambda route: (requested.append(route.request.url),
                                           route.continue_() if route.request.url.startswith(
                                               api_server) else route.abort()))
    try:
        page.open("/docs")
        page.page.wait_for_selector(".opblock-tag", timeout=20_000)
        assert page.page.locator(".opblock").count() > 20  # every route, drawn
        assert "/v1/jobs" in page.page.inner_text("#swagger-ui")
        page.shot("docs")
    finally:
        page.close()
    assert [u for u in requested if not u.startswith(api_server)] == []
