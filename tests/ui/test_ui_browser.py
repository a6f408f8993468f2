"""``jobkit ui`` as a user meets it: the real command serving a real store of
jobs run through the local backend, read by a headless Chromium.

One read-only server and one browser for the module; a second server with
``--allow-actions`` for the cancel test.  Waits are explicit (WebDriverWait on
what the page shows), never a sleep standing in for an assertion.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest
from uiserver import Server, chromium, save_screenshot, ui_server

import jobkit
from conftest import local_env

pytestmark = pytest.mark.timeout(90)
WAIT = 20
SECRET = "s3cr3t-value-for-the-ui-test"


def greet(who: str) -> str:
    print(f"hello {who}", flush=True)
    return who


def broken() -> None:
    raise ValueError("this job fails on purpose")


def ticker(lines: int) -> int:
    for i in range(lines):
        print(f"tick {i}", flush=True)
        time.sleep(0.3)
    return lines


def sleeper(seconds: float) -> None:
    time.sleep(seconds)


def square(x: int) -> int:
    time.sleep(0.1 * x)
    return x * x


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    directory = tmp_path_factory.mktemp("ui")
    with local_env(directory, cpus=4) as client:
        remote_greet = jobkit.remote(greet).options(
            name="alpha-greet", labels={"team": "a"}, env={"API_TOKEN": SECRET}
        )
        greeted = [remote_greet.submit(who) for who in ("ann", "bob")]
        failed = jobkit.remote(broken).options(name="beta-broken", labels={"team": "b"}).submit()
        array = jobkit.remote(square).options(name="gamma-square").map(range(4))
        for job in [*greeted, *array]:
            job.result(timeout=60)
        with pytest.raises(ValueError):
            failed.result(timeout=60)
        yield {
            "client": client,
            "store": f"sqlite:///{directory}/jobkit.db",
            "greeted": [j.id for j in greeted],
            "failed": failed.id,
            "array": array,
        }


@pytest.fixture(scope="module")
def server(world: dict[str, Any]) -> Iterator[Server]:
    with ui_server(world["store"]) as running:
        yield running


@pytest.fixture(scope="module")
def browser(server: Server) -> Iterator[Any]:
    with chromium() as driver:
        driver.get(server.url)  # the printed URL: sets the cookie, drops the token
        yield driver


def wait(driver: Any, condition: Any, timeout: float = WAIT) -> Any:
    from selenium.common.exceptions import (
        NoSuchElementException,
        StaleElementReferenceException,
        TimeoutException,
    )
    from selenium.webdriver.support.ui import WebDriverWait

    # A page that is being replaced (a filter applied, a button posted) leaves
    # elements found a moment ago stale, or not there yet: look again.
    ignored = (StaleElementReferenceException, NoSuchElementException)
    try:
        return WebDriverWait(driver, timeout, poll_frequency=0.1, ignored_exceptions=ignored).until(
            condition
        )
    except TimeoutException:  # say what the page showed instead
        text = driver.find_element("tag name", "body").text
        raise AssertionError(
            f"{driver.current_url} never got there; it shows:\n{text[:1500]}"
        ) from None


def table_ids(driver: Any) -> list[str]:
    from selenium.webdriver.common.by import By

    return [a.text for a in driver.find_elements(By.CSS_SELECTOR, "table.jobs td:first-child a")]


def get(url: str, headers: dict[str, str] | None = None, method: str = "GET") -> tuple[int, str]:
    request = urllib.request.Request(url, headers=headers or {}, method=method)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


# -- the pages ---------------------------------------------------------------------


def test_the_jobs_table_lists_the_store_and_filters_by_state_and_name(
    world: dict[str, Any], server: Server, browser: Any
) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    assert "token=" not in browser.current_url  # redirected: the token is in a cookie now
    every = [*world["greeted"], world["failed"], *(j.id for j in world["array"])]
    ids = table_ids(browser)
    assert sorted(ids) == sorted(every)
    created = [r.created_at for r in world["client"].store.query()]
    assert created == sorted(created, reverse=True)  # the page shows the store's order
    assert ids == [r.id for r in world["client"].store.query()]
    save_screenshot(browser, "jobs-table")

    Select(browser.find_element(By.ID, "f-state")).select_by_value("FAILED")
    browser.find_element(By.ID, "f-apply").click()
    wait(browser, lambda d: table_ids(d) == [world["failed"]])

    browser.get(f"{server.base}/")
    name = browser.find_element(By.ID, "f-name")
    name.send_keys("alpha*")
    browser.find_element(By.ID, "f-apply").click()
    wait(browser, lambda d: sorted(table_ids(d)) == sorted(world["greeted"]))

    browser.get(f"{server.base}/?label=team%3Db")
    assert table_ids(browser) == [world["failed"]]


def test_a_job_page_shows_log_lines_appearing_while_the_job_runs(
    world: dict[str, Any], server: Server, browser: Any
) -> None:
    from selenium.webdriver.common.by import By

    job = jobkit.remote(ticker).options(name="ticker").submit(40)
    wait(browser, lambda _d: "tick 1\n" in job.logs(), timeout=30)
    browser.get(f"{server.base}/jobs/{job.id}")
    log = browser.find_element(By.ID, "log-stdout")
    at_load = int(log.get_attribute("data-offset") or 0)
    assert "tick 39" not in log.text
    # New lines arrive through the event stream, not by reloading the page.
    wait(browser, lambda d: "tick 12" in d.find_element(By.ID, "log-stdout").text)
    assert len(browser.find_element(By.ID, "log-stdout").text) > at_load
    browser.execute_script("arguments[0].scrollIntoView()", browser.find_element(By.ID, "usage"))
    save_screenshot(browser, "job-page")
    assert browser.find_element(By.CSS_SELECTOR, "#job-state .state").text == "RUNNING"
    job.result(timeout=60)
    wait(browser, lambda d: d.find_element(By.ID, "log-stdout").get_attribute("data-ended"))
    assert browser.find_element(By.ID, "log-stdout").get_attribute("data-ended") == "SUCCEEDED"
    assert "tick 39" in browser.find_element(By.ID, "log-stdout").text
    assert browser.find_element(By.CSS_SELECTOR, "#job-state .state").text == "SUCCEEDED"
    assert browser.find_element(By.ID, "log-stdout").text.count("tick 5\n") <= 1


def test_a_failed_job_page_shows_the_failure(
    world: dict[str, Any], server: Server, browser: Any
) -> None:
    from selenium.webdriver.common.by import By

    browser.get(f"{server.base}/jobs/{world['failed']}")
    failure = browser.find_element(By.ID, "failure").text
    assert "ERROR" in failure and "this job fails on purpose" in failure
    assert not browser.find_elements(By.ID, "cancel")  # read-only: no buttons
    assert not browser.find_elements(By.ID, "retry")


def test_the_job_page_shows_usage_flags_and_charts_from_the_series(
    world: dict[str, Any], server: Server, browser: Any
) -> None:
    from selenium.webdriver.common.by import By

    from jobkit import usage

    store = world["client"].store
    job_id = world["greeted"][0]
    # As a sampler would leave them: a summary in the record, the series in a blob.
    gpu = {"index": 0, "name": "A100", "uuid": "GPU-1", "util_max": 0.0, "util_mean": 0.0}
    store.update(
        job_id,
        resources={"cpus": 4, "gpus": 1, "env": {"API_TOKEN": SECRET}},
        usage={
            "wall_seconds": 4.0,
            "cpu_seconds": 3.0,
            "mean_cpu_util": 0.75,
            "peak_rss_bytes": 50_000_000,
            "samples": 4,
            "final": True,
            "gpus": [gpu],
        },
    )
    series = {
        "started_at": time.time(),
        "t": [0, 1, 2, 3],
        "cpu_util": [0.5, 1.0, 0.9, 0.6],
        "rss_bytes": [10_000_000, 30_000_000, 50_000_000, 40_000_000],
        "gpus": [{"index": 0, "name": "A100", "util": [0, 0, 0, 0], "mem_bytes": [0, 1, 2, 3]}],
    }
    store.put_blob(usage.usage_key(job_id), usage.encode_series(series))
    browser.get(f"{server.base}/jobs/{job_id}")
    charts = browser.find_elements(By.CSS_SELECTOR, "#usage svg.chart")
    assert len(charts) == 4  # CPU, memory, GPU 0 utilization and memory
    points = charts[0].find_element(By.TAG_NAME, "polyline").get_attribute("points") or ""
    assert len(points.split()) == 4
    flags = {f.get_attribute("class") for f in browser.find_elements(By.CSS_SELECTOR, "li.flag")}
    assert flags == {"flag flag-idle_gpu", "flag flag-idle_cpus"}  # as jobkit.usage.flags says
    shown = browser.find_element(By.ID, "usage").text  # in the words of `jobkit status`
    assert "(final)" in shown and "48MiB peak" in shown and "0.75 mean" in shown, shown
    assert "A100: util 0% mean, 0% max" in shown and "peak_rss_bytes" not in shown, shown
    browser.execute_script("arguments[0].scrollIntoView()", browser.find_element(By.ID, "usage"))
    save_screenshot(browser, "job-usage")
    # The credential handed to the job through env= is named, never shown.
    assert "API_TOKEN" in browser.page_source and SECRET not in browser.page_source
    status, body = get(
        f"{server.base}/blobs/usage/{job_id}", {"Authorization": f"Bearer {server.token}"}
    )
    assert status == 200 and json.loads(body)["cpu_util"] == [0.5, 1.0, 0.9, 0.6]


def test_the_usage_of_an_unsampled_or_cached_job_says_why_there_are_no_figures(
    world: dict[str, Any], server: Server, browser: Any
) -> None:
    from selenium.webdriver.common.by import By

    store = world["client"].store
    unsampled, cached = world["greeted"][1], world["failed"]
    store.update(unsampled, usage={})
    record = store.get(cached)
    store.update(cached, usage={}, extra={**record.extra, "cached_from": unsampled})
    browser.get(f"{server.base}/jobs/{unsampled}")
    assert browser.find_element(By.ID, "usage-note").text == "not sampled"
    browser.get(f"{server.base}/jobs/{cached}")
    assert browser.find_element(By.ID, "usage-note").text == f"did not run: cached from {unsampled}"


def test_an_array_page_counts_states_and_draws_one_bar_per_item(
    world: dict[str, Any], server: Server, browser: Any
) -> None:
    from selenium.webdriver.common.by import By

    array = world["array"]
    browser.get(f"{server.base}/arrays/{array.id}")
    assert "4 items" in browser.find_element(By.ID, "counts").text
    assert "SUCCEEDED: 4" in browser.find_element(By.ID, "counts").text
    rows = browser.find_elements(By.CSS_SELECTOR, "#timeline svg g.item")
    assert sorted(int(r.get_attribute("data-index") or -1) for r in rows) == [0, 1, 2, 3]
    for row in rows:  # one run bar each, in its final state's colour, with a hover title
        bar = row.find_element(By.CSS_SELECTOR, "rect.bar.running")
        assert "succeeded" in (bar.get_attribute("class") or "")
        assert bar.size["width"] > 0
        assert row.find_elements(By.TAG_NAME, "title")
    save_screenshot(browser, "array-page")


def test_waste_flags_show_in_the_jobs_table_and_on_the_array_page(
    world: dict[str, Any], server: Server, browser: Any
) -> None:
    from selenium.webdriver.common.by import By

    array = world["array"]
    idle = array[2]
    # As the sampler leaves it: a GPU asked for and never used.
    world["client"].store.update(
        idle.id,
        resources={"cpus": 1, "gpus": 1},
        usage={
            "wall_seconds": 7200.0,
            "cpu_seconds": 3600.0,
            "mean_cpu_util": 0.5,
            "peak_rss_bytes": 10_000_000,
            "final": True,
            "gpus": [{"index": 0, "name": "A100", "util_max": 0.0, "util_mean": 0.0}],
        },
    )

    def flags_in(row_selector: str, job_id: str) -> list[tuple[str, str]]:
        for row in browser.find_elements(By.CSS_SELECTOR, row_selector):
            if row.find_elements(By.LINK_TEXT, job_id):
                return [
                    (f.text, f.get_attribute("title") or "")
                    for f in row.find_elements(By.CSS_SELECTOR, "td:last-child span.flag")
                ]
        raise AssertionError(f"no row for {job_id}")

    browser.get(f"{server.base}/?name=gamma-square")
    assert flags_in("table.jobs tbody tr", idle.id) == [
        ("idle_gpu", "asked for 1 GPU(s), utilization never above 0%")
    ]
    assert flags_in("table.jobs tbody tr", array[1].id) == []
    browser.get(f"{server.base}/arrays/{array.id}")
    assert flags_in("table.items tbody tr", idle.id)[0][0] == "idle_gpu"
    assert flags_in("table.items tbody tr", array[1].id) == []
    assert browser.find_element(By.ID, "idle-gpus").text == "1 item(s) with idle GPUs: 2"
    hours = browser.find_element(By.ID, "cpu-hours").text  # the hour written, and the real runs'
    assert hours.startswith("1.0") and hours.endswith("sampled item(s) of 4"), hours
    links = browser.find_elements(By.CSS_SELECTOR, "#slowest a")
    assert sorted(a.text for a in links) == ["0", "1", "2", "3"]  # all, when under five
    save_screenshot(browser, "array-flags")


# -- security ------------------------------------------------------------------


def test_requests_without_the_token_or_from_elsewhere_are_refused(
    world: dict[str, Any], server: Server
) -> None:
    job_id = world["greeted"][0]
    bearer = {"Authorization": f"Bearer {server.token}"}
    assert get(f"{server.base}/")[0] == 403
    assert get(f"{server.base}/jobs/{job_id}")[0] == 403
    assert get(f"{server.base}/?token=wrong")[0] == 403
    assert get(f"{server.base}/", {"Authorization": "Bearer wrong"})[0] == 403
    assert get(f"{server.base}/jobs/{job_id}/logs/stdout/events")[0] == 403
    status, body = get(f"{server.base}/", bearer)
    assert status == 200 and job_id in body
    port = server.base.rsplit(":", 1)[1]
    assert get(f"{server.base}/", {**bearer, "Origin": "http://evil.example"})[0] == 403
    assert get(f"{server.base}/", {**bearer, "Host": f"evil.example:{port}"})[0] == 403
    assert get(f"{server.base}/", {**bearer, "Host": f"localhost:{port}"})[0] == 200
    cookie = {"Cookie": f"jobkit_ui_{port}={server.token}"}
    assert get(f"{server.base}/", cookie)[0] == 200
    status, body = get(f"{server.base}/jobs/jk-nosuchjob", bearer)
    assert status == 404 and "jk-nosuchjob" in body


def test_the_token_in_the_url_becomes_a_strict_http_only_cookie(server: Server) -> None:
    class NoRedirect(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *args: Any, **kwargs: Any) -> None:
            return None

    opener = urllib.request.build_opener(NoRedirect)
    with pytest.raises(urllib.error.HTTPError) as caught:
        opener.open(server.url, timeout=10)
    headers = caught.value.headers
    assert caught.value.code == 303 and headers["Location"] == "/"
    cookie = headers["Set-Cookie"]
    assert f"={server.token}" in cookie and "HttpOnly" in cookie and "SameSite=Strict" in cookie
    assert "default-src 'none'" in headers["Content-Security-Policy"]
    assert headers["Referrer-Policy"] == "same-origin"


def test_the_blob_route_serves_usage_series_only_never_payloads_or_outcomes(
    world: dict[str, Any], server: Server
) -> None:
    job_id = world["greeted"][1]
    bearer = {"Authorization": f"Bearer {server.token}"}
    store = world["client"].store
    assert store.get_blob(f"payloads/{job_id}")  # they exist: refused, not missing
    assert store.get_blob(f"outcomes/{job_id}")
    for key in (f"payloads/{job_id}", f"outcomes/{job_id}", "usage/../payloads/x", "cache/x"):
        status, body = get(f"{server.base}/blobs/{key}", bearer)
        assert status in (403, 404), key
        assert "ann" not in body and "bob" not in body
    assert get(f"{server.base}/blobs/payloads/{job_id}", bearer)[0] == 403


def test_actions_are_refused_unless_allowed_and_cancel_a_running_job_when_they_are(
    world: dict[str, Any], server: Server, browser: Any
) -> None:
    from selenium.webdriver.common.by import By

    job = jobkit.remote(sleeper).options(name="sleeper").submit(60)
    wait(browser, lambda _d: job.running(), timeout=30)
    bearer = {"Authorization": f"Bearer {server.token}", "Origin": server.base}
    status, body = get(f"{server.base}/jobs/{job.id}/cancel", bearer, method="POST")
    assert status == 403 and "--allow-actions" in body
    assert job.running()

    with ui_server(world["store"], "--allow-actions") as acting:
        no_origin = {"Authorization": f"Bearer {acting.token}"}
        assert get(f"{acting.base}/jobs/{job.id}/cancel", no_origin, method="POST")[0] == 403
        foreign = {**no_origin, "Origin": "http://evil.example"}
        assert get(f"{acting.base}/jobs/{job.id}/cancel", foreign, method="POST")[0] == 403
        assert job.running()
        ours = {**no_origin, "Origin": acting.base}
        status, body = get(f"{acting.base}/jobs/{world['greeted'][0]}/retry", ours, method="POST")
        assert status == 409 and "SUCCEEDED" in body  # nothing to rerun, nothing changed
        assert get(f"{acting.base}/jobs/jk-nosuchjob/cancel", ours, method="POST")[0] == 404
        browser.get(acting.url)
        browser.get(f"{acting.base}/jobs/{job.id}")
        browser.find_element(By.ID, "cancel").click()
        wait(browser, lambda d: "CANCELLED" in d.find_element(By.CSS_SELECTOR, "dd .state").text)
        assert world["client"].store.get(job.id).state is jobkit.JobState.CANCELLED
        assert not browser.find_elements(By.ID, "cancel")  # ended: only retry is offered
        browser.find_element(By.ID, "retry").click()
        wait(
            browser, lambda d: "CANCELLED" not in d.find_element(By.CSS_SELECTOR, "dd .state").text
        )
        assert world["client"].store.get(job.id).attempt == 1
        world["client"].cancel([job.id])  # the rerun sleeps a minute: end it
