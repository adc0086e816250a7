"""The seed's own acceptance test, literally, on the real Hermes (0.19.0 and the
0.22 fork), with real `hermes chat` workers:

  a gateway serving two profiles, one on `xai-oauth`, one on another provider; the
  xAI OAuth state is removed from the credential store mid-session, so the workers
  of that profile fail with `xAI OAuth state is missing access_token`; the watchdog
  logs `provider xai-oauth marked unhealthy: <reason>; team will use fallback chain
  until re-auth`; the other profile's tasks keep being claimed and done; the xAI
  tasks wait without burning attempts; restoring the credential lets them run.

Profile `coder` runs on the fake OpenAI-compatible provider (127.0.0.1). Profile
`grok` runs on `xai-oauth` with a grant in the root `auth.json` and in the
profile's own store (`profiles/grok/auth.json`, providers + credential pool, as
0.19.0 leaves it after a first run). "Removed" = the grant's access_token is gone
from both stores (kwi/newer.py says why both). No network: every request that is
not for 127.0.0.1 goes to a proxy port nobody listens on, so once the credential
is back a grok worker gets past it and fails at once on the connection — which is
what "lets them run" can show without xAI.
"""

from __future__ import annotations

import re
import time

import pytest

from kwi import newer
from kwi import untrusted as ut
from kwi import versions
from kwi import watchdog_api as wd
from kwi.hermes import BoardSampler
from kwi.procs import wait_for

INCIDENT = "0: the seed's acceptance test (xAI OAuth state removed mid-session)"
SETUP = ("gateway (1 s) serving profiles grok (xai-oauth) and coder (fake provider), real `hermes chat` workers, "
         "grant removed from root + profile stores, then restored")
# The sentence of the seed, as kanban-watchdog prints it (crates/kanban-watchdog/src/health.rs,
# Transition::message), at WARN level.
WARN_RE = re.compile(r"\bWARN\b.*?(provider xai-oauth marked unhealthy: (?P<reason>.+?); "
                     r"team will use fallback chain until re-auth)\s*$", re.M)
CHECK_EVERY = 0.5
N_XAI, N_CODER = 2, 2


