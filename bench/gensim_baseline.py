#!/usr/bin/python3
"""gensim skip-gram baseline on a split written by `recalld-eval --dump-split DIR`.

Evaluates exactly the predictions recalld-eval made (same training sessions,
targets, query items, excluded items and AUC negatives) with the metric
definitions of include/recalld/eval.h:

  query     = mean of the L2-normalised vectors of the query items the model
              knows, normalised; none known -> popularity fallback
  top 50    = catalog items by cosine, excluded items removed, completed with
              the most popular catalog items when shorter
  HR@k, MRR@50, coverage@50 (share of the catalog recalled at least once),
  avg_position (mean 1-based rank over hits), AUC (target vs the dumped
  negatives, ties 1/2; an item without a vector scores -2; a fallback scores
  by training count).

Prints one JSON object {"<setting name>": {metrics..., "setting": "...",
"train_seconds": s, "clicks_per_s": x}} on stdout; progress on stderr.
Usage: gensim_baseline.py DIR [--dim N --window N --negatives N --epochs N]
       [--threads N] [--grid] [--seed N]
"""
import argparse
import json
import sys
import time

import numpy as np
from gensim.models import Word2Vec

K = 50


def load(d):
    with open(f"{d}/train.txt") as f:
        sessions = [line.split() for line in f if line.strip()]
    pop, count = [], {}
    with open(f"{d}/catalog.tsv") as f:
        for line in f:
            item, c = line.rstrip("\n").split("\t")
            pop.append(item)
            count[item] = int(c)
    positions = []
    with open(f"{d}/positions.tsv") as f:
        for line in f:
            target, q, x, neg = line.rstrip("\n").split("\t")
            positions.append((target, q.split(), x.split(), neg.split()))
    return sessions, pop, count, positions


def popular(pop, excluded, n):
    out = []
    for it in pop:
        if it not in excluded:
            out.append(it)
            if len(out) == n:
                break
    return out


def evaluate(wv, pop, count, positions):
    keys = list(wv.index_to_key)
    index = {k: i for i, k in enumerate(keys)}
    mat = wv.vectors / np.maximum(np.linalg.norm(wv.vectors, axis=1, keepdims=True), 1e-12)
    hits = {10: 0, 20: 0, 50: 0}
    rr = rank_sum = auc_sum = 0.0
    nhits = 0
    seen = set()
    catalog = set(pop)
    for target, q, x, neg in positions:
        excluded = set(x)
        rows = [index[i] for i in q if i in index]
        if rows:
            qv = mat[rows].sum(axis=0)
            qv /= max(np.linalg.norm(qv), 1e-12)
            scores = mat @ qv
            masked = scores.copy()
            for i in excluded:
                if i in index:
                    masked[index[i]] = -np.inf
            m = min(K, len(keys))
            top = np.argpartition(-masked, m - 1)[:m]
            top = top[np.argsort(-masked[top], kind="stable")]
            lst = [keys[r] for r in top if masked[r] != -np.inf]
            score = lambda it: float(scores[index[it]]) if it in index else -2.0
        else:
            lst = []
            score = lambda it: float(count.get(it, 0))
        if len(lst) < K:
            have = set(lst)
            lst += [i for i in popular(pop, excluded | have, K) if i not in have][: K - len(lst)]
        seen.update(lst)
        if target in lst:
            r = lst.index(target) + 1
            for k in hits:
                hits[k] += r <= k
            rr += 1.0 / r
            rank_sum += r
            nhits += 1
        ts = score(target)
        if neg:
            below = sum(1.0 if score(i) < ts else 0.5 if score(i) == ts else 0.0 for i in neg)
            auc_sum += below / len(neg)
        else:
            auc_sum += 0.5
    n = max(len(positions), 1)
    return {
        "hr@10": hits[10] / n,
        "hr@20": hits[20] / n,
        "hr@50": hits[50] / n,
        "mrr@50": rr / n,
        "coverage@50": len(seen & catalog) / max(len(catalog), 1),
        "avg_position": rank_sum / nhits if nhits else 0.0,
        "auc": auc_sum / n,
        "predictions": len(positions),
    }


def run(name, params, sessions, pop, count, positions, threads, seed):
    p = dict(sg=1, workers=threads, seed=seed)
    p.update(params)
    t0 = time.time()
    model = Word2Vec(sentences=sessions, **p)
    train_s = time.time() - t0
    res = evaluate(model.wv, pop, count, positions)
    clicks = sum(len(s) for s in sessions) * p.get("epochs", 5)
    res["seconds"] = time.time() - t0
    res["train_seconds"] = train_s
    res["clicks_per_s"] = clicks / train_s if train_s > 0 else 0.0
    res["setting"] = " ".join(f"{k}={v}" for k, v in sorted(params.items()))
    print(f"gensim {name}: {res['setting']}: hr@50 {res['hr@50']:.4f} "
          f"in {res['seconds']:.1f} s", file=sys.stderr)
    return res


# Settings of the grid: gensim's skip-gram over windows, epochs, exponents and
# subsampling (min_count 1: every training item gets a vector).
GRID = [
    dict(window=5, epochs=5, min_count=1),
    dict(window=10, epochs=20, min_count=1),
    dict(window=20, epochs=20, min_count=1),
    dict(window=50, epochs=20, min_count=1),
    dict(window=20, epochs=50, min_count=1),
    dict(window=20, epochs=20, min_count=1, ns_exponent=-0.5),
    dict(window=20, epochs=20, min_count=1, ns_exponent=0.0),
    dict(window=5, epochs=50, min_count=1),
    dict(window=3, epochs=100, min_count=1),
    dict(window=20, epochs=20, min_count=1, sample=1e-5),
    dict(window=10, epochs=100, min_count=1, negative=10),
]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("dir")
    ap.add_argument("--dim", type=int, default=64)
    ap.add_argument("--window", type=int, default=5)
    ap.add_argument("--negatives", type=int, default=5)
    ap.add_argument("--epochs", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--grid", action="store_true", help="also run the 11-setting grid")
    a = ap.parse_args()
    sessions, pop, count, positions = load(a.dir)
    args = (sessions, pop, count, positions, a.threads, a.seed)
    out = {"gensim-defaults": run("defaults", {}, *args)}
    matched = dict(vector_size=a.dim, window=a.window, negative=a.negatives, epochs=a.epochs,
                   min_count=1, sample=0)
    out["gensim-matched"] = run("matched", matched, *args)
    if a.grid:
        best = None
        for i, g in enumerate(GRID):
            r = run(f"grid {i + 1}/{len(GRID)}", dict(g, vector_size=a.dim), *args)
            if best is None or r["hr@50"] > best["hr@50"]:
                best = r
        out["gensim-best"] = best
    json.dump(out, sys.stdout)
    print()


if __name__ == "__main__":
    main()
