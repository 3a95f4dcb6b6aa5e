import assert from "node:assert/strict";
import { effectiveCapabilities, privilegeNotes } from "../lib/cli/privileges.ts";

Deno.test("effectiveCapabilities() reads CapEff from /proc/PID/status", () => {
  const status = "Name:\tdeno\nCapInh:\t0000000000000000\nCapEff:\t000001ffffffffff\nCapBnd:\t0\n";
  assert.equal(effectiveCapabilities(status), 0x1ffffffffffn);
  assert.equal(effectiveCapabilities("Name:\tdeno\n"), null);
});

Deno.test("privilegeNotes() names what each missing capability hides, and nothing for root", () => {
  assert.deepEqual(privilegeNotes(0x1ffffffffffn), []);
  assert.deepEqual(privilegeNotes(0n), [
    "without CAP_NET_ADMIN, the netlink receive buffer is capped at net.core.rmem_max, so a " +
    "storm may overrun it sooner (counted as lost)",
    "without CAP_SYS_PTRACE, the exe of other users' processes is not shown",
  ]);
  assert.deepEqual(privilegeNotes(1n << 19n), [
    "without CAP_NET_ADMIN, the netlink receive buffer is capped at net.core.rmem_max, so a " +
    "storm may overrun it sooner (counted as lost)",
  ]);
});
