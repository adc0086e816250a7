"""Worker output is untrusted: a provider is judged only on a run that really failed.

A worker may print a provider error it did not suffer: after finishing its task, or
while asking a person a question. What counts is the board: a run the worker
reported itself (`hermes kanban complete`, `hermes kanban block`) is not a failure,
whatever its output says. All on the real Hermes 0.19.0, gateway dispatcher (1 s),
worker-shim in masquerade mode and kanban-watchdog; the stand-in worker is
bin/standin-reporter, profile `coder` has primary provider openai-codex.

(a) completes its task, THEN prints a Codex 429 (resets_at in 2100), exits 0:
    the task is done, the shim exits 0 (not 75) and its record says the worker
    reported the run, openai-codex is not marked unhealthy, and the next ready task
    of the profile is claimed and done (not held in `scheduled`).
(b) blocks its task with a question (`--kind needs_input`), THEN prints the 429:
    the task stays `blocked` across >= 2 watchdog checks after its record was
    handled: no `watchdog_*` event, no `block_loop_detected`, not parked.
(c) `kanban-watchdog provider reset openai-codex`, after a real rate-limited run
    made openai-codex unhealthy until 2100: the ready task held for it leaves
    `scheduled` within a check and is claimed within a check plus a dispatcher tick.
(d) A worker that really hits the 429 (prints it and exits without reporting) is
    still parked and rescued: test_incident1_rate_limit.py::test_usage_limit_rescued
    covers it for every setup (gateway/one-shot x stand-in/real worker); it is not
    repeated here.
"""

from __future__ import annotations

import time

import pytest

from kwi import untrusted as ut
from kwi import watchdog_api as wd
from kwi.hermes import BoardSampler
from kwi.procs import wait_for

INCIDENT = "3: worker output is untrusted (gateway 1 s, stand-in, openai-codex profile)"
PROVIDER = "openai-codex"
CHECK_EVERY = 0.5   # dispatcher.check_every in wd.make_config's default ("500ms")
# A board change by the watchdog or a claim by the gateway lands a little after the
# tick that makes it: the CLI writes the request, inotify wakes the daemon, and on
# this 2-core machine a gateway tick (a Python process) takes a few hundred ms.
SLACK = 1.5


def start(make_scenario, webhook):
    s = make_scenario(dispatcher="gateway", worker="standin", rescued=True)
    ut.use_reporter_standin(s)
    ut.set_primary_provider(s.hermes, "coder", PROVIDER)
    s.start_dispatcher()
    w = s.start_watchdog(webhook_url=webhook.url)
    assert w.cfg["dispatcher"]["check_every"] == "500ms", w.cfg
    return s, w


def watchdog_kinds(h, tid: str) -> list[str]:
    return [k for k in h.event_kinds(tid) if wd.is_watchdog_event(k)]


def unhealthy_text(status) -> str:
    return f"{PROVIDER} marked unhealthy: {wd.status_provider(status, PROVIDER)}"


def record_problems(rec: dict, outcome: str) -> tuple[list[str], str]:
    """A reported run's record: the worker's exit code passed through (0, not 75),
    and either no failure or the board's word that the worker reported the run.
    Returns (problems, a note for the table)."""
    problems = []
    run = wd.record_run_at_exit(rec)
    if wd.record_exit_code(rec) != 0:
        problems.append(f"the stand-in exited {wd.record_exit_code(rec)}, not 0: {rec.get('exit')}")
    if wd.record_reported_code(rec) != 0:
        problems.append(f"the shim exited {wd.record_reported_code(rec)} (not the worker's 0) for a run the worker "
                        f"reported ({outcome}): exit={rec.get('exit')} run_at_exit={run}")
    failure = wd.record_failure(rec)
    if not failure:
        return problems, "record: no failure, exit 0"
    if not wd.record_reported_by_worker(rec) or (run or {}).get("outcome") != outcome:
        problems.append(f"the record carries failure {failure.get('class')} ({failure.get('provider')}) but does not "
                        f"say the worker reported the run ({outcome}): run_at_exit={run}")
    return problems, (f"record: {failure.get('class')} classified, run_at_exit {run}, "
                      f"shim exit {wd.record_reported_code(rec)}")


class HealthWatch:
    """Every /status seen in an observation window: was the provider ever unhealthy?"""

    def __init__(self):
        self.unhealthy: dict | None = None

    def see(self, status) -> None:
        if self.unhealthy is None and wd.status_provider_unhealthy(status, PROVIDER):
            self.unhealthy = wd.status_provider(status, PROVIDER)

    def problem(self) -> list[str]:
        return [f"{PROVIDER} marked unhealthy on a run the worker reported: {self.unhealthy}"] if self.unhealthy else []


def no_alerts(webhook) -> list[str]:
    bad = [p["body"] for p in webhook.bodies() if PROVIDER in wd.alert_event(p["body"])]
    return [f"{len(bad)} {PROVIDER} alert(s): {bad[0]}"] if bad else []


