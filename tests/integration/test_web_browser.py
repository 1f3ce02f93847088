"""The web UI in headless Chromium against a real lab (server, consumer, dutlab-worker, QEMU):
log in, watch a running QEMU job's log grow until it is Finished and read its results, follow a
failed health check from the overview to its device and reason, put a device in Maintenance as an
admin, see no restricted dictionary and no private job as another user, log out. The overview and
job page screenshots in docs/screenshots/ come from here.

One lab for the module (two QEMU runs in all: the smoke job and a health check whose QEMU cannot
start); the tests run in file order and read what the earlier ones left.
"""

from __future__ import annotations

import os

import pytest
from browser import chromium, quit_browser, require_browser, screenshot, wait_for
from prometheus_client.parser import text_string_to_metric_families

from labkit import http, qemu_available, smoke_job, start_lab

pytestmark = [pytest.mark.qemu, pytest.mark.slow]

SECRET = "pdu-cli --password hunter2 off"
SECRET_DICTIONARY = ("{% extends 'qemu.jinja2' %}\n{% set memory = 512 %}\n"
                     f"{{% set power_off_command = '{SECRET}' %}}\n")
BROKEN = "{% extends 'qemu.jinja2' %}\n{% set extra_options = ['-no-such-qemu-option'] %}\n"


def scrape(lab) -> dict:
    answer = http("GET", lab.url + "/metrics")
    assert answer.status == 200
    return {s.name + repr(sorted(s.labels.items())): s.value
            for f in text_string_to_metric_families(answer.text) for s in f.samples
            if f.type in ("counter", "histogram") and not f.name.startswith(("process_", "python_"))}


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    """qemu01 (Good, no health checks) for the job; broken01, whose health check fails; secret01,
    owned by admin, with a power command in its dictionary. alice is a plain user."""
    require_browser()
    ok, why = qemu_available()
    if not ok:
        pytest.fail(why) if os.environ.get("CI") else pytest.skip(why)
    lab, stop = start_lab(tmp_path_factory.mktemp("weblab"))
    try:
        lab.first_metrics = scrape(lab)
        lab.alice_token = lab.add_user("alice")
        lab.add_worker("worker1")
        lab.add_qemu_device("qemu01", health="Good")
        lab.add_device_type("qemu-hc")  # health checks on: broken01 starts Unknown and gets one
        lab.add_device("broken01", "qemu-hc", "worker1", BROKEN)
        lab.add_device_type("qemu-private", disable_health_checks=True)
        lab.add_device("secret01", "qemu-private", "worker1", SECRET_DICTIONARY, health="Good", owner_user="admin")
        # a private job of admin's that never runs: its only device (broken01) is never Good
        private = (smoke_job().replace("visibility: public", "visibility: personal")
                   .replace("job_name: qemu smoke test", "job_name: admin private soak")
                   .replace("device_type: qemu", "device_type: qemu-hc"))
        lab.private_job = lab.submit(private)
        lab.start_worker("worker1")
        lab.wait_worker_online("worker1")
        yield lab
    finally:
        stop()


@pytest.fixture
def browser(tmp_path):
    """One browser (its own profile and cookies), quit after the test."""
    driver = chromium(tmp_path / "chromium")
    try:
        yield driver
    finally:
        quit_browser(driver, tmp_path / "chromium")


def css(driver, selector: str):
    from selenium.webdriver.common.by import By

    return driver.find_elements(By.CSS_SELECTOR, selector)


def fits_a_phone(driver, path: str) -> None:
    """The page at a phone's width scrolls only down: wide tables scroll inside their own box."""
    driver.set_window_size(390, 844)
    driver.get(path)
    wide = driver.execute_script("return [document.documentElement.scrollWidth, window.innerWidth];")
    assert wide[0] <= wide[1], f"{path} is {wide[0]} px wide in a {wide[1]} px window"


def log_in(driver, lab, username: str, password: str) -> None:
    driver.get(lab.url + "/accounts/login/")
    css(driver, "#username")[0].send_keys(username)
    css(driver, "#password")[0].send_keys(password)
    css(driver, "#login-submit")[0].click()
    wait_for(f"{username} logged in", lambda: css(driver, "#whoami") and username in css(driver, "#whoami")[0].text)


