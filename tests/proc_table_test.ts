import assert from "node:assert/strict";
import {
  DEFAULT_TABLE_BYTES,
  entryBytes,
  EXITED_LIMIT,
  ProcTable,
  readProc,
} from "../lib/events/proc_table.ts";

const entry = (cmdline: string) => ({
  uid: 0,
  cmdline,
  cmdlineTruncated: false,
  ppid: 1,
  startNs: 1n,
});

Deno.test("ProcTable.set() replaces a recycled pid's entry", () => {
  const table = new ProcTable();
  table.set(100, entry("old"));
  table.set(100, entry("new"));
  assert.equal(table.size, 1);
  assert.equal(table.get(100)?.cmdline, "new");
});

Deno.test("ProcTable stays within its bound, evicting the stalest entry", () => {
  const table = new ProcTable(3);
  for (const pid of [1, 2, 3]) table.set(pid, entry(`p${pid}`));
  table.set(1, entry("p1 again")); // refreshed: 2 is now the stalest
  table.set(4, entry("p4"));
  assert.equal(table.size, 3);
  assert.equal(table.evicted, 1);
  assert.equal(table.get(2), undefined);
  assert.equal(table.get(1)?.cmdline, "p1 again");
});

Deno.test("ProcTable.take() removes the entry but keeps it for late thread exits", () => {
  const table = new ProcTable();
  table.set(5, entry("x"));
  assert.equal(table.take(5)?.cmdline, "x");
  assert.equal(table.take(5), undefined);
  assert.equal(table.size, 0);
  assert.equal(table.get(5), undefined);
  assert.equal(table.getExited(5)?.cmdline, "x");
  table.set(5, entry("recycled")); // a fork reuses the pid: the old process is gone for good
  table.take(5);
  assert.equal(table.getExited(5)?.cmdline, "recycled");
});

Deno.test("ProcTable remembers a bounded number of exited processes", () => {
  const table = new ProcTable();
  for (let pid = 1; pid <= EXITED_LIMIT + 10; pid++) {
    table.set(pid, entry(`p${pid}`));
    table.take(pid);
  }
  assert.equal(table.getExited(1), undefined);
  assert.equal(table.getExited(EXITED_LIMIT + 10)?.cmdline, `p${EXITED_LIMIT + 10}`);
});

Deno.test("readProc() reads this process's cmdline, uid, parent and start time", () => {
  const info = readProc(`/proc/${Deno.pid}`, Deno.readFileSync(`/proc/${Deno.pid}/cmdline`));
  assert.ok(info);
  assert.equal(info.uid, Deno.uid());
  assert.equal(info.ppid, Deno.ppid);
  assert.match(info.cmdline, /deno/);
  assert.ok(info.startNs !== null && info.startNs > 0n);
});

Deno.test("readProc() returns null for a process that is gone", () => {
  assert.equal(readProc("/proc/999999999"), null);
});

Deno.test("readProc() names a kernel thread in brackets", () => {
  // pid 2 is kthreadd on Linux; its cmdline is empty.
  const info = readProc("/proc/2", Deno.readFileSync("/proc/2/cmdline"));
  if (info === null) return; // a pid namespace without kthreadd
  assert.equal(info.cmdline, "[kthreadd]");
});

Deno.test("readProc() without a cmdline reads status and stat only, and gives none", () => {
  const info = readProc(`/proc/${Deno.pid}`);
  assert.ok(info);
  assert.equal(info.uid, Deno.uid());
  assert.equal(info.cmdline, "");
});

Deno.test("ProcTable.scan() finds this process and init", async () => {
  const table = new ProcTable();
  const added = await table.scan();
  assert.ok(added >= 2);
  assert.ok(table.get(Deno.pid));
  assert.ok(table.get(1));
  const parents = new Map(table.parents());
  assert.equal(parents.get(Deno.pid), Deno.ppid);
});

Deno.test("ProcTable stays within its byte bound, evicting the stalest entry", () => {
  const long = "x".repeat(4096);
  const table = new ProcTable(1000, 10 * entryBytes(entry(long)));
  for (let pid = 1; pid <= 25; pid++) table.set(pid, entry(long));
  assert.equal(table.size, 10);
  assert.equal(table.evicted, 15);
  assert.equal(table.get(15), undefined);
  assert.ok(table.get(16) && table.get(25));
  assert.ok(table.bytes <= 10 * entryBytes(entry(long)));
  // Short entries are cheap: 200 fit in the room of a few long ones.
  for (let pid = 100; pid < 300; pid++) table.set(pid, entry("sh"));
  assert.ok(table.size > 200 && table.size < 210, `${table.size} entries`);
  assert.ok(table.get(100) && table.get(25), "the short ones, and the newest long ones");
  assert.ok(table.bytes <= 10 * entryBytes(entry(long)));
});

