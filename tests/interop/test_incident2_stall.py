"""Incident 2: a silent dispatcher stall.

The dispatcher stops while its process stays alive (SIGSTOP: the gateway, or the
cron-like loop of one-shot `hermes kanban dispatch` passes).  Ready tasks wait.

Control (real Hermes alone, 0.19.0 and the 0.22 fork): nothing is claimed for the
whole observation window, and nothing notices.

Rescued (kanban-watchdog): the stall is reported within stall_after (+ a tick)
with a webhook alert, the restart command runs (`hermes gateway run --replace`,
or `dispatch-loop --replace`), and the waiting tasks are claimed and done.
"""

from __future__ import annotations

import time

import pytest

from kwi import versions
from kwi import watchdog_api as wd
from kwi.hermes import BoardSampler
from kwi.procs import hold_for, pid_alive, pid_state, sigstop, children, cmdline, wait_for

INCIDENT = "2: silent dispatcher stall (SIGSTOP)"
STALL_AFTER = 8.0     # dispatcher.stall_after given to the watchdog
CHECK_EVERY = 0.5     # dispatcher.check_every
HOLD = 15.0           # control observation window (> stall_after + a few ticks)
N_TASKS = 3

# Both dispatchers on 0.19.0; on the 0.22 fork the rescued gateway, whose restart is
# Hermes' own `hermes gateway run --replace` (the one-shot loop's restart is ours). The
# 0.22 control (a SIGSTOPped gateway claims nothing, logs nothing: measured, NOTES.md)
# is left out of CI for time.
CONTROL_SETUPS = [pytest.param(v, d, id=f"{versions.get(v).test_id}-{d}")
                  for v, d in (("0.19.0", "gateway"), ("0.19.0", "oneshot"))]
SETUPS = CONTROL_SETUPS + [pytest.param("0.22", "gateway", id="h0.22-gateway")]


def setup_name(dispatcher: str) -> str:
    if dispatcher == "gateway":
        return "gateway (embedded loop, 1 s) SIGSTOPped, stand-in worker"
    return "one-shot dispatch loop (3 s) SIGSTOPped, stand-in worker"


def stop_dispatcher(s) -> int:
    """SIGSTOP the dispatcher process only.  For the loop, wait until no pass is
    running any more, so the stop cannot race a pass that sees the new tasks."""
    pid = s.dispatcher_pid()
    assert pid, "no dispatcher pid"
    sigstop(pid)
    if s.dispatcher == "oneshot":
        wait_for(lambda: not [c for c in children(pid) if "kanban" in cmdline(c)], 30,
                 "the running one-shot pass finished")
    return pid


def warm_up(s) -> None:
    """One task through the live dispatcher: proves the setup works."""
    tid = s.hermes.create_task("warm-up task")
    s.hermes.wait_status(tid, "done", timeout=30)


def claims_since(h, event_id: int) -> list[dict]:
    return [e for e in h.events_since(event_id) if e["kind"] in ("claimed", "spawned")]


@pytest.mark.control
@pytest.mark.parametrize("hver,dispatcher", CONTROL_SETUPS)
def test_stall_control(hver, dispatcher, make_scenario, outcome):
    cell = outcome(INCIDENT, setup_name(dispatcher), "control")
    s = make_scenario(dispatcher=dispatcher, worker="standin", rescued=False)
    h = s.hermes
    s.start_dispatcher()
    warm_up(s)
    pid = stop_dispatcher(s)
    mark = h.max_event_id()
    ids = [h.create_task(f"stalled task {i}") for i in range(N_TASKS)]
    t0 = time.time()

    hold_for(lambda: all(h.status(t) == "ready" for t in ids) and not claims_since(h, mark), HOLD,
             "all tasks stay ready, nothing claimed, while the dispatcher is stopped")
    assert pid_alive(pid) and pid_state(pid) in ("T", "t"), "the dispatcher process must still be alive (stopped)"
    assert s.dispatcher_pid() == pid
    cell.note(f"0/{N_TASKS} tasks claimed in {time.time() - t0:.0f}s; dispatcher pid {pid} alive "
              f"(state {pid_state(pid)}); nothing restarted it")
    if dispatcher == "gateway":
        log = h.gateway_log.read_text(errors="replace")
        assert "kanban dispatcher stuck" not in log
        cell.note("gateway.log silent")


