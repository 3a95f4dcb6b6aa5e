import assert from "node:assert/strict";
import { parsePasswd, UserNames } from "../lib/events/user_names.ts";

Deno.test("parsePasswd() maps uids to names, first entry winning", () => {
  const names = parsePasswd(
    "root:x:0:0:root:/root:/bin/bash\n# comment\nbad line\nalice:x:1000:1000::/h:/bin/sh\nalias:x:1000:1::/:/bin/sh\n",
  );
  assert.equal(names.get(0), "root");
  assert.equal(names.get(1000), "alice");
  assert.equal(names.size, 2);
});

Deno.test("UserNames.name() falls back to the number, and 'unknown' for null", () => {
  const users = new UserNames("/etc/passwd");
  assert.equal(users.name(0), "root");
  assert.equal(users.name(4_000_000_000), "4000000000");
  assert.equal(users.name(null), "unknown");
});

Deno.test("UserNames re-reads the file when it changes", async () => {
  const file = await Deno.makeTempFile();
  try {
    await Deno.writeTextFile(file, "root:x:0:0::/:/bin/sh\n");
    const users = new UserNames(file, 0);
    assert.equal(users.name(4242), "4242");
    await Deno.writeTextFile(file, "root:x:0:0::/:/bin/sh\nnewbie:x:4242:4242::/:/bin/sh\n");
    // Make sure the mtime moves even on a coarse-grained file system.
    await Deno.utime(file, new Date(), new Date(Date.now() + 5000));
    assert.equal(users.name(4242), "newbie");
    assert.equal(users.uid("newbie"), 4242);
  } finally {
    await Deno.remove(file);
  }
});
