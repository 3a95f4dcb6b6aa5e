import assert from "node:assert/strict";
import { addUsage, GroupUsage } from "../lib/events/group_usage.ts";
import type { TaskUsage } from "../lib/kernel/record.ts";

function usage(cpuUserUs: number, maxRssKb: number, last = false): TaskUsage {
  return {
    cpuUserUs,
    cpuSysUs: 10,
    maxRssKb,
    readBytes: 1024,
    writeBytes: 2048,
    ctxVoluntary: 1,
    ctxInvoluntary: 2,
    last,
  };
}

Deno.test("addUsage() adds CPU, I/O and switches, and keeps the larger peak memory", () => {
  assert.deepEqual(addUsage(usage(100, 500), usage(300, 400, true)), {
    cpuUserUs: 400,
    cpuSysUs: 20,
    maxRssKb: 500,
    readBytes: 2048,
    writeBytes: 4096,
    ctxVoluntary: 2,
    ctxInvoluntary: 4,
    last: true,
  });
});

Deno.test("GroupUsage.end() gives a process without other tasks its own usage, unchanged", () => {
  const groups = new GroupUsage();
  const own = usage(5, 50);
  assert.equal(groups.end(7, own), own);
  assert.equal(groups.size, 0);
});

Deno.test("GroupUsage.end() sums the tasks added before with the one that ends it", () => {
  const groups = new GroupUsage();
  groups.add(7, usage(100, 500));
  groups.add(7, usage(200, 600));
  groups.add(8, usage(1, 1));
  assert.equal(groups.end(7, usage(5, 550))?.cpuUserUs, 305);
  assert.equal(groups.size, 1, "process 7 is forgotten, 8 is not");
  // A held main thread, added already: not counted twice.
  groups.add(8, usage(2, 1));
  assert.equal(groups.end(8, usage(2, 1), true)?.cpuUserUs, 3);
});

Deno.test("GroupUsage.end() gives none when the ending task's usage never came", () => {
  const groups = new GroupUsage();
  groups.add(7, usage(100, 500));
  assert.equal(groups.end(7, null), null);
  assert.equal(groups.size, 0);
});

Deno.test("GroupUsage.end() gives none when an earlier thread's usage never came", () => {
  const groups = new GroupUsage();
  groups.add(9, usage(100, 500));
  groups.add(9, null);
  groups.add(9, usage(50, 500));
  assert.equal(groups.end(9, usage(5, 500)), null, "not the sum of the threads that reported");
  assert.equal(groups.size, 0);
});

Deno.test("GroupUsage.forget() and lost() keep a lost end from leaking into another process", () => {
  const groups = new GroupUsage();
  groups.add(11, usage(100, 500));
  groups.forget(11); // a fork made a new process 11: the old one's end was lost
  assert.equal(groups.end(11, usage(5, 10))?.cpuUserUs, 5);
  groups.add(12, usage(100, 500));
  groups.lost();
  assert.equal(groups.end(12, usage(5, 10)), null);
});
