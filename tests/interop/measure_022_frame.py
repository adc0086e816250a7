"""NOTES.md, 0.22 findings 1 and 2, measured outside the suite: a real 0.22 worker gets the
Codex-worded 429 (the 0.22 worker prints no epoch, only `Limit resets at HH:MM (in Nm).`) from a
`provider: custom` endpoint; gateway (1 s), worker-shim + kanban-watchdog. Prints the record's
reset and provider, what the worker printed, the watchdog's blame and the task's end.

    KW_BIN_DIR=target/debug ~/.cache/kanban-watchdog/interop-driver-venv/bin/python \
        tests/interop/measure_022_frame.py OUTDIR LIMIT_SECONDS
"""
import json, os, sys, time, uuid
from pathlib import Path
sys.path.insert(0, str(Path(__file__).resolve().parent))
from kwi.fake_provider import FakeProvider
from kwi.procs import Procs, wait_for
from kwi.scenario import Scenario
from kwi import watchdog_api as wd

out = Path(sys.argv[1]); out.mkdir(parents=True, exist_ok=True)
limit = int(sys.argv[2])
venv = Path.home() / ".cache/kanban-watchdog/hermes-0.22-venv"
procs = Procs(uuid.uuid4().hex, out / "proc-logs")
fp = FakeProvider().start()
try:
    s = Scenario(out, venv, procs, dispatcher="gateway", worker="real", rescued=True, provider=fp, version="0.22")
    fp.style = "codex"  # the suite uses "generic" on 0.22 (findings 1/2); here the Codex body
    h = s.hermes
    s.start_dispatcher()
    w = s.start_watchdog()
    t0 = time.time()
    s.usage_limit_for(limit)
    tid = h.create_task("finding 1/2: write the report")
    resets_at = s.wait_limit_armed(90)
    rec = wait_for(lambda: next((r for r in wd.read_records(s.record_dir) if wd.record_task(r) == tid
                                 and wd.record_failure(r)), None), 90, "the limited run's record")
    f = wd.record_failure(rec)
    print(f"provider limit armed, resets_at {resets_at} ({time.strftime('%H:%M:%S', time.localtime(resets_at))})")
    print(f"record: ended {rec.get('ended_at')}, failure class {f.get('class')} provider {f.get('provider')} "
          f"signature {f.get('signature')} resets_at {f.get('resets_at')} retry_after_s {f.get('retry_after_s')}")
    print(f"  matched line: {f.get('matched_line')!r}")
    log = h.worker_log(tid).read_text(errors="replace")
    print("  worker printed:", [l.strip() for l in log.replace('\r', '').splitlines() if "Limit resets at" in l or "rate-limiting" in l or "(resets in" in l])
    try:
        h.wait_status(tid, "done", timeout=limit + 90)
        print(f"task done {time.time() - t0:.1f}s after creation; {h.attempts(tid)} runs; events {[k for k in h.event_kinds(tid)]}")
    except Exception as e:
        print("NOT done:", e, h.describe(tid))
    wlog = procs.log_text("watchdog")
    for l in wlog.splitlines():
        if any(k in l for k in ("unhealthy", "blame", "parked", "nobody", "left to the dispatcher", "released")):
            print("  watchdog:", l[:400])
finally:
    procs.cleanup()
    fp.stop()