def test_a_running_qemu_job_log_grows_until_finished_then_its_results(lab, browser):
    log_in(browser, lab, "alice", "pw-alice")
    # the smoke job with a pause in its test shell: lines come before and after it, while the page is open
    definition = smoke_job().replace("- lava-test-case uname", "- lava-test-case settle --shell sleep 5\n"
                                     "          - lava-test-case uname")
    assert "settle" in definition
    answer = http("POST", lab.url + "/api/v1/jobs", {"definition": definition}, token=lab.alice_token)
    assert answer.status == 201, answer.text
    job_id = answer.json()["job_ids"][0]
    browser.get(f"{lab.url}/jobs/{job_id}")
    assert css(browser, "#log[data-follow]"), "a job that has not finished is followed"
    # a marker the page loses when it reloads: lines that come while it is there came from the live follow
    browser.execute_script("window.dutlabMarker = 1;")
    first = len(css(browser, "#log .line"))

    def grew_live():
        if not browser.execute_script("return window.dutlabMarker === 1;"):
            return None
        n = len(css(browser, "#log .line"))
        return n if n > first and "Running" in css(browser, "#job-state")[0].text else None

    seen = wait_for(f"job {job_id}'s log growing in the page while it runs", grew_live, timeout=240)
    # when the job is Finished the page reloads itself, with its results
    wait_for(f"job {job_id} Finished in the page", lambda: "Finished" in css(browser, "#job-state")[0].text
             and not css(browser, "#log[data-follow]"), timeout=300)
    assert "Complete" in css(browser, "#job-health")[0].text, lab.job(job_id)
    rows = {r.text.split()[1]: r.text for r in css(browser, "#results tbody tr")}
    assert {"settle", "uname", "proc-mounted", "memtotal"} <= set(rows), rows
    assert "kB" in rows["memtotal"] and all("pass" in rows[c] for c in ("uname", "proc-mounted", "memtotal"))
    lines = css(browser, "#log .line")
    assert len(lines) > seen and lines[0].get_attribute("id") == "L0"
    browser.set_window_size(1280, 1500)  # state, facts, results and the log's first lines
    browser.execute_script("window.scrollTo(0, 0);")  # the reload keeps the follow's scroll
    screenshot(browser, "job")
    # the level filter hides the guest's console lines and shows them again
    target = css(browser, "#log .lvl-target")[0]
    assert target.is_displayed()
    css(browser, "input[data-level='target']")[0].click()
    wait_for("target lines hidden", lambda: not target.is_displayed())
    assert css(browser, "#log .lvl-info")[0].is_displayed()
    css(browser, "input[data-level='target']")[0].click()
    wait_for("target lines shown again", target.is_displayed)
    # a line anchor, as LAVA links them: #L<n> scrolls to the line
    browser.get(f"{lab.url}/jobs/{job_id}#L5")
    assert css(browser, "#L5 a.n")[0].get_attribute("href").endswith(f"/jobs/{job_id}#L5")
    assert browser.execute_script("return window.scrollY;") > 0
    fits_a_phone(browser, f"{lab.url}/jobs/{job_id}")
    # the metrics counted it: counters and histograms only went up, the job's end among them
    before, after = lab.first_metrics, scrape(lab)
    assert not {k: (v, after.get(k)) for k, v in before.items() if after.get(k, -1) < v}
    finished = sum(v for k, v in after.items() if k.startswith("dutlab_jobs_finished_total") and "Complete" in k)
    assert finished >= 1 and any(k.startswith("dutlab_job_duration_seconds_count") and v >= 1 for k, v in after.items())


def test_a_failed_health_check_from_the_overview_to_the_device_and_its_reason(lab, browser):
    lab.wait_health("broken01", {"Bad"}, timeout=300)
    browser.get(lab.url + "/")
    wait_for("broken01 among the failures", lambda: css(browser, "#bad-devices a[href='/devices/broken01']"))
    overview_reason = css(browser, "#bad-devices td.reason")[0].text
    assert overview_reason, "the overview shows why the device is Bad"
    screenshot(browser, "overview")
    css(browser, "#bad-devices a[href='/devices/broken01']")[0].click()
    wait_for("the device page", lambda: browser.current_url.endswith("/devices/broken01"))
    assert "Bad" in css(browser, "#device-health")[0].text
    reasons = [r.text for r in css(browser, "#health-history td.reason")]
    history = lab.json("GET", "/api/v1/devices/broken01/health-history")
    entries = history.get("results", history) if isinstance(history, dict) else history
    bad = [h for h in entries if h["new_health"] == "Bad"][-1]
    assert bad["reason"] in reasons and overview_reason == bad["reason"], (reasons, bad)
    assert "no-such-qemu-option" in bad["reason"] or "QEMU" in bad["reason"] or "qemu" in bad["reason"], bad
    for page in ("/", "/devices/broken01", "/jobs", "/devices"):
        fits_a_phone(browser, lab.url + page)


def test_an_admin_puts_a_device_in_maintenance_with_a_reason(lab, browser):
    from selenium.webdriver.support.ui import Select

    lab.wait_health("qemu01", {"Good"}, state="Idle")
    log_in(browser, lab, "admin", "admin-pw")
    browser.get(lab.url + "/devices/qemu01")
    Select(css(browser, "#health-select")[0]).select_by_visible_text("Maintenance")
    css(browser, "#health-reason")[0].send_keys("replacing its power supply")
    css(browser, "#health-submit")[0].click()
    wait_for("the history after the change", lambda: browser.current_url.endswith("/devices/qemu01#history"),
             driver=browser)
    assert "Maintenance" in css(browser, "#device-health")[0].text
    first = css(browser, "#health-history tbody tr")[0].text
    assert "replacing its power supply" in first and "admin" in first and "Maintenance" in first, first
    assert lab.json("GET", "/api/v1/devices/qemu01")["health"] == "Maintenance"


def test_another_user_sees_no_restricted_dictionary_and_no_private_job_then_logs_out(lab, browser):
    log_in(browser, lab, "alice", "pw-alice")
    browser.get(lab.url + "/devices/secret01")
    assert css(browser, "#no-dictionary") and not css(browser, "#dictionary")
    assert "hunter2" not in browser.page_source
    browser.get(lab.url + "/jobs")
    listed = css(browser, "#jobs")[0].text
    assert "qemu smoke test" in listed and "admin private soak" not in listed, listed
    browser.get(f"{lab.url}/jobs/{lab.private_job}")
    assert "admin private soak" not in browser.page_source and "does not exist" in browser.page_source
    # the admin reads both
    assert SECRET in lab.api("GET", "/api/v1/devices/secret01/dictionary").text
    css(browser, "#logout")[0].click()
    wait_for("logged out", lambda: css(browser, "#login") and not css(browser, "#whoami"))
    browser.get(lab.url + "/devices/qemu01")
    assert not css(browser, "#health-form") and not css(browser, "#whoami")
