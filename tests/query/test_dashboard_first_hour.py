"""What a new user sees on the dashboard in a real headless Chromium: a run's one eval point
drawn on the run's own step axis, every hyperparameter the run trained with, a refused line's
reason and line number, owners by name, a cancelled job's finished share, and no nav before
logging in."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from query_support import TEST_QUEUE, register_model, run_chunk, unique
from sqlalchemy import text
from sqlalchemy.orm import Session
from test_dashboard_browser import Page, browser, new_run, tab, tenant  # noqa: F401 (fixtures)

from nightowl.common.config import Settings
from nightowl.common.enums import ErrorCode, RunStatus, TaskKind
from nightowl.jobs import service as job_service
from nightowl.jobs.inputs import ParsedLine
from nightowl.jobs.service import JobSpec, submit_job
from nightowl.platform.db import session_factory
from nightowl.platform.orm import TrainingMetric, utcnow
from nightowl.registry import versions as registry

BLUE = (37, 99, 235)  # the first series' colour in charts.js


def _pixels_of(page: Page, selector: str, rgb: tuple[int, int, int]) -> int:
    return int(page.page.eval_on_selector(selector, """(c, rgb) => {
        const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
        let n = 0;
        for (let i = 0; i < d.length; i += 4)
          if (Math.abs(d[i] - rgb[0]) < 40 && Math.abs(d[i + 1] - rgb[1]) < 40
              && Math.abs(d[i + 2] - rgb[2]) < 40 && d[i + 3] > 128) n++;
        return n; }""", list(rgb)))


def test_a_single_eval_point_is_drawn_on_the_runs_steps_with_every_hyperparameter(
        tab: Page, tenant: dict[str, str], session: Session) -> None:  # noqa: F811
    run = new_run(session, tenant, RunStatus.SUCCEEDED, {"epochs": 2.0, "lora": {"r": 4}})
    t0 = utcnow() - timedelta(minutes=5)
    for step in range(1, 51):
        session.add(TrainingMetric(run_id=run.id, step=step, key="train/loss",
                                   value=1.0 * 0.97 ** step, ts=t0 + timedelta(seconds=step)))
    # The default: one evaluation, at the end.
    for key, value in (("eval/accuracy", 0.8), ("eval/f1", 0.75), ("eval/loss", 0.4)):
        session.add(TrainingMetric(run_id=run.id, step=50, key=key, value=value))
    session.commit()

    tab.open(f"/ui/runs/{run.id}")
    tab.page.wait_for_selector("#charts[data-drawn=true]")
    for metric in ("accuracy", "f1", "loss"):
        box = tab.page.locator(f".chart[data-metric={metric}][data-xmax]")
        box.wait_for()
        assert (box.get_attribute("data-xmin"), box.get_attribute("data-xmax")) == ("1", "50")
    # The lone accuracy and f1 points are on the canvas (in the series' colour).
    assert _pixels_of(tab, ".chart[data-metric=accuracy] canvas", BLUE) > 20
    assert _pixels_of(tab, ".chart[data-metric=f1] canvas", BLUE) > 20
    shown = dict(zip(tab.page.locator("#hyperparams tbody td:nth-child(1)").all_inner_texts(),
                     tab.page.locator("#hyperparams tbody td:nth-child(2)").all_inner_texts(),
                     strict=True))
    assert shown["epochs"] == "2.0" and shown["lr"] == "5e-05" and shown["batch_size"] == "16"
    assert shown["seed"] == "0" and shown["max_length"] == "128"
    assert '"alpha": 8' in shown["lora"]  # LoRA's default alpha, 2 * r
    assert tab.page.inner_text("#hyperparams tr[data-name=lr] td.meta") == "default"
    assert tab.page.inner_text("#hyperparams tr[data-name=epochs] td.meta") == "given"
    tab.shot("run-one-eval")


def test_a_refused_line_shows_its_reason_and_line_and_owners_show_by_name(
        tab: Page, tenant: dict[str, str], migrated: Settings,  # noqa: F811
        session: Session) -> None:
    name = unique("sentiment")
    register_model(session, name)
    lines = [ParsedLine(1, "a", {"text": "lovely"}),
             ParsedLine(2, "2", {}, (ErrorCode.INVALID_INPUT,
                                     "malformed JSON: Expecting value: line 1 column 1")),
             ParsedLine(3, "c", {"text": "fine"})]
    spec = JobSpec(kind=TaskKind.SENTIMENT, model=f"{name}@prod", queue=TEST_QUEUE,
                   tenant_id=tenant["id"], on_invalid="skip")
    with session_factory(migrated)() as s:
        job = submit_job(session=s, settings=migrated, spec=spec, lines=lines).id
    run_chunk(migrated, job, 0)
    tab.open(f"/ui/jobs/{job}")
    row = tab.page.locator("#results tbody tr", has_text="invalid_input")
    assert "not read (line 2)" in row.locator("td:nth-child(3)").inner_text()
    assert row.locator("td:nth-child(5)").inner_text() == (
        "invalid_input (line 2): malformed JSON: Expecting value: line 1 column 1")
    tab.shot("job-refused-line")

    own = registry.register(session, name=name, kind=TaskKind.SENTIMENT,
                            source=f"/nonexistent/{name}-own", tenant_id=tenant["id"])
    session.commit()
    tab.open("/ui/models")
    owner_of = {r.locator("td:nth-child(1)").inner_text(): r.locator("td:nth-child(5)")
                .inner_text() for r in tab.page.locator("#models tbody tr").all()}
    tenant_name = session.execute(
        text("SELECT name FROM tenants WHERE id = :i"),
        {"i": tenant["id"]}).scalar_one()
    assert owner_of[own.ref] == tenant_name and owner_of[f"{name}@v1"] == "shared"


def test_a_cancelled_job_keeps_its_finished_share_and_login_shows_no_nav(
        tab: Page, tenant: dict[str, str], migrated: Settings, session: Session,  # noqa: F811
        browser: Any, api_server: str) -> None:  # noqa: F811
    from query_support import submit

    name = unique("sentiment")
    register_model(session, name)
    job = submit(migrated, model=f"{name}@prod", texts=[f"review {i}" for i in range(40)],
                 tenant_id=tenant["id"], chunk_size=8)
    run_chunk(migrated, job, 0)
    with session_factory(migrated)() as s:
        job_service.cancel_job(s, job)
    tab.open("/")
    ok = f"tr[data-job='{job}'] .bar .fill .ok"
    assert tab.page.eval_on_selector(ok, "e => e.style.width") == "20%"
    assert tab.page.eval_on_selector(ok, "e => getComputedStyle(e).backgroundColor") == (
        "rgb(22, 163, 74)")  # green: 8 of 40 succeeded before the cancel
    tab.page.wait_for_timeout(1500)  # the list re-polls each second: the share stays
    assert tab.page.eval_on_selector(ok, "e => e.style.width") == "20%"
    tab.open(f"/ui/jobs/{job}")
    assert tab.page.eval_on_selector("#job-progress .ok", "e => e.style.width") == "20%"
    tab.shot("job-cancelled-share")

    visitor = Page(browser, api_server)
    try:
        visitor.open("/ui/login")
        assert visitor.page.locator("nav").count() == 0
        assert visitor.page.locator("text=Log out").count() == 0
        visitor.shot("login-no-nav")
    finally:
        visitor.close()