@pytest.mark.rescued
def test_untrusted_completed_then_429(make_scenario, webhook, outcome):
    """(a) The worker completes its task for real, then prints a Codex 429."""
    cell = outcome(INCIDENT, "(a) completes its task, then prints a 429 (resets_at 2100) and exits 0", "rescued")
    s, w = start(make_scenario, webhook)
    h = s.hermes
    sampler = BoardSampler(h).start()
    s.standin(f"report_complete {ut.FAR_RESET}")
    t0 = time.time()
    t1 = h.create_task("untrusted a: write the report (then print a 429)")

    h.wait_status(t1, ("done", "blocked", "scheduled"), timeout=20)
    assert h.status(t1) == "done", h.describe(t1)
    rec = ut.wait_record_handled(s.record_dir, t1, timeout=15, on_timeout=lambda: h.describe(t1))
    t_handled = time.time()
    problems, note = record_problems(rec, "completed")
    cell.note(note)

    # Across >= 2 checks after the record was handled: the done task is left alone
    # (a break ends the test at once), and the provider's health is watched.
    health = HealthWatch()

    def broken(status):
        health.see(status)
        return f"watchdog events on the done task: {watchdog_kinds(h, t1)}" if watchdog_kinds(h, t1) else None

    _, window = ut.observe_checks(w, 2, CHECK_EVERY, broken, "the done task left alone", since=t_handled)
    problems += health.problem()

    # The next ready task of the same profile (a plain completion) is claimed and done.
    s.standin("complete")
    t_next = time.time()
    t2 = h.create_task("untrusted a: the next task of the same profile")
    h.wait_status(t2, ("done", "blocked", "scheduled"), timeout=20)
    t_done2 = time.time() - t_next
    sampler.stop()
    if h.status(t2) != "done" or "scheduled" in sampler.seen(t2) or "claimed" not in h.event_kinds(t2):
        problems.append(f"the next task of the profile was not simply claimed and done: {sampler.render(t2)}; "
                        f"{h.describe(t2)}")
    for tid in (t1, t2):
        if watchdog_kinds(h, tid):
            problems.append(f"watchdog events on {tid}: {watchdog_kinds(h, tid)}")
    if h.attempts(t1) != 1:
        problems.append(f"{t1} ran {h.attempts(t1)} times")
    status = w.status()
    health.see(status)
    cli = wd.status_cli_json(w)
    if wd.status_provider_unhealthy(cli, PROVIDER):
        problems.append(f"`kanban-watchdog status --json`: {unhealthy_text(cli)}")
    problems += no_alerts(webhook)
    problems = list(dict.fromkeys(problems + health.problem()))
    assert not problems, "a completed run's trailing 429 was trusted:\n- " + "\n- ".join(problems)
    cell.note(f"done at {sampler.first_time(t1, 'done') - t0:.1f}s, record handled at {t_handled - t0:.1f}s; "
              f"{PROVIDER} healthy across {window:.1f}s of checks; next task done {t_done2:.1f}s after creation, "
              f"never scheduled; no watchdog event, no alert")


@pytest.mark.rescued
def test_untrusted_blocked_then_429(make_scenario, webhook, outcome):
    """(b) The worker blocks its task with a question, then prints a Codex 429."""
    cell = outcome(INCIDENT, "(b) blocks its task with a question (needs_input), then prints a 429 and exits 0",
                   "rescued")
    s, w = start(make_scenario, webhook)
    h = s.hermes
    sampler = BoardSampler(h).start()
    s.standin(f"report_block {ut.FAR_RESET}")
    t0 = time.time()
    t1 = h.create_task("untrusted b: write the report (ask a question, then print a 429)")

    h.wait_status(t1, ("blocked", "done", "scheduled", "triage", "todo"), timeout=20)
    assert h.status(t1) == "blocked", h.describe(t1)
    assert "blocked" in h.event_kinds(t1), h.describe(t1)
    rec = ut.wait_record_handled(s.record_dir, t1, timeout=15, on_timeout=lambda: h.describe(t1))
    t_handled = time.time()
    problems, note = record_problems(rec, "blocked")
    cell.note(note)

    # Across >= 2 checks after the record was handled, the task stays the worker's:
    # blocked, no watchdog event, not parked (a break ends the test at once).
    health = HealthWatch()

    def broken(status):
        health.see(status)
        st = h.status(t1)
        if st != "blocked":
            return f"task is {st}: {h.describe(t1)}"
        kinds = h.event_kinds(t1)
        if watchdog_kinds(h, t1) or "block_loop_detected" in kinds:
            return f"events on the blocked task: {kinds}"
        if t1 in wd.status_parked_tasks(status):
            return f"/status lists the task as parked: {status.get('parked')}"
        return None

    _, window = ut.observe_checks(w, 2, CHECK_EVERY, broken, "the worker's `blocked` left alone", since=t_handled)
    sampler.stop()
    seen = sampler.seen(t1)
    if not seen <= {"ready", "running", "blocked"}:
        problems.append(f"the task went through {sampler.render(t1)}")
    kinds = h.event_kinds(t1)
    if kinds.count("blocked") != 1 or h.attempts(t1) != 1:
        problems.append(f"blocked {kinds.count('blocked')} times in {h.attempts(t1)} runs: {h.describe(t1)}")
    odd = [k for k in kinds if k in ("gave_up", "protocol_violation", "crashed", "rate_limited", "unblocked",
                                     "scheduled")]
    if odd:
        problems.append(f"unexpected events {odd}: {h.describe(t1)}")
    problems += health.problem() + no_alerts(webhook)
    assert not problems, "a blocked run's trailing 429 was trusted:\n- " + "\n- ".join(problems)
    cell.note(f"blocked at {sampler.first_time(t1, 'blocked') - t0:.1f}s, record handled at {t_handled - t0:.1f}s; "
              f"still blocked, no watchdog event, {PROVIDER} healthy across {window:.1f}s of checks")


