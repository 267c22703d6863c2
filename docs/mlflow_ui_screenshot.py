"""Screenshot the MLflow UI's chart view, runs grouped by strategy, in headless Chromium.

    python docs/mlflow_ui_screenshot.py --uri sqlite:///mlflow.db --experiment screening \
        --out docs/mlflow_ui_grouped.png

Starts ``mlflow server`` on 127.0.0.1 (a free port), drives Debian's ``chromium`` through
the DevTools protocol (``websocket-client``): it opens the experiment once, sets the UI
state the page keeps in localStorage (group by the ``strategy`` tag, the chart view, one
line chart with ``summary/<metric>/{lower,mean,upper}``), reloads, waits for the charts and
saves a PNG. Everything it starts is stopped at the end. Not part of the package.
"""

from __future__ import annotations

import argparse
import base64
import json
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import websocket
from mlflow.tracking import MlflowClient

CLICK = "(() => { const b = document.querySelector('[data-component-id=\"%s\"]'); " \
        "if (b) b.click(); return !!b; })()"


EXISTS = "!!document.querySelector('[data-component-id=\"%s\"]')"


HIDE_PARENT = "tags.strategy != '(sweep)' and tags.strategy != 'full'"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_http(url: str, timeout: float) -> None:
    end = time.time() + timeout
    while time.time() < end:
        try:
            with urllib.request.urlopen(url, timeout=5):
                return
        except OSError:
            time.sleep(1)
    raise TimeoutError(f"{url} did not answer in {timeout:.0f}s")


