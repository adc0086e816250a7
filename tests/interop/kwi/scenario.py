"""Wires one scenario: a throwaway Hermes root, a dispatcher (the gateway's
embedded loop, or a cron-like loop of one-shot `hermes kanban dispatch`
passes), a worker (the real `hermes chat`, or the stand-in script), and for
rescued runs worker-shim in masquerade mode (HERMES_BIN -> a `hermes` symlink
to the shim) plus kanban-watchdog."""

from __future__ import annotations

import time
from pathlib import Path

from . import binaries, versions, watchdog_api as wd
from .fake_provider import FakeProvider
from .hermes import Hermes
from .procs import Procs, pid_alive, wait_for

HERE = Path(__file__).resolve().parents[1]
STANDIN = HERE / "bin" / "standin-worker"
DISPATCH_LOOP = HERE / "bin" / "dispatch-loop"

GATEWAY_INTERVAL = 1      # kanban.dispatch_interval_seconds
ONESHOT_INTERVAL = 3      # seconds between one-shot `hermes kanban dispatch` passes


class Scenario:
    def __init__(self, root: Path, venv: Path, procs: Procs, *, dispatcher: str, worker: str, rescued: bool,
                 provider: FakeProvider | None = None, with_watchdog: bool = True, version: str = versions.DEFAULT):
        assert dispatcher in ("gateway", "oneshot"), dispatcher
        assert worker in ("real", "standin"), worker
        self.version = version
        self.v = versions.get(version)
        self.root, self.procs = root, procs
        self.dispatcher, self.worker, self.rescued = dispatcher, worker, rescued
        self.provider = provider
        if provider is not None and self.v.worker_rc_rate_limit == 75:
            # The 0.22 worker prints no `🔌 Provider: custom` line on its final failure, so a
            # Codex text from a `custom` endpoint names openai-codex, a provider outside the
            # profile's chain: the watchdog rightly blames nobody. A custom endpoint's own,
            # vendor-neutral 429 is what such a profile gets (NOTES.md, 0.22 finding 3).
            provider.style = "generic"
        self.with_watchdog = rescued and with_watchdog
        if rescued:  # fail loudly, before anything starts, when the binaries are not there
            self.shim_bin = binaries.require(binaries.SHIM)
            if self.with_watchdog:
                self.watchdog_bin = binaries.require(binaries.WATCHDOG)
        self.hermes = h = Hermes(root, venv, procs, version=version)
        h.write_config(dispatch_interval=GATEWAY_INTERVAL)
        h.add_profile("coder", base_url=provider.base_url if provider else None)
        self.ctl = root / "standin.ctl"
        self.ctl.write_text("complete\n")
        self.standin_log = root / "standin.log"
        self.record_dir = root / "records"
        self.state_dir = root / "watchdog-state"
        self.loop_pidfile = root / "dispatch-loop.pid"
        env = h.env(
            # Dead-worker detection is skipped for this long after a task's FIRST claim
            # (default 30 s); 0 keeps the suite fast and is the same for both arms.
            HERMES_KANBAN_CRASH_GRACE_SECONDS="0",
            KWI_STANDIN_CTL=str(self.ctl),
            KWI_STANDIN_LOG=str(self.standin_log),
            KWI_REAL_HERMES=str(h.bin),
            # The stand-in exits as this version's own worker does (bin/standin-worker).
            KWI_STANDIN_STYLE="0.22" if self.v.worker_trailer else "0.19",
        )
        target = STANDIN if worker == "standin" else h.bin
        if rescued:
            link = wd.shim_masquerade_dir(root, self.shim_bin)
            env.update(wd.shim_env(link, target, self.record_dir))
            # The watchdog's state_dir is not the default one: tell the shim where
            # health.json is (README, "Steering"), as an operator must.
            env["WORKER_SHIM_HEALTH_FILE"] = str(self.state_dir / "health.json")
        elif worker == "standin":
            env["HERMES_BIN"] = str(STANDIN)
        # control + real worker: no HERMES_BIN, Hermes finds `hermes` on PATH (the venv).
        self.env = env
        self.watchdog: wd.Watchdog | None = None
        self.gateway_proc = None
        self.loop_proc = None

    # -- stand-in behaviour ---------------------------------------------------
    def standin(self, line: str) -> None:
        self.ctl.write_text(line + "\n")

    def usage_limit_until(self, epoch: int) -> None:
        """Provider (fake or stand-in) answers with the usage limit until epoch."""
        self.standin(f"limited_until {epoch}")
        if self.provider:
            self.provider.limit_until(epoch)

    def usage_limit_for(self, seconds: int) -> None:
        """Provider (fake or stand-in) answers with the usage limit for ``seconds``
        from the first worker call it limits (a slow claim cannot eat the window)."""
        until = Path(str(self.ctl) + ".until")
        until.unlink(missing_ok=True)
        self.standin(f"limited_for {seconds}")
        if self.provider:
            self.provider.limit_from_first_call(seconds)

    def limit_armed(self) -> int | None:
        """resets_at of the limit armed by usage_limit_for, once its first call came."""
        if self.provider is not None and self.worker == "real":
            return self.provider.limit_armed
        try:
            return int(Path(str(self.ctl) + ".until").read_text().strip())
        except (OSError, ValueError):
            return None

    def wait_limit_armed(self, timeout: float = 60, on_timeout=None) -> int:
        return wait_for(self.limit_armed, timeout, "the first worker call met the usage limit",
                        on_timeout=on_timeout)

    # -- dispatcher -----------------------------------------------------------
    def start_dispatcher(self) -> None:
        if self.dispatcher == "gateway":
            self.gateway_proc = self.hermes.start_gateway(self.env)
            self.hermes.wait_dispatcher_up(timeout=45)
        else:
            self.loop_proc = self.procs.spawn("dispatch-loop", self.loop_argv(replace=False), self.env)
            wait_for(lambda: self.dispatcher_pid(), 10, "dispatch-loop wrote its pidfile")

    def loop_argv(self, replace: bool) -> list[str]:
        argv = [str(DISPATCH_LOOP), "--pidfile", str(self.loop_pidfile), "--interval", str(ONESHOT_INTERVAL),
                "--hermes", str(self.hermes.bin)]
        return argv + (["--replace"] if replace else [])

    def dispatcher_pid(self) -> int | None:
        if self.dispatcher == "gateway":
            return self.hermes.gateway_pid()
        try:
            pid = int(self.loop_pidfile.read_text().strip())
        except (OSError, ValueError):
            return None
        return pid if pid_alive(pid) else None

    def restart_command(self) -> list[str]:
        if self.dispatcher == "gateway":
            return [str(self.hermes.bin), "gateway", "run", "--replace"]
        return self.loop_argv(replace=True)

    @property
    def interval(self) -> float:
        return GATEWAY_INTERVAL if self.dispatcher == "gateway" else ONESHOT_INTERVAL

    # -- watchdog ---------------------------------------------------------------
    def start_watchdog(self, webhook_url: str | None = None, stall_after: str = "8s",
                       extra: dict | None = None) -> wd.Watchdog:
        """``extra``: config sections merged over kwi/watchdog_api.make_config's (one level deep)."""
        assert self.with_watchdog
        cfg = wd.make_config(hermes_home=self.hermes.home, record_dir=self.record_dir, state_dir=self.state_dir,
                             listen=f"127.0.0.1:{wd.free_port()}", restart_command=self.restart_command(),
                             webhook_url=webhook_url, interval=f"{self.interval}s", stall_after=stall_after)
        for k, v in (extra or {}).items():
            if isinstance(v, dict) and isinstance(cfg.get(k), dict):
                cfg[k] = {**cfg[k], **v}
            else:
                cfg[k] = v
        # The watchdog runs with the dispatcher's service environment, as an operator
        # would run both from one env file: its restart command inherits it.
        self.watchdog = wd.Watchdog(self.watchdog_bin, self.procs, self.root, cfg, self.env).start()
        return self.watchdog

    def diagnostics(self) -> str:
        arm = "control" if not self.rescued else ("shim+watchdog" if self.with_watchdog else "shim only")
        parts = [f"--- scenario Hermes {self.version} {self.dispatcher}/{self.worker}/{arm}"]
        for name in ("watchdog", "dispatch-loop", "gateway"):
            text = self.procs.log_text(name)
            if text:
                parts.append(f"--- {name} log (tail)\n{text[-2500:]}")
        if self.hermes.gateway_log.exists():
            parts.append(f"--- gateway.log (tail)\n{self.hermes.gateway_log.read_text(errors='replace')[-2500:]}")
        if self.standin_log.exists():
            parts.append(f"--- stand-in launches\n{self.standin_log.read_text()[-1500:]}")
        recs = wd.read_records(self.record_dir)
        if recs:
            parts.append("--- exit records\n" + "\n".join(
                f"{r.get('_path')}: exit={r.get('exit')} task={r.get('task')} failure={r.get('failure')}" for r in recs))
        if self.provider is not None:
            parts.append("--- fake provider requests (last 20)\n" + "\n".join(
                f"{r['t']:.1f} {r['method']} {r['path']} -> {r['answer']}" for r in self.provider.requests[-20:]))
        if self.watchdog is not None:
            parts.append(f"--- watchdog /status\n{self.watchdog.status_or_error()}")
        return "\n".join(parts)


def now() -> int:
    return int(time.time())