@pytest.mark.rescued
def test_untrusted_provider_reset_releases(make_scenario, webhook, outcome):
    """(c) `provider reset` releases what is held for the provider within a check."""
    cell = outcome(INCIDENT, "(c) provider reset after a real 429 (resets_at 2100): held task released", "rescued")
    s, w = start(make_scenario, webhook)
    h = s.hermes
    sampler = BoardSampler(h).start()
    # A real rate-limited run: the stand-in prints the 429 and exits 0 without reporting.
    s.standin(f"limited_until {ut.FAR_RESET}")
    t0 = time.time()
    t1 = h.create_task("untrusted c: the run that hits the usage limit")
    status = wait_for(lambda: (st := w.status()) and wd.status_provider_unhealthy(st, PROVIDER) and st, 25,
                      f"{PROVIDER} unhealthy in /status", on_timeout=lambda: h.describe(t1))
    until = wd.status_provider(status, PROVIDER).get("until")
    wait_for(lambda: [k for k in h.event_kinds(t1) if wd.is_parked_event(k)], 10, f"{t1} parked",
             on_timeout=lambda: h.describe(t1))
    t_unhealthy = time.time() - t0

    # A second ready task of the profile is held in scheduled (the gateway may win the
    # race and run it first: then it is parked after its own 429; either way it waits
    # in scheduled for the provider).
    t2 = h.create_task("untrusted c: the next task of the same profile")
    wait_for(lambda: h.status(t2) == "scheduled" and [k for k in h.event_kinds(t2) if wd.is_waiting_event(k)],
             10, f"{t2} held in scheduled", on_timeout=lambda: h.describe(t2))
    how = ("held before any run" if any(wd.is_held_event(k) for k in h.event_kinds(t2))
           else f"parked after {h.attempts(t2)} run(s)")
    wait_for(lambda: set(wd.status_parked_tasks(w.status())) >= {t1, t2}, 5, "both tasks in /status parked[]")

    s.standin("complete")
    event0 = h.max_event_id()
    t_reset = time.time()  # before the CLI runs: the daemon may act before it returns
    r = wd.provider_reset(w, PROVIDER)
    cell.note(f"{PROVIDER} unhealthy until {until} ({t_unhealthy:.1f}s); second task {how}")

    leave_bound = CHECK_EVERY + SLACK
    claim_bound = CHECK_EVERY + s.interval + SLACK
    left = ut.time_until(lambda: h.status(t2) != "scheduled", 10)
    left = None if left is None else time.time() - t_reset
    if left is None or left > leave_bound:
        raise AssertionError(
            f"the held task was still scheduled {leave_bound:.1f}s after `provider reset {PROVIDER}` "
            f"(one check = {CHECK_EVERY}s + {SLACK}s slack); "
            + (f"it left after {left:.1f}s" if left is not None else "it had not left 10 s later either")
            + f"\nreset said: {r.stdout.strip()}\n{h.describe(t2)}")
    t_left = left
    claimed = wait_for(lambda: [e for e in h.events_since(event0) if e["task_id"] == t2 and e["kind"] == "claimed"],
                       max(0.1, claim_bound - (time.time() - t_reset)), f"{t2} claimed after the reset",
                       interval=0.05, on_timeout=lambda: h.describe(t2))
    t_claimed = time.time() - t_reset
    h.wait_status(t2, "done", timeout=15)
    t_done2 = time.time() - t_reset
    # The task parked for the provider goes back too.
    h.wait_status(t1, "done", timeout=15)
    t_done1 = time.time() - t_reset
    sampler.stop()

    released = [k for k in h.event_kinds(t2) if wd.is_released_event(k)]
    assert released, h.describe(t2)
    assert claimed[0]["created_at"] >= int(t_reset), claimed
    assert "blocked" not in sampler.seen(t1) | sampler.seen(t2), (sampler.render(t1), sampler.render(t2))
    status = w.status()
    assert not wd.status_provider_unhealthy(status, PROVIDER), unhealthy_text(status)
    assert not wd.status_parked_tasks(status), status.get("parked")
    cell.note(f"after the reset: left scheduled in {t_left:.2f}s (bound {leave_bound:.1f}s), claimed in "
              f"{t_claimed:.2f}s (bound {claim_bound:.1f}s), done in {t_done2:.1f}s; parked task done in {t_done1:.1f}s")