@pytest.mark.rescued
@pytest.mark.real_worker
@pytest.mark.parametrize("hver", versions.params("0.19.0", "0.22"))
def test_seed_acceptance(hver, make_scenario, fake_provider, webhook, outcome):
    cell = outcome(INCIDENT, SETUP, "rescued")
    s = make_scenario(dispatcher="gateway", worker="real", rescued=True, provider=fake_provider)
    h = s.hermes
    newer.write_profile(h, "grok", newer.XAI, "grok-4")
    token = newer.fake_xai_access_token()
    stores = newer.write_xai_credentials(h, "grok", token)
    s.env.update(newer.refused_proxy_env())
    s.start_dispatcher()
    w = s.start_watchdog(webhook_url=webhook.url)
    sampler = BoardSampler(h).start()

    # Mid-session: the team is working when the xAI OAuth state disappears.
    coder = [h.create_task(f"seed: coder task {i}", "coder") for i in range(N_CODER)]
    newer.write_xai_credentials(h, "grok", None)
    t0 = time.time()
    xai = [h.create_task(f"seed: grok task {i}", "grok") for i in range(N_XAI)]

    # 1. The WARN line, in the seed's words.
    m = wait_for(lambda: WARN_RE.search(w.log()), 60, "the watchdog's WARN `provider xai-oauth marked unhealthy: ...; "
                 "team will use fallback chain until re-auth`",
                 on_timeout=lambda: "\n".join(ln for ln in w.log().splitlines() if "xai" in ln.lower())[-3000:]
                 + "\n" + "\n".join(h.describe(t) for t in xai))
    t_warn = time.time() - t0
    reason = m.group("reason")
    cell.note(f"WARN after {t_warn:.1f}s: `{m.group(1)}`")
    assert newer.XAI_MISSING in reason or "auth_expired" in reason, f"the reason does not say why: {reason!r}"

    # 2. The other profile's tasks keep being claimed and done.
    for t in coder:
        h.wait_status(t, "done", timeout=90)
    t_coder = time.time() - t0

    # 3. The xAI tasks wait (parked in `scheduled`) without burning attempts: one run each
    #    (the one that found the token gone), none after, across several checks. A task
    #    created during the outage is held before any run, or (the dispatcher may claim it
    #    before a check) parked after one.
    for t in xai:
        wait_for(lambda: h.status(t) == "scheduled", 30, f"{t} waiting in scheduled",
                 on_timeout=lambda: h.describe(t))
    late = h.create_task("seed: grok task created during the outage", "grok")
    wait_for(lambda: h.status(late) == "scheduled", 30, f"{late} waiting in scheduled",
             on_timeout=lambda: h.describe(late))
    waiting = xai + [late]
    runs = {t: h.attempts(t) for t in waiting}
    ut.observe_checks(w, 4, CHECK_EVERY,
                      lambda st: next((f"{t} is {h.status(t)} after {h.attempts(t)} runs: {h.describe(t)}"
                                       for t in waiting if h.status(t) != "scheduled" or h.attempts(t) != runs[t]),
                                      None),
                      "the xAI tasks wait for re-auth", timeout=30)
    assert all(runs[t] == 1 for t in xai), {t: h.describe(t) for t in xai}
    assert runs[late] <= 1, h.describe(late)
    for t in xai:
        assert "blocked" not in sampler.seen(t) or h.status(t) == "scheduled", sampler.render(t)
    recs = [r for r in wd.read_records(s.record_dir) if wd.record_task(r) in xai]
    assert recs and all(wd.record_failure_class(r) == "auth_expired" for r in recs), \
        [(r.get("exit"), r.get("failure")) for r in recs]
    assert all(newer.XAI_MISSING in (wd.record_failure(r).get("matched_line") or "") for r in recs), \
        [wd.record_failure(r).get("matched_line") for r in recs]
    exits = sorted({wd.record_exit_code(r) for r in recs})
    rows = [h.task(t) for t in xai]
    left = sorted({str(r.get("worker_started_at"))[:12] for r in rows if r.get("worker_started_at")})
    if "worker_started_at" in rows[0]:
        cell.note(f"while parked: worker_pid {sorted({r['worker_pid'] for r in rows}, key=str)}, worker_started_at "
                  f"{'left: ' + ', '.join(left) if left else 'cleared'}")
    st = w.status()
    prov = wd.status_provider(st, newer.XAI)
    assert wd.status_provider_unhealthy(st, newer.XAI), st.get("providers")
    assert set(waiting) <= set(wd.status_parked_tasks(st)), st.get("parked")
    skipped = re.search(r"^kanban_watchdog_providers_skipped_total(?:\{[^}]*\})? (\S+)", w.metrics(), re.M)
    cell.note(f"providers_skipped_total {skipped.group(1) if skipped else 'absent'}")
    cell.note(f"{N_CODER} coder tasks done by {t_coder:.1f}s; grok tasks parked after 1 run each (worker exit "
              f"{exits}, record auth_expired), the one created during the outage after {runs[late]} run(s); no run "
              f"for them across 4 checks; {newer.XAI} {prov.get('state')} until {prov.get('until') or 're-auth'}")

    # 4. Restoring the credential lets them run: each is claimed again and its worker
    #    gets past the credential (and fails on the refused proxy, not on the token).
    sizes = {t: (h.worker_log(t).stat().st_size if h.worker_log(t).exists() else 0) for t in waiting}
    t_restore = time.time()
    newer.write_xai_credentials(h, "grok", token)
    for t in waiting:
        wait_for(lambda: h.attempts(t) > runs[t], 30, f"{t} run again after the credential came back",
                 on_timeout=lambda: h.describe(t))
    t_run = time.time() - t_restore

    def past_credential(t):
        log = h.worker_log(t)
        text = log.read_bytes()[sizes[t]:].decode(errors="replace") if log.exists() else ""
        if newer.XAI_MISSING in text:
            return f"missing token again: {text[-500:]}"
        return "connection" in text.lower() and "got past the credential"

    got = {t: wait_for(lambda: past_credential(t), 45, f"{t}'s new worker reaches the provider",
                       on_timeout=lambda: h.worker_log(t).read_text(errors="replace")[-1500:]) for t in waiting}
    bad = {t: v for t, v in got.items() if v != "got past the credential"}
    sampler.stop()
    assert not bad, bad
    cell.note(f"credential restored (root + profile store): all {len(waiting)} grok tasks run again within "
              f"{t_run:.1f}s, their workers past the credential (connection refused by the test's proxy)")
    assert stores  # both stores were written
