/**
 * The NATS publisher when something goes wrong past connecting, against a real nats-server:
 * one JetStream acknowledgement lost (a proxy, tests/support/ack_dropping_proxy.ts, withholds
 * it once; the publisher waits out the ack timeout and resends from the head, and everything
 * must still be stored exactly once and publishing go on), and an error of the publisher's
 * own, which must not pass for the broker being out of reach.
 */
import assert from "node:assert/strict";
import { jetstreamManager } from "@nats-io/jetstream";
import { NatsCluster, natsTest } from "./support/nats_cluster.ts";
import { AckDroppingProxy } from "./support/ack_dropping_proxy.ts";
import { NatsOutput } from "../lib/outputs/nats_output.ts";
import { captureLogs, logText } from "./support/logs.ts";
import { InvalidSubjectError } from "@nats-io/transport-node";

await captureLogs();

/** Events pushed at once: more than 4096, so the buffer is compacted after the resend. */
const COUNT = 6000;
/** The sequence whose acknowledgement is dropped (acks come on `<inbox>.<sequence>`). */
const DROPPED_SEQ = 2000;

natsTest(
  "NatsOutput: one lost JetStream acknowledgement mid-burst: resent, everything stored once, publishing goes on",
  async () => {
    await using cluster = await NatsCluster.start({ nodes: 1 });
    const ackOf = new RegExp(`^_INBOX\\.[^.]+\\.${DROPPED_SEQ}$`);
    await using proxy = new AckDroppingProxy(cluster.port(0), (subject) => ackOf.test(subject));
    const lost: unknown[] = [];
    const output = new NatsOutput({
      connect: { servers: [proxy.url], auth: { kind: "none" }, ca: null, name: "test" },
      prefix: "procmonitor",
      host: "h1",
      bufferBytes: 8 << 20,
      stream: { name: "PM", replicas: 1, maxAgeMs: 0 },
      now: () => "2026-01-02T03:04:05.000006Z",
      onLost: (event) => lost.push(event),
      idStem: "h1.boot.ack",
    });
    let unsent: number;
    try {
      for (let i = 0; i < COUNT; i++) output.push("exec", `{"event":"exec","n":${i}}\n`);
      // 3 s of ack timeout, then the resend; 15 s is plenty, and far less than "stuck".
      const deadline = Date.now() + 15_000;
      while (output.stats().acked < COUNT && Date.now() < deadline) {
        await new Promise((resolve) => setTimeout(resolve, 50));
      }
      assert.equal(proxy.dropped.length, 1, "the acknowledgement was not dropped");
      assert.deepEqual(output.stats(), { buffered: 0, published: COUNT, acked: COUNT, lost: 0 });
      // Publishing goes on after the resend: one more event is stored too.
      output.push("exec", `{"event":"exec","n":${COUNT}}\n`);
      const later = Date.now() + 5_000;
      while (output.stats().acked < COUNT + 1 && Date.now() < later) {
        await new Promise((resolve) => setTimeout(resolve, 20));
      }
      assert.deepEqual(
        output.stats(),
        { buffered: 0, published: COUNT + 1, acked: COUNT + 1, lost: 0 },
        "publishing stopped after the resend",
      );
    } finally {
      unsent = await output.close(1000);
    }
    assert.equal(unsent, 0);
    assert.deepEqual(lost, []);

    await using nc = await cluster.connect();
    const jsm = await jetstreamManager(nc);
    const { state } = await jsm.streams.info("PM");
    assert.equal(state.messages, COUNT + 1, "stored twice or missing");
    const seen = new Set<number>();
    for (let seq = state.first_seq; seq <= state.last_seq; seq += 500) {
      const batch = [];
      for (let s = seq; s < seq + 500 && s <= state.last_seq; s++) {
        batch.push(jsm.streams.getMessage("PM", { seq: s }));
      }
      for (const msg of await Promise.all(batch)) seen.add(msg!.json<{ n: number }>().n);
    }
    assert.equal(seen.size, COUNT + 1, "an event stored twice, another missing");
  },
);

natsTest(
  "NatsOutput: an error of its own while publishing is not logged as NATS out of reach; it is left uncaught",
  async () => {
    await using cluster = await NatsCluster.start({ nodes: 1 });
    // An event name with a space makes a subject the client refuses: no connection problem.
    let uncaught: unknown;
    const onRejection = (event: PromiseRejectionEvent) => {
      event.preventDefault();
      uncaught = event.reason;
    };
    globalThis.addEventListener("unhandledrejection", onRejection);
    const output = new NatsOutput({
      connect: { servers: cluster.urls, auth: { kind: "none" }, ca: null, name: "test" },
      prefix: "procmonitor",
      host: "h1",
      bufferBytes: 1 << 20,
      stream: null,
      now: () => "2026-01-02T03:04:05.000006Z",
      onLost: () => {},
      idStem: "h1.boot.bug",
    });
    try {
      output.push("bad event", `{"event":"bad event"}\n`);
      const deadline = Date.now() + 10_000;
      while (uncaught === undefined && Date.now() < deadline) {
        await new Promise((resolve) => setTimeout(resolve, 20));
      }
      await new Promise((resolve) => setTimeout(resolve, 1500)); // a retry would log by now
    } finally {
      await output.close(200);
      globalThis.removeEventListener("unhandledrejection", onRejection);
    }
    assert.ok(uncaught instanceof InvalidSubjectError, `uncaught: ${uncaught}`);
    assert.deepEqual(logText().filter((line) => /out of reach/.test(line)), []);
  },
);