Deno.test("ProcTable drops exited processes before live ones when bytes run short", () => {
  const long = "y".repeat(1000);
  const table = new ProcTable(1000, 4 * entryBytes(entry(long)));
  for (const pid of [1, 2, 3]) table.set(pid, entry(long));
  table.take(1);
  table.set(4, entry(long));
  table.set(5, entry(long)); // one too many: the exited 1 goes, not the live 2
  assert.equal(table.getExited(1), undefined);
  assert.equal(table.evicted, 0);
  assert.deepEqual([2, 3, 4, 5].map((pid) => table.get(pid) !== undefined), [
    true,
    true,
    true,
    true,
  ]);
  for (const pid of [2, 3, 4, 5]) table.take(pid);
  assert.equal(table.bytes, 4 * entryBytes(entry(long)), "an exit keeps its bytes counted");
  table.set(2, entry("recycled")); // replaces the exited 2, with its bytes
  assert.equal(table.bytes, 3 * entryBytes(entry(long)) + entryBytes(entry("recycled")));
});

Deno.test("by default 4 KiB cmdlines fill the table to 64 MiB, not to 131,072 entries", () => {
  const table = new ProcTable();
  const cmdline = "z".repeat(4096);
  for (let pid = 1; pid <= 20_000; pid++) table.set(pid, entry(cmdline));
  assert.ok(table.bytes <= DEFAULT_TABLE_BYTES, `${table.bytes} bytes`);
  assert.ok(table.size < 20_000 && table.size > 7_000, `${table.size} entries`);
  assert.ok(table.get(20_000), "the newest are kept");
});

/** A stand-in /proc/PID: status and stat as the kernel writes them, and a cmdline. */
async function fakeProc(root: string, pid: number, uid: number) {
  const dir = `${root}/${pid}`;
  await Deno.mkdir(dir);
  await Deno.writeTextFile(`${dir}/status`, `Name:\tsleep\nPPid:\t1\nUid:\t${uid}\t${uid}\t0\t0\n`);
  const fields = ["S", "1", "1", "1", "0", "-1", "0", ...Array(12).fill("0"), "500", "0"];
  await Deno.writeTextFile(`${dir}/stat`, `${pid} (sleep) ${fields.join(" ")}\n`);
  return dir;
}

Deno.test({
  name: "ProcTable.scan() goes past a process whose cmdline read hangs, adding it without",
  // The hung read holds a thread of Deno's pool until the FIFO gets a writer, below.
  sanitizeOps: false,
  sanitizeResources: false,
  fn: async () => {
    const root = await Deno.makeTempDir({ prefix: "procmonitor-scan-" });
    try {
      const hung = await fakeProc(root, 4242, 1000);
      const ok = await fakeProc(root, 4343, 0);
      await Deno.writeTextFile(`${ok}/cmdline`, "sleep\0" + "60\0");
      await Deno.writeTextFile(
        `${ok}/cgroup`,
        "9:name=systemd:/system.slice/cron.service\n4:memory:/x\n0::/\n",
      );
      const mk = await new Deno.Command("mkfifo", { args: [`${hung}/cmdline`] }).output();
      assert.ok(mk.success);
      const table = new ProcTable();
      const started = performance.now();
      assert.equal(await table.scan(root, 200, true), 2);
      assert.ok(performance.now() - started < 2000, "the scan did not wait for the hung read");
      assert.deepEqual(
        { ...table.get(4242), startNs: undefined },
        {
          uid: 1000,
          cmdline: "",
          cmdlineTruncated: false,
          ppid: 1,
          startNs: undefined,
          comm: "sleep",
          belong: null, // no cgroup file
        },
      );
      assert.equal(table.get(4242)?.startNs, 5_000_000_000n);
      assert.equal(table.get(4343)?.cmdline, "sleep 60");
      assert.deepEqual(table.get(4343)?.belong, {
        cgroup: "/system.slice/cron.service",
        unit: "cron.service",
      });
      // Let the read left behind finish.
      (await Deno.open(`${hung}/cmdline`, { write: true })).close();
    } finally {
      await Deno.remove(root, { recursive: true });
    }
  },
});

Deno.test("ProcTable.scan() reads no cgroup unless asked to", async () => {
  const root = await Deno.makeTempDir({ prefix: "procmonitor-scan-" });
  try {
    const ok = await fakeProc(root, 4344, 0);
    await Deno.writeTextFile(`${ok}/cmdline`, "cron\0");
    await Deno.writeTextFile(`${ok}/cgroup`, "0::/system.slice/cron.service\n");
    const table = new ProcTable();
    assert.equal(await table.scan(root, 200), 1);
    assert.equal(table.get(4344)?.belong, null);
    const asked = new ProcTable();
    assert.equal(await asked.scan(root, 200, true), 1);
    assert.equal(asked.get(4344)?.belong?.unit, "cron.service");
  } finally {
    await Deno.remove(root, { recursive: true });
  }
});