class Page:
    """A minimal DevTools-protocol client for one tab."""

    def __init__(self, ws_url: str) -> None:
        self.ws = websocket.create_connection(ws_url, timeout=120, suppress_origin=True)
        self._id = 0

    def call(self, method: str, **params: object) -> dict:
        self._id += 1
        self.ws.send(json.dumps({"id": self._id, "method": method, "params": params}))
        while True:
            msg = json.loads(self.ws.recv())
            if msg.get("id") == self._id:
                if "error" in msg:
                    raise RuntimeError(f"{method}: {msg['error']}")
                return msg.get("result", {})

    def wait_for(self, expression: str, timeout: float) -> None:
        """Poll ``expression`` until it is truthy; TimeoutError after ``timeout`` seconds."""
        end = time.time() + timeout
        while not self.eval(expression):
            if time.time() > end:
                raise TimeoutError(f"the page never showed {expression}")
            time.sleep(1)

    def eval(self, expression: str) -> object:
        out = self.call("Runtime.evaluate", expression=expression, returnByValue=True,
                        awaitPromise=True)
        return out.get("result", {}).get("value")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--uri", required=True, help="tracking store, e.g. sqlite:///mlflow.db")
    ap.add_argument("--experiment", required=True)
    ap.add_argument("--metric", default="test/balanced_accuracy")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--size", default="1600,1000")
    ap.add_argument("--wait", type=float, default=10.0,
                    help="extra seconds for the charts to draw once they exist")
    ap.add_argument("--fullscreen", action="store_true", help="open the summary chart large")
    ap.add_argument("--hide-parent", action="store_true",
                    help="show neither the sweep's parent nor full-data runs (by strategy tag)")
    ap.add_argument("--dump-state", action="store_true", help="print the UI's localStorage")
    args = ap.parse_args()
    exp = MlflowClient(args.uri).get_experiment_by_name(args.experiment)
    if exp is None:
        print(f"error: experiment {args.experiment!r} not in {args.uri}", file=sys.stderr)
        return 2
    port, cdp_port = free_port(), free_port()
    base = f"http://127.0.0.1:{port}"
    procs = [subprocess.Popen([sys.executable, "-m", "mlflow", "server", "--backend-store-uri",
                               args.uri, "--host", "127.0.0.1", "--port", str(port),
                               "--workers", "1"], stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)]
    with tempfile.TemporaryDirectory() as profile:
        try:
            wait_http(base + "/health", 180)
            width, height = args.size.split(",")
            procs.append(subprocess.Popen(
                ["chromium", "--headless", "--no-sandbox", "--disable-gpu",
                 f"--remote-debugging-port={cdp_port}", "--remote-debugging-address=127.0.0.1",
                 f"--remote-allow-origins=http://127.0.0.1:{cdp_port}",
                 f"--user-data-dir={profile}", f"--window-size={width},{height}",
                 "about:blank"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
            wait_http(f"http://127.0.0.1:{cdp_port}/json/version", 60)
            with urllib.request.urlopen(f"http://127.0.0.1:{cdp_port}/json/list") as resp:
                tab = next(t for t in json.load(resp) if t["type"] == "page")
            page = Page(tab["webSocketDebuggerUrl"])
            page.call("Emulation.setDeviceMetricsOverride", width=int(width), height=int(height),
                      deviceScaleFactor=1, mobile=False)
            url = (f"{base}/#/experiments/{exp.experiment_id}/runs?"
                   "compareRunsMode=CHART&workflowType=machine_learning")
            # set the UI state from a plain page of the same origin (no app code to overwrite it)
            page.call("Page.navigate", url=base + "/health")
            time.sleep(2)
            page.eval(set_state_js(exp.experiment_id, args.metric,
                                   HIDE_PARENT if args.hide_parent else ""))
            page.call("Page.navigate", url=url)
            page.wait_for(EXISTS % "fullscreen_button_chartcard", 240)
            time.sleep(args.wait)
            if args.dump_state:
                print(page.eval("JSON.stringify(Object.fromEntries(Object.entries(localStorage)))"))
            page.eval(CLICK % "mlflow.assistant.chat_panel.close")
            if args.fullscreen:
                page.eval(CLICK % "fullscreen_button_chartcard")  # the summary chart, enlarged
                page.wait_for("document.querySelectorAll('[role=dialog] .main-svg').length > 0",
                              120)
                time.sleep(args.wait / 2)
            shot = page.call("Page.captureScreenshot", format="png")
            args.out.write_bytes(base64.b64decode(shot["data"]))
            print(f"wrote {args.out}")
        finally:
            for proc in reversed(procs):
                proc.terminate()
                try:
                    proc.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    proc.kill()
    return 0


def set_state_js(experiment_id: str, metric: str, search: str = "") -> str:
    """JS that writes the experiment page's persisted UI state: chart view grouped by strategy.

    One line chart holds ``summary/<metric>/{lower,mean,upper,full_data}``; the page keeps
    this state in localStorage under ``MLflowLocalStorage-1.1-ExperimentPage-["<id>"]-...``.
    """
    keys = [f"summary/{metric}/{s}" for s in ("upper", "mean", "lower", "full_data")]
    section = "al_sim_summary_section"
    state = {
        "searchFilter": search, "orderByKey": "attributes.start_time", "orderByAsc": False,
        "startTime": "ALL", "lifecycleFilter": "Active", "datasetsFilter": [],
        "modelVersionFilter": "All Runs", "selectedColumns": [], "columnOrder": [],
        "columnWidths": {}, "runsExpanded": {}, "runsPinned": [], "runsHidden": [],
        "runsVisibilityMap": {}, "runsHiddenMode": "SHOW_ALL",
        "compareRunCharts": [{
            "uuid": "al_sim_summary_chart", "type": "LINE", "runsCountToCompare": 100,
            "metricSectionId": section, "deleted": False, "isGenerated": False,
            "displayName": f"{metric}: mean and mean ± std per strategy (summary runs)",
            "metricKey": keys[1], "selectedMetricKeys": keys, "scaleType": "linear",
            "xAxisKey": "step", "xAxisScaleType": "linear", "lineSmoothness": 0,
            "selectedXAxisMetricKey": "", "displayPoints": True, "range": {}}],
        "compareRunSections": [{"uuid": section, "name": "al_sim summary", "display": True,
                                "isReordered": True, "deleted": False, "isGenerated": False}],
        "viewMaximized": False, "runListHidden": False, "isAccordionReordered": True,
        "useGroupedValuesInCharts": True, "hideEmptyCharts": True,
        "groupBy": {"aggregateFunction": "average",
                    "groupByKeys": [{"mode": "tag", "groupByData": "strategy"}]},
        "groupsExpanded": {}, "autoRefreshEnabled": False,
        "globalLineChartConfig": {"xAxisKey": "step", "lineSmoothness": 0,
                                  "selectedXAxisMetricKey": ""}}
    key = f'MLflowLocalStorage-1.1-ExperimentPage-["{experiment_id}"]-ReactComponentState'
    return (f"localStorage.setItem({json.dumps(key)}, {json.dumps(json.dumps(state))});"
            "localStorage.setItem('mlflow.assistant.panelOpen_v1', 'false');"
            "localStorage.setItem('mlflow.assistant.fab.autoOpenedOnFirstLoad_v1', 'true');")


if __name__ == "__main__":
    raise SystemExit(main())
