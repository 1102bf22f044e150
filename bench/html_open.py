#!/usr/bin/env python3
"""Opens an HTML report in headless Chromium (through chromedriver's WebDriver
API, standard library only) and prints how long it took to first paint, to the
list of all cases being ready, and to a search result.

    bench/html_open.py report.html [search text]

Called by bench/results.sh when Chromium and chromedriver are installed
(Debian: chromium, chromium-driver). A benchmark, never a test.
"""
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def call(base, method, path, body=None):
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(base + path, data=data, method=method,
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=600) as r:
        return json.load(r)["value"]


def main():
    path = os.path.abspath(sys.argv[1])
    query = sys.argv[2] if len(sys.argv) > 2 else "case 777777"
    port = free_port()
    profile = tempfile.mkdtemp(prefix="html-open-")
    driver = subprocess.Popen(["chromedriver", f"--port={port}"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(100):
            try:
                urllib.request.urlopen(base + "/status", timeout=1)
                break
            except OSError:
                time.sleep(0.1)
        caps = {"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "pageLoadStrategy": "normal",
            "goog:chromeOptions": {"binary": "/usr/bin/chromium", "args": [
                "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                "--no-first-run", "--disable-background-networking",
                "--disable-component-update", "--disable-sync",
                "--disable-dev-shm-usage", "--window-size=1280,900",
                "--user-data-dir=" + profile]},
        }}}
        session = call(base, "POST", "/session", caps)["sessionId"]
        s = f"/session/{session}"
        call(base, "POST", s + "/timeouts", {"pageLoad": 600000, "script": 600000})
        started = time.monotonic()
        call(base, "POST", s + "/url", {"url": "file://" + path})
        loaded = time.monotonic() - started
        paint = call(base, "POST", s + "/execute/sync", {"script": """
            var e = performance.getEntriesByType('paint')
              .filter(function (p) { return p.name === 'first-contentful-paint'; })[0];
            return e ? e.startTime : null;""", "args": []})
        # The list is ready when its status line counts the cases.
        ready = call(base, "POST", s + "/execute/async", {"script": """
            var done = arguments[arguments.length - 1];
            (function wait() {
              var st = document.getElementById('list-status');
              if (!st || /^\\d+ cases$/.test(st.textContent)) done(performance.now());
              else setTimeout(wait, 5);
            })();""", "args": []})
        search = call(base, "POST", s + "/execute/async", {"script": """
            var done = arguments[arguments.length - 1], q = document.getElementById('q');
            var st = document.getElementById('list-status');
            if (!st) { done(null); return; }
            var t0 = performance.now();
            q.value = arguments[0];
            q.dispatchEvent(new Event('input', {bubbles: true}));
            (function wait() {
              if (/match/.test(st.textContent)) done([performance.now() - t0, st.textContent]);
              else setTimeout(wait, 5);
            })();""", "args": [query]})
        size = os.path.getsize(path) / 1048576
        print(f"  {'HTML in Chromium':42} {size:.1f} MB: first contentful paint "
              f"{paint:.0f} ms, load event {loaded * 1000:.0f} ms, list ready {ready:.0f} ms")
        if search:
            # The search is debounced by 120 ms in the page; that wait is included.
            print(f"  {'search ' + repr(query):42} {search[0]:.0f} ms ({search[1]})")
        call(base, "DELETE", s)
    finally:
        driver.kill()
        driver.wait()
        shutil.rmtree(profile, ignore_errors=True)


if __name__ == "__main__":
    main()