@pytest.mark.rescued
@pytest.mark.parametrize("hver,dispatcher", SETUPS)
def test_stall_rescued(hver, dispatcher, make_scenario, webhook, outcome):
    cell = outcome(INCIDENT, setup_name(dispatcher), "rescued")
    s = make_scenario(dispatcher=dispatcher, worker="standin", rescued=True)
    h = s.hermes
    s.start_dispatcher()
    watchdog = s.start_watchdog(webhook_url=webhook.url, stall_after=f"{STALL_AFTER:g}s")
    warm_up(s)
    assert not [p for p in webhook.bodies() if wd.is_stall_alert(p["body"])], \
        f"stall alert while the dispatcher was working: {webhook.bodies()}"
    sampler = BoardSampler(h).start()
    pid0 = stop_dispatcher(s)
    t0 = time.time()  # ready work starts waiting with the first task
    ids = [h.create_task(f"stalled task {i}") for i in range(N_TASKS)]

    # 1. The stall is reported (webhook alert, "firing") within stall_after + a tick (+ slack),
    #    and not before stall_after.
    deadline = STALL_AFTER + s.interval + CHECK_EVERY + 3
    alert = wait_for(lambda: next((p for p in webhook.bodies() if wd.is_stall_alert(p["body"])
                                   and wd.alert_status(p["body"]) == "firing"), None),
                     deadline + 10, "a firing stall alert on the webhook",
                     on_timeout=lambda: f"posts: {webhook.bodies()}\nstatus: {watchdog.status_or_error()}")
    t_alert = alert["t"] - t0
    cell.note(f"stall alert after {t_alert:.1f}s (key {wd.alert_event(alert['body'])!r})")
    assert STALL_AFTER - 0.5 <= t_alert <= deadline, \
        f"stall reported {t_alert:.1f}s after ready work appeared; expected {STALL_AFTER}..{deadline:.1f}s"
    assert wd.alert_text(alert["body"]).strip(), alert
    status = watchdog.status_or_error()
    stalled = wd.status_stalled(status)
    cell.note(f"/status stalled={stalled}")

    # 2. The restart command ran: a new dispatcher replaced the stopped one.
    new_pid = wait_for(lambda: (p := s.dispatcher_pid()) and p != pid0 and p, 60,
                       "a new dispatcher pid (restart command ran)",
                       on_timeout=lambda: watchdog.log()[-3000:])
    wait_for(lambda: not pid_alive(pid0), 20, f"the stopped dispatcher {pid0} is gone")

    # 3. The waiting tasks are claimed and done.
    for t in ids:
        h.wait_status(t, "done", timeout=40)
    t_done = time.time() - t0
    sampler.stop()
    for t in ids:
        assert "blocked" not in sampler.seen(t)
    cell.note(f"restarted (pid {pid0} -> {new_pid}); all {N_TASKS} done {t_done:.1f}s after the stop")

    # 4. The incident is resolved once progress resumes.
    resolved = wait_for(lambda: next((p for p in webhook.bodies() if wd.is_stall_alert(p["body"])
                                      and wd.alert_status(p["body"]) == "resolved"), None),
                        30, "a resolved stall alert", on_timeout=lambda: f"posts: {webhook.bodies()}")
    cell.note(f"resolved alert after {resolved['t'] - t0:.1f}s")
    status = watchdog.status_or_error()
    n_restarts = wd.status_restart_count(status)
    cell.note(f"restart commands run: {n_restarts}")
    assert watchdog.alive(), watchdog.log()[-2000:]
    assert s.dispatcher_pid() == new_pid, "the dispatcher was restarted again after it recovered"

    # One incident, one alert: no reminder flood (alerts.repeat_interval defaults to 1 h).
    stall_posts = [p["body"] for p in webhook.bodies() if wd.is_stall_alert(p["body"])]
    firing = [b for b in stall_posts if wd.alert_status(b) == "firing"]
    cell.note(f"{len(firing)} firing stall POSTs ({sum(map(wd.alert_is_repeat, firing))} reminders)")
    assert len(firing) == 1, f"{len(firing)} firing stall alerts for one incident: {firing[:3]} ..."
