#!/usr/bin/env python3
"""A queue worker in Python, over the HTTP API, with the standard library only.

The same loop as tools/examples/worker.rs: take queued runs, ask the ledger
"may I begin?", do the work only when the decision is allowed, report
progress and the outcome.

    python3 tools/examples/worker.py http://127.0.0.1:7878 "$SERVICE_TOKEN" [--once]

A denied decision needs no handling: the ledger has already recorded the run
as blocked (or put it back to queued when the denial is retryable). A 409 on
begin means another worker took the run first.

Every call after begin names the attempt `begin` answered, and the work loop
heartbeats: a worker that stops reporting for the operation type's
`lease_seconds` loses the attempt (`attempt_abandoned`), and its late calls
are refused with 409 `lease_expired`; a run cancelled meanwhile answers 409
`run_cancelled`. Either way the worker stops working on it.

Any other failure (a refused token, a server error, no server) is printed
with the server's error code and message, and the worker exits with status 1.
"""

import json
import sys
import time
import urllib.error
import urllib.parse
import urllib.request

USAGE = "usage: worker.py URL SERVICE_TOKEN [--once]"
# Runs taken per poll.
POLL_PAGE_RUNS = 50
# Pause when nothing is queued.
IDLE_PAUSE_SECONDS = 1.0
# How long one request may take: a read waits for the read models to catch up
# (the server answers 503 after 5 s), a write for the log's durable append.
REQUEST_TIMEOUT_SECONDS = 60.0


class ApiFailure(Exception):
    """A 4xx or 5xx answer, with the API's error body when there is one."""

    def __init__(self, method, path, status, code, message):
        super().__init__(f"{method} {path}: the server answered {status} ({code}): {message}")
        self.status = status
        self.code = code


class Ledger:
    """A running opledger server and the service token to ask it with."""

    def __init__(self, url, token):
        parsed = urllib.parse.urlsplit(url)
        if parsed.scheme not in ("http", "https") or not parsed.netloc:
            raise ValueError(f"the URL must be http://HOST[:PORT][/BASE], not {url!r}")
        if not token.strip():
            raise ValueError("the service token is empty")
        self.base = url.rstrip("/")
        self.token = token.strip()

    def get(self, path, query=None):
        target = path + ("?" + urllib.parse.urlencode(query) if query else "")
        return self._call("GET", target, None)

    def post(self, path, body):
        return self._call("POST", path, body)

    def _call(self, method, path, body):
        headers = {"Authorization": f"Bearer {self.token}", "Accept": "application/json"}
        data = None
        if body is not None:
            # Every write is JSON with its type named: the server refuses
            # anything else (a form type included) with 415.
            data = json.dumps(body).encode("utf-8")
            headers["Content-Type"] = "application/json"
        request = urllib.request.Request(self.base + path, data=data, headers=headers, method=method)
        try:
            with urllib.request.urlopen(request, timeout=REQUEST_TIMEOUT_SECONDS) as answer:
                return json.load(answer)
        except urllib.error.HTTPError as error:
            code, message = error_body(error)
            raise ApiFailure(method, path, error.code, code, message) from None


def error_body(error):
    """The `{"error": {"code", "message"}}` of a failed answer, or what there is
    instead (a proxy's HTML page, an empty body)."""
    raw = error.read()
    try:
        detail = json.loads(raw)["error"]
        return detail["code"], detail["message"]
    except (ValueError, KeyError, TypeError):
        text = raw.decode("utf-8", "replace").strip()[:200]
        return "no_error_body", text or error.reason


def main(argv):
    args = [a for a in argv if a != "--once"]
    if len(args) != 2:
        print(USAGE, file=sys.stderr)
        return 2
    once = "--once" in argv
    try:
        ledger = Ledger(args[0], args[1])
        while True:
            worked = poll(ledger)
            if once:
                return 0
            if worked == 0:
                time.sleep(IDLE_PAUSE_SECONDS)
    except ApiFailure as failure:
        print(f"worker: {failure}", file=sys.stderr)
    except urllib.error.URLError as error:
        print(f"worker: cannot reach {args[0]}: {error.reason}", file=sys.stderr)
    except (OSError, ValueError) as error:
        # A timeout or a dropped connection mid-answer, a body that is not
        # JSON, a bad URL or token.
        print(f"worker: {error}", file=sys.stderr)
    except KeyboardInterrupt:
        # Stopped by hand: a run taken but not completed is reaped when its
        # lease lapses, then queued again for a fresh decision.
        return 130
    return 1


def poll(ledger):
    """One pass over the queued runs, oldest first; returns how many ran."""
    page = ledger.get("/v1/runs", {"status": "queued", "limit": POLL_PAGE_RUNS})
    worked = 0
    # The list is newest first.
    for run in reversed(page["runs"]):
        if attempt(ledger, run["id"], run.get("operation_type", "?")):
            worked += 1
    return worked


def attempt(ledger, run_id, operation_type):
    """Begins one run; works and completes it when allowed. False when the run
    was not ours to run."""
    try:
        begun = ledger.post(f"/v1/runs/{run_id}/begin", {})
    except ApiFailure as failure:
        if failure.status == 409:
            return False
        raise
    decision = begun["decision"]
    if decision["outcome"] != "allowed":
        print(
            f"{operation_type} {run_id}: not begun ({decision.get('reason_code')}), {begun['run']['status']}",
            file=sys.stderr,
        )
        return False
    number = begun["run"]["attempt"]
    total = 10
    for done in (total // 2, total):
        # The real work goes here, between the allowed decision and complete;
        # long work sends a heartbeat well within the lease.
        beat = still_ours(lambda: ledger.post(f"/v1/runs/{run_id}/heartbeat", {"attempt": number}))
        counts = {"summary_counts": {"total": total, "processed": done, "succeeded": done}, "attempt": number}
        progressed = still_ours(lambda: ledger.post(f"/v1/runs/{run_id}/progress", counts))
        if beat is None or progressed is None:
            print(f"{operation_type} {run_id}: no longer ours (lease expired or cancelled)", file=sys.stderr)
            return False
    outcome = {"outcome": "succeeded", "summary_counts": {"total": total, "processed": total}, "attempt": number}
    completed = still_ours(lambda: ledger.post(f"/v1/runs/{run_id}/complete", outcome))
    if completed is None:
        print(f"{operation_type} {run_id}: no longer ours (lease expired or cancelled)", file=sys.stderr)
        return False
    print(f"{operation_type} {run_id}: {completed['run']['outcome']}", file=sys.stderr)
    return True


def still_ours(call):
    """None when the ledger says the attempt is no longer this worker's: a 409
    (`lease_expired`, `run_cancelled`) after begin."""
    try:
        return call()
    except ApiFailure as failure:
        if failure.status == 409:
            return None
        raise


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
