import assert from "node:assert/strict";
import { ancestorsOf } from "../lib/events/ancestry.ts";
import { type ProcInfo, ProcTable } from "../lib/events/proc_table.ts";

function proc(ppid: number | null, cmdline: string, comm?: string): ProcInfo {
  return { uid: 0, cmdline, cmdlineTruncated: false, ppid, startNs: null, comm };
}

function chain(): ProcTable {
  const table = new ProcTable();
  table.set(1, proc(0, "/sbin/init", "systemd"));
  table.set(100, proc(1, "sshd: root", "sshd"));
  table.set(200, proc(100, "-bash", "bash"));
  table.set(300, proc(200, "sh -c make", "sh"));
  return table;
}

Deno.test("ancestorsOf() walks the parents nearest first, up to pid 1", () => {
  assert.deepEqual(ancestorsOf(chain(), 300, 10), [
    { pid: 300, comm: "sh", cmdline: "sh -c make" },
    { pid: 200, comm: "bash", cmdline: "-bash" },
    { pid: 100, comm: "sshd", cmdline: "sshd: root" },
    { pid: 1, comm: "systemd", cmdline: "/sbin/init" },
  ]);
});

Deno.test("ancestorsOf() stops after max ancestors", () => {
  assert.deepEqual(ancestorsOf(chain(), 300, 2).map((a) => a.pid), [300, 200]);
  assert.deepEqual(ancestorsOf(chain(), 300, 0), []);
});

Deno.test("ancestorsOf() stops at a process the table does not know, or no parent", () => {
  const table = chain();
  table.set(400, proc(999, "orphan"));
  assert.deepEqual(ancestorsOf(table, 400, 10).map((a) => a.pid), [400]);
  assert.deepEqual(ancestorsOf(table, null, 10), []);
  assert.deepEqual(ancestorsOf(table, 0, 10), []);
});

Deno.test("ancestorsOf() ends a loop of parent links once", () => {
  const table = new ProcTable();
  table.set(10, proc(20, "a"));
  table.set(20, proc(10, "b"));
  assert.deepEqual(ancestorsOf(table, 10, 64).map((a) => a.pid), [10, 20]);
});

Deno.test("ancestorsOf() shows an unknown comm as empty", () => {
  const table = new ProcTable();
  table.set(10, proc(0, "a"));
  assert.deepEqual(ancestorsOf(table, 10, 1), [{ pid: 10, comm: "", cmdline: "a" }]);
});
