"""Reference for bench/ingest.sh: gensim Word2Vec in its online mode on the
same click log: sessions (30-minute gap per user) are fed in chunks of 10,000
clicks (or the third argument's count), each chunk through
build_vocab(update=True) + train, as a streaming updater built on gensim would. Prints clicks/s. Settings match recalld's
defaults: skip-gram, dim 64, window 5, 5 negatives, min_count 1."""
import json
import sys
import time

from gensim.models import Word2Vec

path, workers = sys.argv[1], int(sys.argv[2])
CHUNK = int(sys.argv[3]) if len(sys.argv) > 3 else 10000
GAP = 30 * 60 * 1000
last = {}   # user -> last click time
frag = {}   # user -> the user's session fragment in the current chunk
chunks, cur, n = [], [], 0
for line in open(path):
    e = json.loads(line)
    u, i, ts = str(e["user_id"]), str(e["item_id"]), e["ts"]
    if u not in frag or ts - last[u] > GAP:
        frag[u] = [i]
        cur.append(frag[u])
    else:
        frag[u].append(i)
    last[u] = ts
    n += 1
    if n % CHUNK == 0:
        # A session that goes on continues as a new sentence in the next chunk.
        chunks.append(cur)
        cur, frag = [], {}
if cur:
    chunks.append(cur)

model = Word2Vec(vector_size=64, window=5, negative=5, sg=1, min_count=1, workers=workers,
                 sample=0)
t0 = time.time()
first = True
for c in chunks:
    model.build_vocab(c, update=not first)
    first = False
    model.train(c, total_examples=len(c), epochs=1)
dt = time.time() - t0
print(round(n / dt))
