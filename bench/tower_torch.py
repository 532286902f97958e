#!/usr/bin/python3
"""PyTorch reference of recalld's two-tower training step (src/tower*.c), the
SAME architecture and sizes, for bench/tower.sh to compare examples/s.

Item tower: [E_id(262144x16), E_city(4096x8), E_cate(4096x8), w2v(64) normalised]
  -> Linear(96,128) ReLU -> Linear(128,64) -> L2 norm.
User tower: ctx = [E_dev(1024x8), stats(36)]; tags (2 per user, E_tag 16384x16)
  pooled by attention with query Linear(44,16)(ctx); 50 clicks (item inputs,
  same tables) pooled by attention with query Linear(60,96)([ctx, tagpool]),
  scale 1/sqrt(dim), plus the learned recency bias r[rank from the newest]
  (50 floats, dense, initialised to 0) in the click scores; u_in = [clickpool, tagpool, ctx] (156) -> Linear(156,128)
  ReLU -> Linear(128,64) -> L2 norm.
Loss: sampled softmax of cos/0.05 over the positive, 128 easy negatives shared
by the batch and 4 hard ones per example, logQ corrections subtracted,
negatives equal to the positive masked. Adam (dense) + SparseAdam (embedding
rows), lr 0.002, batch 256. Inputs are synthetic, of the same shapes, made ahead
(8 batches cycled) so that only the step is timed.

  /usr/bin/python3 bench/tower_torch.py [--seconds S] [--threads N]
Prints one line: "torch  N threads  E examples  S s  X examples/s".
"""
import argparse
import math
import sys
import time

try:
    import torch
    import torch.nn as nn
    import torch.nn.functional as F
except ImportError:
    print("PyTorch not installed: skipped")
    sys.exit(0)

B, D, H, W2V, C, NT = 256, 64, 128, 64, 50, 2
NE, NH, T = 128, 4, 0.05
ID_B, ID_D, CITY_B, CITY_D, CATE_B, CATE_D = 262144, 16, 4096, 8, 4096, 8
DEV_B, DEV_D, TAG_B, TAG_D, NSTATS = 1024, 8, 16384, 16, 32 + 4
DI = ID_D + CITY_D + CATE_D + W2V
CTX = DEV_D + NSTATS
NITEMS = 5000


class Tower(nn.Module):
    def __init__(self):
        super().__init__()
        self.e_id = nn.Embedding(ID_B, ID_D, sparse=True)
        self.e_city = nn.Embedding(CITY_B, CITY_D, sparse=True)
        self.e_cate = nn.Embedding(CATE_B, CATE_D, sparse=True)
        self.e_dev = nn.Embedding(DEV_B, DEV_D, sparse=True)
        self.e_tag = nn.Embedding(TAG_B, TAG_D, sparse=True)
        for e in (self.e_id, self.e_city, self.e_cate, self.e_dev, self.e_tag):
            nn.init.uniform_(e.weight, -0.1, 0.1)
        self.i1, self.i2 = nn.Linear(DI, H), nn.Linear(H, D)
        self.u1, self.u2 = nn.Linear(DI + TAG_D + CTX, H), nn.Linear(H, D)
        self.q = nn.Linear(CTX + TAG_D, DI)
        self.tq = nn.Linear(CTX, TAG_D)
        self.rec = nn.Parameter(torch.zeros(C))  # r[k], k = rank from the newest click

    def item_x(self, ids, city, cate, w2v):
        return torch.cat([self.e_id(ids), self.e_city(city), self.e_cate(cate),
                          F.normalize(w2v, dim=-1)], dim=-1)

    def item(self, ids, city, cate, w2v):
        x = self.item_x(ids, city, cate, w2v)
        return F.normalize(self.i2(F.relu(self.i1(x))), dim=-1)

    @staticmethod
    def attend(q, x, scale, bias=None):
        s = torch.einsum("bd,bkd->bk", q, x) * scale
        if bias is not None:
            s = s + bias
        a = torch.softmax(s, dim=-1)
        return torch.einsum("bk,bkd->bd", a, x)

    def user(self, c_ids, c_city, c_cate, c_w2v, dev, stats, tags):
        ctx = torch.cat([self.e_dev(dev), stats], dim=-1)
        t = self.e_tag(tags)
        tagpool = self.attend(self.tq(ctx), t, 1.0 / math.sqrt(TAG_D))
        qin = torch.cat([ctx, tagpool], dim=-1)
        x = self.item_x(c_ids, c_city, c_cate, c_w2v)
        # Clicks are oldest first and every user has C: click j's rank is C-1-j.
        clickpool = self.attend(self.q(qin), x, 1.0 / math.sqrt(DI), self.rec.flip(0))
        u = torch.cat([clickpool, tagpool, ctx], dim=-1)
        return F.normalize(self.u2(F.relu(self.u1(u))), dim=-1)


