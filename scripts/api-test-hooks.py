"""Schemathesis hooks for scripts/api-test.sh.

A standby's long poll (`POST /v1/standby/wait`) waits up to `timeout_ms` (the coordinator
caps it at 60 s) when no lease has expired, which is the usual case in this test: every
generated wait is cut to at most 50 ms so that the run stays short. Values that are not a
whole number in range (negative tests) are left as generated.
"""

import schemathesis

STANDBY_WAIT_MS_TEST_MAX = 50


@schemathesis.hook
def before_call(ctx, case, **kwargs):
    if case.operation.path != "/v1/standby/wait" or not isinstance(case.body, dict):
        return
    timeout = case.body.get("timeout_ms")
    if isinstance(timeout, int) and not isinstance(timeout, bool) and timeout > STANDBY_WAIT_MS_TEST_MAX:
        case.body["timeout_ms"] = STANDBY_WAIT_MS_TEST_MAX
