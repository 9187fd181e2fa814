"""Schemathesis hooks for the contract run: every generated request is signed in as
a user of its own (registered on first use), renewed whenever the API says the
token no longer holds (the run may sign out everywhere or delete the account)."""

import json
import os
import urllib.request
import uuid

import schemathesis


@schemathesis.auth(refresh_interval=None, retry_on=[401])
class FreshUser:
    def get(self, case, ctx):
        body = json.dumps(
            {"email": f"contract-{uuid.uuid4().hex[:16]}@example.com", "password": "a long enough password"}
        ).encode()
        request = urllib.request.Request(
            f"{os.environ['ATELIER_BASE']}/api/auth/register",
            data=body,
            headers={"content-type": "application/json"},
            method="POST",
        )
        with urllib.request.urlopen(request, timeout=30) as reply:
            return json.load(reply)["access_token"]

    def set(self, case, data, ctx):
        case.headers = case.headers or {}
        case.headers["Authorization"] = f"Bearer {data}"
