import assert from "node:assert/strict";
import { NativeError } from "../lib/kernel/ffi.ts";
import { connectorProblem } from "../lib/cli/server.ts";

Deno.test("connectorProblem() says in one sentence why the connector is out of reach", () => {
  const say = (errno: number) => connectorProblem(new NativeError("pc_open", errno));
  assert.match(say(1), /needs root or CAP_NET_ADMIN/); // EPERM on kernels before 6.6
  assert.match(say(13), /needs root or CAP_NET_ADMIN/); // EACCES
  assert.match(say(93), /no proc connector/); // EPROTONOSUPPORT
  assert.match(say(110), /initial user and pid namespace.*not inside a container/); // ETIMEDOUT
  assert.equal(say(12), "Cannot open the kernel's proc connector (ENOMEM)");
  for (const errno of [1, 13, 93, 110, 12]) assert.ok(!say(errno).includes("\n"));
});
