"""What both SDK flow scripts share: the emulator's address from the command line, the access
key its fleet.toml grants, its JSON control API, and the first-failure exit."""
import json
import sys
import urllib.request

BASE = sys.argv[1].rstrip("/")
ENDPOINT = BASE.replace("http://", "")
KEY, SECRET = "LTAIsdkcompat", "sdk-compat-secret"


def failer(prefix):
    """A fail(message) that prints "<prefix> FAILED: message" and exits 1."""

    def fail(message):
        print(prefix + " FAILED: " + message)
        sys.exit(1)

    return fail


def control(path, body=None):
    """GETs (no body) or POSTs (a JSON body) the emulator's control API; the JSON answer."""
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(BASE + path, data=data, method="GET" if body is None else "POST")
    req.add_header("Content-Type", "application/json")
    with urllib.request.urlopen(req) as resp:
        return json.loads(resp.read())
