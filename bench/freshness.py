"""The launch half of bench/freshness.sh: replays a launch's reservations at the seeds' pace
(scaled), each by a new user, with page views by viewers who do not all reserve, and measures
how long each reservation takes to show in the brand's launch report.

    freshness.py BROKERS TOPIC DASHBOARD TOKEN CAMPAIGN START_MS SCALE SECONDS

A reservation "shows" at the first poll of `GET /api/v1/campaigns/{id}/launch` whose count of
reservers includes it (reservations are produced in order, each by a new user, so the k-th
shows once the report counts k). Its latency is from the moment it was handed to the Kafka
client to the moment that poll's answer arrived; polls run back to back (each answer waits on
the server), so the figure is at most one poll's round trip late. Prints one JSON object.
"""

import json
import sys
import threading
import time
import urllib.request

from confluent_kafka import Producer

BROKERS, TOPIC, DASHBOARD, TOKEN, CAMPAIGN = sys.argv[1:6]
START_MS = int(sys.argv[6])
SCALE = float(sys.argv[7])
SECONDS = float(sys.argv[8])

# The seeds: reservations by the end of each instant after the start (s), at scale 1.
PACE = [(0.0, 0), (1.0, 50_000), (60.0, 300_000), (600.0, 600_000), (1800.0, 1_000_000),
        (86400.0, 3_500_000)]


def due(t):
    """Reservations due by `t` seconds after the start (linear between the seeds' points)."""
    for (t0, n0), (t1, n1) in zip(PACE, PACE[1:]):
        if t <= t1:
            return int(SCALE * (n0 + (n1 - n0) * (t - t0) / (t1 - t0)))
    return int(SCALE * PACE[-1][1])


def reservers(body):
    r = json.loads(body)
    counts = [m["users"] for m in r.get("milestones", [])]
    counts += [c["users"] for c in r.get("curve", [])]
    return max(counts, default=0)


polls = []  # (monotonic time the answer arrived, reservers it counted)
stop_polling = threading.Event()


def poll():
    req = urllib.request.Request(f"http://{DASHBOARD}/api/v1/campaigns/{CAMPAIGN}/launch",
                                 headers={"Authorization": f"Bearer {TOKEN}"})
    while not stop_polling.is_set():
        try:
            with urllib.request.urlopen(req, timeout=30) as resp:
                body = resp.read()
            polls.append((time.monotonic(), reservers(body)))
        except urllib.error.HTTPError as e:
            if e.code != 404:  # 404: the campaign's tables are not published yet
                print(f"poll: {e.code} {e.read()[:200]!r}", file=sys.stderr)
            time.sleep(0.05)
        except OSError as e:
            print(f"poll: {e}", file=sys.stderr)
            time.sleep(0.2)


producer = Producer({"bootstrap.servers": BROKERS, "linger.ms": 5, "compression.type": "lz4",
                     "queue.buffering.max.messages": 1_000_000, "batch.num.messages": 10_000})
undelivered = []


def delivered(err, _msg):
    if err is not None:
        undelivered.append(str(err))


sent = []  # monotonic time each reservation was handed to the client
views = 0
# Wait for the launch: reservations are stamped with the time they are sent.
while time.time() * 1000 < START_MS:
    time.sleep(0.001)
poller = threading.Thread(target=poll, daemon=True)
poller.start()
begin = time.monotonic()
platforms = ["android", "ios", "android", "ios", "android", "pc", "web"]
while True:
    t = time.monotonic() - begin
    if t > SECONDS:
        break
    target = due(t)
    k = len(sent)
    if k >= target:
        producer.poll(0)
        time.sleep(0.0005)
        continue
    while k < target:
        user = 20_000_000_000 + k
        now_ms = int(time.time() * 1000)
        platform = platforms[k % len(platforms)]
        # A page view before each reservation, and one by a visitor who leaves.
        for viewer, vid in ((user, f"v{k}"), (30_000_000_000 + k, f"w{k}")):
            producer.produce(TOPIC, key=str(viewer), on_delivery=delivered, value=json.dumps({
                "event_id": f"{CAMPAIGN}-{vid}", "ts": now_ms, "user_id": viewer,
                "type": "page_view", "platform": platform, "campaign_id": CAMPAIGN}))
        views += 2
        producer.produce(TOPIC, key=str(user), on_delivery=delivered, value=json.dumps({
            "event_id": f"{CAMPAIGN}-r{k}", "ts": now_ms, "user_id": user, "type": "reserve",
            "platform": platform, "campaign_id": CAMPAIGN}))
        sent.append(time.monotonic())
        k += 1
        if k % 1000 == 0:
            producer.poll(0)
producer.flush(60)
total = len(sent)
# Until the report counts every reservation (or two minutes pass).
deadline = time.monotonic() + 120
while time.monotonic() < deadline and (not polls or polls[-1][1] < total):
    time.sleep(0.1)
stop_polling.set()
poller.join(timeout=35)

# The k-th reservation shows at the first poll counting at least k.
latencies = []
by_window = {}  # 10-second window of the launch -> its reservations' latencies
i = 0
for k, at in enumerate(sent, start=1):
    while i < len(polls) and (polls[i][1] < k or polls[i][0] < at):
        i += 1
    if i == len(polls):
        break
    latencies.append(polls[i][0] - at)
    by_window.setdefault(int((at - begin) // 10) * 10, []).append(polls[i][0] - at)
latencies.sort()


def pct(p, values=None):
    values = latencies if values is None else sorted(values)
    if not values:
        return None
    return round(values[min(len(values) - 1, int(p / 100 * len(values)))], 3)


print(json.dumps({
    "reservations": total,
    "page_views": views,
    "first_second": due(1.0),
    "shown": len(latencies),
    "final_count": polls[-1][1] if polls else None,
    "undelivered": len(undelivered),
    "polls": len(polls),
    "p50": pct(50), "p95": pct(95), "p99": pct(99),
    "max": round(latencies[-1], 3) if latencies else None,
    # Where the tail is: each 10 s of the launch, its reservations' p95 (the first 10 s
    # hold the first second's burst).
    "p95_by_10s": {w: pct(95, v) for w, v in sorted(by_window.items())},
}))
