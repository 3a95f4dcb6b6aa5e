import { NatsCluster } from "./tests/support/nats_cluster.ts";
import { connect, createInbox, headers } from "@nats-io/transport-node";
import { jetstream, jetstreamManager } from "@nats-io/jetstream";
await using c = await NatsCluster.start({ nodes: 1 });
const nc = await connect({ servers: c.urls });
const jsm = await jetstreamManager(nc);
await jsm.streams.add({ name: "B", subjects: ["p.>"], duplicate_window: 120e9 });
const js = jetstream(nc);
const cpu = () => { const s = Deno.readTextFileSync("/proc/self/stat").split(") ")[1].split(" "); return (Number(s[11]) + Number(s[12])) * 10; };
const N = 40000;
const data = JSON.stringify({ event: "fork", time: "2026-12-01T17:21:16.477111Z", child_pid: 123, parent_pid: 1, child_tgid: 123, parent_tgid: 1, user: "root", uid: 0, cmdline: "/bin/sh -c something long enough", host: "bench" });
// js.publish with window 512
let c0 = cpu(); let t0 = performance.now();
{
  let inflight = 0, i = 0, done = 0; const { promise, resolve } = Promise.withResolvers<void>();
  const pump = () => { while (inflight < 512 && i < N) { inflight++; const k = i++; js.publish("p.h.fork", data, { msgID: `a.${k}`, timeout: 3000 }).then(() => { inflight--; if (++done === N) resolve(); else pump(); }); } };
  pump(); await promise;
}
console.log("js.publish", cpu() - c0, "ms cpu", (performance.now() - t0).toFixed(0), "ms wall");
// raw publish with reply + headers, one wildcard sub
c0 = cpu(); t0 = performance.now();
{
  const inbox = createInbox(); let done = 0; let inflight = 0, i = 0; const { promise, resolve } = Promise.withResolvers<void>();
  const pump = () => { while (inflight < 512 && i < N) { inflight++; const k = i++; const h = headers(); h.set("Nats-Msg-Id", `b.${k}`); nc.publish("p.h.fork", data, { reply: `${inbox}.${k}`, headers: h }); } };
  nc.subscribe(`${inbox}.*`, { callback: (_e, m) => { JSON.parse(m.string()); inflight--; if (++done === N) resolve(); else pump(); } });
  pump(); await promise;
}
console.log("raw", cpu() - c0, "ms cpu", (performance.now() - t0).toFixed(0), "ms wall");
console.log((await jsm.streams.info("B")).state.messages);
await nc.close();
