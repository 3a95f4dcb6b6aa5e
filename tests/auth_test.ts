/**
 * Unit tests of the brakes in lib/outputs/auth.ts: when an address may be checked again, the
 * global failure budget (with an injected clock), and the check queue (with short real
 * delays). The FailureThrottle basics and passwordMatches are tested with the listener.
 */
import assert from "node:assert/strict";
import { CheckQueue, FailureBudget, FailureThrottle } from "../lib/outputs/auth.ts";

Deno.test("FailureThrottle.readyAt: when the next check of an address may run", () => {
  const th = new FailureThrottle({ baseMs: 250, maxMs: 8000, forgetMs: 60_000 });
  assert.equal(th.readyAt("a", 1000), 1000, "no failures: at once");
  th.failure("a", 1000);
  assert.equal(th.readyAt("a", 1000), 1250);
  th.failure("a", 1250);
  assert.equal(th.readyAt("a", 1300), 1750);
  assert.equal(th.readyAt("b", 1300), 1300, "per address");
  assert.equal(th.readyAt("a", 1250 + 60_000), 1250 + 60_000, "forgotten after forgetMs");
  th.success("a");
  assert.equal(th.readyAt("a", 1300), 1300);
});

Deno.test("FailureBudget: a token bucket over all addresses, refilled over time", () => {
  const b = new FailureBudget({ perSecond: 10, burst: 3 }, 0);
  assert.deepEqual([b.take(0), b.take(0), b.take(0), b.take(0)], [true, true, true, false]);
  assert.equal(b.waitMs(0), 100, "one token per 100 ms");
  assert.equal(b.take(50), false);
  assert.equal(b.waitMs(50), 50);
  assert.equal(b.take(100), true);
  assert.equal(b.take(100), false);
  b.refund(100); // a success gives its token back
  assert.equal(b.take(100), true);
  // A long quiet period refills only up to the burst.
  assert.deepEqual([b.take(60_000), b.take(60_000), b.take(60_000)], [true, true, true]);
  assert.equal(b.take(60_000), false);
  // A clock stepping back takes nothing away and gives nothing.
  assert.equal(b.take(30_000), false);
  assert.equal(b.take(60_100), true);
  b.refund(60_100);
  b.refund(60_100);
  b.refund(60_100);
  b.refund(60_100);
  assert.equal([0, 1, 2, 3].filter(() => b.take(60_100)).length, 3, "refunds stop at the burst");
});

/** Runs `verify` results through `q` for `key`, recording when each settled. */
function timedChecks(q: CheckQueue, key: string, results: (string | null)[], t0: number) {
  return results.map(async (r) => {
    const outcome = await q.check(key, () => r);
    return { kind: outcome.kind, at: performance.now() - t0 };
  });
}

Deno.test("CheckQueue: one key's checks run one at a time, spaced; other keys are not held up", async () => {
  const q = new CheckQueue({ throttle: new FailureThrottle({ baseMs: 150, maxMs: 8000 }) });
  try {
    const t0 = performance.now();
    const a = timedChecks(q, "a", ["wrong", "wrong", "wrong"], t0);
    const [b] = timedChecks(q, "b", [null], t0);
    const bDone = await b;
    assert.equal(bDone.kind, "success");
    assert.ok(bDone.at < 100, `b checked after ${bDone.at} ms`);
    const done = await Promise.all(a);
    assert.deepEqual(done.map((d) => d.kind), ["failure", "failure", "failure"]);
    // About 0, 150 and 450 ms.
    assert.ok(done[0].at < 100, JSON.stringify(done));
    assert.ok(done[1].at - done[0].at >= 120, JSON.stringify(done));
    assert.ok(done[2].at - done[1].at >= 270, JSON.stringify(done));
  } finally {
    q.close();
  }
});

Deno.test("CheckQueue: the failure budget caps failures over all keys; successes pass", async () => {
  const budget = new FailureBudget({ perSecond: 10, burst: 2 });
  const q = new CheckQueue({ budget });
  try {
    const t0 = performance.now();
    const [ok] = timedChecks(q, "s", [null], t0);
    const fails = ["k1", "k2", "k3", "k4"].map((k) => timedChecks(q, k, ["wrong"], t0)[0]);
    const done = (await Promise.all(fails)).map((d) => d.at).sort((x, y) => x - y);
    assert.equal((await ok).kind, "success");
    // Two at once (the burst; the success gave its token back), then one per 100 ms.
    assert.ok(done[1] < 60, done.join(", "));
    assert.ok(done[2] >= 80, done.join(", "));
    assert.ok(done[3] >= 180, done.join(", "));
  } finally {
    q.close();
  }
});

Deno.test("CheckQueue: past its bounds the busiest key's oldest line is dropped; close settles all", async () => {
  const throttle = new FailureThrottle({ baseMs: 60_000, maxMs: 60_000 });
  for (const k of ["a", "b", "c"]) throttle.failure(k); // every check waits a minute
  const q = new CheckQueue({ throttle, maxWaiting: 3, maxPerKey: 2 });
  const never = () => {
    throw new Error("checked although it should wait a minute");
  };
  const a1 = q.check("a", never);
  const a2 = q.check("a", never);
  const a3 = q.check("a", never); // a is at its limit: a1 goes
  assert.deepEqual(await a1, { kind: "dropped" });
  const b1 = q.check("b", never); // full (a2, a3, b1)
  const c1 = q.check("c", never); // a has the most: a2 goes
  assert.deepEqual(await a2, { kind: "dropped" });
  assert.equal(q.size, 3);
  q.close();
  for (const p of [a3, b1, c1]) assert.deepEqual(await p, { kind: "closed" });
  assert.deepEqual(await q.check("a", never), { kind: "closed" }, "closed for good");
});

Deno.test("CheckQueue: a check that throws rejects alone; the key's next line is still checked", async () => {
  const q = new CheckQueue();
  try {
    const broken = q.check("a", () => {
      throw new Error("bug");
    });
    const next = q.check("a", () => null);
    await assert.rejects(broken, /bug/);
    assert.deepEqual(await next, { kind: "success" });
  } finally {
    q.close();
  }
});