def batch(w2v_table, gen):
    def items(*shape):
        it = torch.randint(0, NITEMS, shape, generator=gen)
        return (it * 52 + 1, it % 64 + 1, it % 16 + 1, w2v_table[it], it)
    clicks = items(B, C)
    pos = items(B)
    easy = items(NE)
    hard = items(B, NH)
    dev = torch.randint(1, DEV_B, (B,), generator=gen)
    tags = torch.randint(1, TAG_B, (B, NT), generator=gen)
    stats = torch.rand(B, NSTATS, generator=gen)
    easy_corr = torch.rand(NE, generator=gen)
    hard_corr = torch.rand(B, NH, generator=gen)
    return clicks, pos, easy, hard, dev, tags, stats, easy_corr, hard_corr


def step(model, opts, b):
    clicks, pos, easy, hard, dev, tags, stats, easy_corr, hard_corr = b
    u = model.user(*clicks[:4], dev, stats, tags)
    vp = model.item(*pos[:4])
    ve = model.item(*easy[:4])
    vh = model.item(*(t.reshape(B * NH, *t.shape[2:]) for t in hard[:4])).reshape(B, NH, D)
    lp = (u * vp).sum(-1, keepdim=True) / T
    le = u @ ve.t() / T - easy_corr
    le = le.masked_fill(easy[4].unsqueeze(0) == pos[4].unsqueeze(1), float("-inf"))
    lh = torch.einsum("bd,bkd->bk", u, vh) / T - hard_corr
    lh = lh.masked_fill(hard[4] == pos[4].unsqueeze(1), float("-inf"))
    logits = torch.cat([lp, le, lh], dim=1)
    loss = F.cross_entropy(logits, torch.zeros(B, dtype=torch.long))
    for o in opts:
        o.zero_grad()
    loss.backward()
    for o in opts:
        o.step()
    return loss.item()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(1)
    gen = torch.Generator().manual_seed(1)
    model = Tower()
    sparse = [p for n, p in model.named_parameters() if n.startswith("e_")]
    dense = [p for n, p in model.named_parameters() if not n.startswith("e_")]
    opts = [torch.optim.Adam(dense, lr=0.002), torch.optim.SparseAdam(sparse, lr=0.002)]
    w2v_table = torch.randn(NITEMS, W2V, generator=gen)
    # Inputs are made ahead and cycled: only the training step is timed (the
    # C figure also includes building its inputs from the click history).
    pool = [batch(w2v_table, gen) for _ in range(8)]
    for b in pool[:3]:  # warm-up: allocator, kernels
        step(model, opts, b)
    n, loss, t0 = 0, 0.0, time.perf_counter()
    while time.perf_counter() - t0 < a.seconds:
        loss = step(model, opts, pool[(n // B) % len(pool)])
        n += B
    s = time.perf_counter() - t0
    print(f"torch  {a.threads} threads  {n} examples  {s:.2f} s  {n / s:.0f} examples/s  "
          f"loss {loss:.3f}")


if __name__ == "__main__":
    main()
