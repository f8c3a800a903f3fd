#!/usr/bin/env python3
"""Compare streamlr with Vowpal Wabbit under the same delayed-label protocol.

Both learners see the same stream: the events and labels written by `streamlr simulate`, merged by
time (at equal times the event first). For Vowpal Wabbit every event becomes an unlabelled
(predict-only) example at event time and, when its label arrives, the labelled example at label
time. streamlr runs `streamlr replay` on its defaults. Both sets of predictions (the ones made at
event time, before the label was learned) are scored here with the same code: log loss, exact AUC
(scikit-learn), expected calibration error (10 equal-width bins).

Usage:
  python3 scripts/compare_vw.py --streamlr target/release/streamlr --workdir out/vw \
      [--count 300000] [--drift-at 150000] [--seed 1] [--vw-args "--loss_function logistic -b 20"]
"""

import argparse
import heapq
import json
import math
import os
import subprocess
import sys
import time

import numpy as np
from sklearn.metrics import roc_auc_score


def log_loss(p, y):
    p = np.clip(p, 1e-15, 1 - 1e-15)
    return float(np.mean(-(y * np.log(p) + (1 - y) * np.log(1 - p))))


def ece(p, y, bins=10):
    idx = np.minimum((p * bins).astype(int), bins - 1)
    total = 0.0
    for b in range(bins):
        m = idx == b
        if m.any():
            total += m.sum() / len(p) * abs(p[m].mean() - y[m].mean())
    return float(total)


def metrics(p, y):
    return {"n": int(len(p)), "log_loss": log_loss(p, y), "auc": float(roc_auc_score(y, p)), "ece": ece(p, y)}


def vw_features(ev):
    num, cat = [], []
    for k, v in ev["features"].items():
        if v is None:
            cat.append(f"{k}=missing")
        elif isinstance(v, bool):
            if v:
                num.append(k)
        elif isinstance(v, (int, float)):
            num.append(f"{k}:{v}")
        else:
            cat.append(f"{k}={v}".replace(" ", "_").replace("|", "_").replace(":", "_"))
    return "|n " + " ".join(num) + " |c " + " ".join(cat)


def merged(events_path, labels_path):
    """Yields ("event", ts, obj) and ("label", ts, obj) in merge order (event first on ties)."""
    def read(path, kind, rank):
        for i, line in enumerate(open(path)):
            o = json.loads(line)
            yield (o.get("ts", 0), rank, i, kind, o)
    for ts, _, _, kind, o in heapq.merge(read(events_path, "event", 0), read(labels_path, "label", 1)):
        yield kind, ts, o


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--streamlr", required=True)
    ap.add_argument("--workdir", required=True)
    ap.add_argument("--count", type=int, default=300_000)
    ap.add_argument("--drift-at", type=int, default=150_000)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--vw-args", default="--loss_function logistic -b 20")
    ap.add_argument("--config", default=None, help="streamlr config file (default: built-in defaults)")
    a = ap.parse_args()
    os.makedirs(a.workdir, exist_ok=True)
    ev, lb, truth = (os.path.join(a.workdir, n) for n in ("events.jsonl", "labels.jsonl", "truth.jsonl"))
    subprocess.run([a.streamlr, "simulate", "--events-out", ev, "--labels-out", lb, "--truth-out", truth,
                    "--count", str(a.count), "--drift-at", str(a.drift_at), "--seed", str(a.seed)], check=True)

    labels = {}
    for line in open(lb):
        o = json.loads(line)
        labels[o["id"]] = int(o["label"])

    # Vowpal Wabbit: predict-only example at event time, labelled example at label time.
    vw_in = os.path.join(a.workdir, "vw_input.txt")
    order = []  # for each VW line: event id if it is the predict-only example, else None
    feats = {}
    with open(vw_in, "w") as f:
        for kind, _, o in merged(ev, lb):
            if kind == "event":
                x = vw_features(o)
                feats[o["id"]] = x
                f.write(x + "\n")
                order.append(o["id"])
            else:
                x = feats.pop(o["id"], None)
                if x is None:
                    continue
                f.write(("1 " if o["label"] else "-1 ") + x + "\n")
                order.append(None)
    vw_pred = os.path.join(a.workdir, "vw_predictions.txt")
    t0 = time.time()
    subprocess.run([sys.executable, "-m", "vowpalwabbit", "-d", vw_in, "--link", "logistic", "-p", vw_pred,
                    "--quiet"] + a.vw_args.split(), check=True)
    vw_secs = time.time() - t0
    vw_p, vw_y = [], []
    for eid, line in zip(order, open(vw_pred)):
        if eid is not None and eid in labels:
            vw_p.append(float(line.split()[0]))
            vw_y.append(labels[eid])

    # streamlr replay on its defaults.
    pred = os.path.join(a.workdir, "streamlr_predictions.jsonl")
    report = os.path.join(a.workdir, "streamlr_report.json")
    cmd = [a.streamlr, "replay", "--events", ev, "--labels", lb, "--predictions", pred, "--report", report]
    if a.config:
        cmd += ["--config", a.config]
    t0 = time.time()
    subprocess.run(cmd, check=True)
    sl_secs = time.time() - t0
    sl_p, sl_y = [], []
    for line in open(pred):
        o = json.loads(line)
        if o["id"] in labels:
            sl_p.append(o["score"])
            sl_y.append(labels[o["id"]])

    tr_p, tr_y = [], []
    for line in open(truth):
        o = json.loads(line)
        if o["id"] in labels:
            tr_p.append(o["p"])
            tr_y.append(labels[o["id"]])

    result = {
        "stream": {"events": a.count, "drift_at": a.drift_at, "seed": a.seed, "positives": int(sum(tr_y))},
        "true_model": metrics(np.array(tr_p), np.array(tr_y)),
        "vowpal_wabbit": dict(metrics(np.array(vw_p), np.array(vw_y)), args=a.vw_args, seconds=round(vw_secs, 2)),
        "streamlr": dict(metrics(np.array(sl_p), np.array(sl_y)), seconds=round(sl_secs, 2)),
    }
    with open(os.path.join(a.workdir, "comparison.json"), "w") as f:
        json.dump(result, f, indent=2)
    print(f"{'learner':<16}{'log loss':>10}{'AUC':>8}{'ECE':>8}")
    for name in ("true_model", "vowpal_wabbit", "streamlr"):
        m = result[name]
        print(f"{name:<16}{m['log_loss']:>10.4f}{m['auc']:>8.4f}{m['ece']:>8.4f}")
    sl, vw = result["streamlr"], result["vowpal_wabbit"]
    ok = sl["log_loss"] < vw["log_loss"] and sl["auc"] > vw["auc"]
    print("streamlr beats Vowpal Wabbit on log loss and AUC" if ok else "streamlr does NOT beat Vowpal Wabbit")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
