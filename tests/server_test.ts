import assert from "node:assert/strict";
import { NativeError } from "../lib/kernel/ffi.ts";
import { bpfProblem, connectorProblem } from "../lib/cli/server.ts";

Deno.test("connectorProblem() says in one sentence why the connector is out of reach", () => {
  const say = (errno: number) => connectorProblem(new NativeError("pc_open", errno));
  assert.match(say(1), /needs root or CAP_NET_ADMIN/); // EPERM on kernels before 6.6
  assert.match(say(13), /needs root or CAP_NET_ADMIN/); // EACCES
  assert.match(say(93), /no proc connector/); // EPROTONOSUPPORT
  assert.match(say(110), /initial user and pid namespace.*not inside a container/); // ETIMEDOUT
  assert.equal(say(12), "Cannot open the kernel's proc connector (ENOMEM)");
  for (const errno of [1, 13, 93, 110, 12]) assert.ok(!say(errno).includes("\n"));
});

Deno.test("bpfProblem() says in one sentence why exec cmdlines come from /proc", () => {
  const say = (errno: number) => bpfProblem(new NativeError("pc_exec_bpf", errno));
  assert.equal(say(1), "BPF needs CAP_BPF and CAP_PERFMON (or CAP_SYS_ADMIN)"); // EPERM
  assert.equal(say(79), "libbpf.so.1 is not installed (Debian: libbpf1)"); // ELIBACC
  assert.match(say(2), /no BTF type information \(CONFIG_DEBUG_INFO_BTF\)/); // ENOENT
  assert.match(say(38), /built without BPF/); // ENOSYS
  assert.match(say(95), /--cwd, --env and the cgroup fields/); // EOPNOTSUPP
  assert.match(say(22), /needs Linux 5\.17 or later/); // EINVAL
  assert.equal(say(12), "BPF failed: ENOMEM");
  for (const errno of [1, 79, 2, 38, 95, 22, 12]) assert.ok(!say(errno).includes("\n"));
});
