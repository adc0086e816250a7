"""Helpers for the issue-16 scenarios (test_issue16_newer_hermes.py,
test_seed_acceptance.py): the xAI OAuth credential store as both Hermes
versions read it, profile configs with a provider chain, the review lane, and
the exit trailer.

Credential store (read in hermes_cli/auth.py of 0.19.0 and hermes_cli/auth_xai.py
of the 0.22 fork, `_read_xai_oauth_tokens`): a worker of profile P reads
`<root>/profiles/P/auth.json` first — `providers["xai-oauth"].tokens`, then its
`credential_pool["xai-oauth"]` entries — and falls back to the root
`<root>/auth.json` only when the profile's state has no usable token pair. The
error `xAI OAuth state is missing access_token` needs a state whose `tokens`
lack `access_token` with no usable pair anywhere; with no state at all the
worker says `No xAI OAuth credentials stored` instead. 0.19.0 copies the root's
grant into the profile's `credential_pool` the first time a worker of the
profile resolves it (measured); the 0.22 fork reads the root without copying.
"""

from __future__ import annotations

import base64
import json
import socket
import time
from pathlib import Path

from .hermes import Hermes

XAI = "xai-oauth"
XAI_MISSING = "xAI OAuth state is missing access_token"
# 2100-01-01: the access token never looks expired, so no worker tries to refresh it
# (a refresh would need the network).
FAR = 4102444800


def _b64(d: dict) -> str:
    return base64.urlsafe_b64encode(json.dumps(d).encode()).rstrip(b"=").decode()


def fake_xai_access_token() -> str:
    """A JWT-shaped token whose `exp` is far away (never sent anywhere but a refused proxy)."""
    return _b64({"alg": "none", "typ": "JWT"}) + "." + _b64({"exp": FAR, "iat": int(time.time()), "sub": "kwi"}) + ".kwi"


def xai_state(access_token: str | None) -> dict:
    tokens = {"refresh_token": "kwi-refresh-token", "token_type": "Bearer"}
    if access_token:
        tokens["access_token"] = access_token
    return {"tokens": tokens, "last_refresh": "2026-12-01T00:00:00Z", "auth_mode": "oauth_device_code",
            "discovery": {"token_endpoint": "https://auth.x.ai/oauth2/token"}, "redirect_uri": ""}


def xai_pool_entry(access_token: str | None) -> dict:
    """One `credential_pool["xai-oauth"]` entry as 0.19.0 writes it into a profile's store."""
    e = {"id": "kwi001", "label": "device_code", "auth_type": "oauth", "priority": 0, "source": "device_code",
         "refresh_token": "kwi-refresh-token", "last_status": None, "base_url": "https://api.x.ai/v1",
         "last_refresh": "2026-12-01T00:00:00Z", "request_count": 0}
    if access_token:
        e["access_token"] = access_token
    return e


def write_xai_credentials(h: Hermes, profile: str, access_token: str | None) -> list[Path]:
    """The xAI OAuth grant in the root store AND the profile's store (providers + its
    credential pool), as after `hermes model` and a first worker run. With
    ``access_token=None`` the state stays but the token is gone: what the seed calls
    "the xAI OAuth state is removed from the credential store". Returns the files written."""
    root = h.home / "auth.json"
    prof = h.home / "profiles" / profile / "auth.json"
    paths = []
    for p, doc in ((root, {"version": 1, "providers": {XAI: xai_state(access_token)}, "active_provider": XAI}),
                   (prof, {"version": 1, "providers": {XAI: xai_state(access_token)},
                           "credential_pool": {XAI: [xai_pool_entry(access_token)]}, "active_provider": XAI})):
        p.parent.mkdir(parents=True, exist_ok=True)
        tmp = p.with_name(p.name + ".kwi-tmp")
        tmp.write_text(json.dumps(doc, indent=2) + "\n")
        tmp.chmod(0o600)
        tmp.replace(p)  # atomic, like Hermes' own _save_auth_store
        paths.append(p)
    return paths


def refused_proxy_env() -> dict[str, str]:
    """Every HTTP(S) request not to 127.0.0.1 goes to a proxy port nobody listens on,
    so a worker that does get past its credential fails at once with a connection
    error: the suite never reaches the network (the fake provider is on 127.0.0.1)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}"
    env = {}
    for k in ("HTTPS_PROXY", "HTTP_PROXY", "ALL_PROXY"):
        env[k] = env[k.lower()] = url
    env["NO_PROXY"] = env["no_proxy"] = "127.0.0.1,localhost"
    return env


def write_profile(h: Hermes, name: str, provider: str, model: str, fallbacks: list[tuple[str, str]] = (),
                  base_url: str | None = None, api_max_retries: int = 1) -> Path:
    """`<root>/profiles/<name>/config.yaml`: the profile's provider chain as both
    Hermes and the watchdog read it (model.provider first, then fallback_providers)."""
    p = h.home / "profiles" / name
    p.mkdir(parents=True, exist_ok=True)
    lines = ["model:", f"  provider: {provider}", f"  default: {model}"]
    if base_url:
        lines += [f"  base_url: {base_url}", "  api_key: dummy"]
    if fallbacks:
        lines.append("fallback_providers:")
        for prov, mod in fallbacks:
            lines += [f"  - provider: {prov}", f"    model: {mod}"]
    lines += ["agent:", f"  api_max_retries: {api_max_retries}"]
    (p / "config.yaml").write_text("\n".join(lines) + "\n")
    return p / "config.yaml"


def request_review(h: Hermes, task_id: str, reviewer: str, summary: str = "implemented; please review") -> None:
    """What an implementer's `kanban_request_review` does: the task goes to `review`,
    assigned to the reviewer profile, for the dispatcher's review lane."""
    h.cli("kanban", "request-review", task_id, "--summary", summary, "--reviewer", reviewer)


def claim_sources(h: Hermes, task_id: str) -> list[str]:
    """For each `claimed` event of the task: the lane it was claimed from
    (`source_status: review` in the payload, else `ready`)."""
    return [((e["payload"] or {}).get("source_status") or "ready") for e in h.events(task_id) if e["kind"] == "claimed"]


def trailer_codes(log_text: str) -> list[int]:
    """Every `[kanban-worker-exit] rc=N` line of a worker log, in order (the 0.22
    dispatcher believes the last one)."""
    out = []
    for ln in log_text.splitlines():
        ln = ln.strip()
        if ln.startswith("[kanban-worker-exit] rc="):
            try:
                out.append(int(ln.split("=", 1)[1]))
            except ValueError:
                pass
    return out
