#!/usr/bin/env python3
"""An example Testbed exec plugin (see docs/plugins.md).

The agent runs this file once per operation and writes one JSON request
line to its stdin:

  {"op": "describe"}
      -> one line: {"name": ..., "methods": [...]}
  {"op": "invoke", "method": ..., "params": {...}, "task_id": ..., "work_dir": ...}
      -> any number of {"log": "..."} lines, then exactly one final line:
         {"result": ..., "ok": true|false, "exit_code": N} or {"error": "..."}

Copy it into the agent's plugin directory (executable bit set) and the
agent offers the plugin `echo` with the methods `echo` and `fail`.
"""

import json
import sys

DESCRIPTION = {
    "name": "echo",
    "methods": [
        {
            "name": "echo",
            "description": "Writes `message` to the task log `repeat` times.",
            "schema": {
                "$schema": "https://json-schema.org/draft/2020-12/schema",
                "type": "object",
                "properties": {
                    "message": {"type": "string"},
                    "repeat": {
                        "type": "integer",
                        "minimum": 1,
                        "maximum": 100,
                        "default": 1,
                    },
                },
                "required": ["message"],
                "additionalProperties": False,
            },
        },
        {
            "name": "fail",
            "description": "Always fails; shows how a plugin reports a failed task.",
            "schema": {
                "$schema": "https://json-schema.org/draft/2020-12/schema",
                "type": "object",
                "properties": {"message": {"type": "string"}},
                "additionalProperties": False,
            },
        },
    ],
}


def send(obj):
    # One JSON document per line, flushed at once so the agent streams it.
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


def echo(params):
    message = params.get("message")
    repeat = params.get("repeat", 1)
    # The server validates parameters against the schema, but a plugin can
    # also be invoked directly; check what matters.
    if not isinstance(message, str):
        return {"error": "parameter `message` must be a string"}
    if isinstance(repeat, bool) or not isinstance(repeat, int) or not 1 <= repeat <= 100:
        return {"error": "parameter `repeat` must be an integer from 1 to 100"}
    for _ in range(repeat):
        send({"log": message})
    return {"result": {"message": message, "repeat": repeat}, "ok": True}


def fail(params):
    message = params.get("message", "this method always fails")
    send({"log": message})
    # Anything on stderr goes to the task log verbatim.
    print("fail: giving up", file=sys.stderr, flush=True)
    return {"result": {"message": message}, "ok": False, "exit_code": 1}


METHODS = {"echo": echo, "fail": fail}


def main():
    line = sys.stdin.readline()
    try:
        request = json.loads(line)
    except ValueError as e:
        send({"error": "request is not JSON: %s" % e})
        return 2
    if not isinstance(request, dict):
        send({"error": "request is not a JSON object"})
        return 2
    op = request.get("op")
    if op == "describe":
        send(DESCRIPTION)
        return 0
    if op == "invoke":
        method = METHODS.get(request.get("method"))
        if method is None:
            send({"error": "unknown method: %s" % request.get("method")})
            return 2
        params = request.get("params") or {}
        if not isinstance(params, dict):
            send({"error": "params must be an object"})
            return 2
        send(method(params))
        return 0
    send({"error": "unknown op: %s" % op})
    return 2


if __name__ == "__main__":
    sys.exit(main())
