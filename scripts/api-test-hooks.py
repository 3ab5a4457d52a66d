"""Schemathesis hooks for scripts/api-test.sh.

Credentials: the coordinator has three scopes (read, node, admin) and its description names
in each operation's security requirement the one it needs (`security: [{"bearer": ["node"]}]`).
The auth provider below reads that requirement from the operation and sends the matching
token as `Authorization: Bearer ...`; the tokens come from API_TEST_NODE_TOKEN,
API_TEST_READ_TOKEN and API_TEST_ADMIN_TOKEN. Operations without a requirement (health, the
description itself, every node route) go without one. Being a registered provider, the
credential counts as explicit auth for schemathesis's `ignored_auth` check, which then
confirms that the operation refuses requests without it and with a made-up one.

A standby's long poll (`POST /v1/standby/wait`) waits up to `timeout_ms` (the coordinator
caps it at 60 s) when no lease has expired, which is the usual case in this test: every
generated wait is cut to at most 50 ms so that the run stays short. Values that are not a
whole number in range (negative tests) are left as generated.
"""

import os

import schemathesis

STANDBY_WAIT_MS_TEST_MAX = 50

# The environment variable holding the token of each scope the descriptions name.
TOKEN_VARIABLES = {
    "node": "API_TEST_NODE_TOKEN",
    "read": "API_TEST_READ_TOKEN",
    "admin": "API_TEST_ADMIN_TOKEN",
}


def required_scope(operation):
    """The bearer scope the operation's own security requirement names, or None."""
    for requirement in operation.definition.raw.get("security", []):
        for scopes in requirement.values():
            if scopes:
                return scopes[0]
    return None


# No caching (the token depends on the operation) and no re-fetch on 401 (the tokens are
# fixed, a 401 is an answer to check).
@schemathesis.auth(refresh_interval=None, retry_on=[])
class ScopedBearer:
    def get(self, case, ctx):
        scope = required_scope(case.operation)
        if scope is None:
            return None
        variable = TOKEN_VARIABLES.get(scope)
        if variable is None:
            raise RuntimeError(f"{case.operation.label} needs scope {scope!r}, which the test has no token for")
        token = os.environ.get(variable)
        if not token:
            raise RuntimeError(f"{case.operation.label} needs scope {scope!r}: set {variable}")
        return token

    def set(self, case, token, ctx):
        case.headers = dict(case.headers or {})
        case.headers["Authorization"] = f"Bearer {token}"


@schemathesis.hook
def before_call(ctx, case, **kwargs):
    if case.operation.path != "/v1/standby/wait" or not isinstance(case.body, dict):
        return
    timeout = case.body.get("timeout_ms")
    if isinstance(timeout, int) and not isinstance(timeout, bool) and timeout > STANDBY_WAIT_MS_TEST_MAX:
        case.body["timeout_ms"] = STANDBY_WAIT_MS_TEST_MAX
