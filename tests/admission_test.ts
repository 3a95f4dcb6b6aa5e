/**
 * Unit tests of lib/outputs/admission.ts: the address key, the waiting room's drop policy, and the
 * summarised drop log.
 */
import assert from "node:assert/strict";
import { addressKey, DropLog, WaitingRoom } from "../lib/outputs/admission.ts";

Deno.test("addressKey: IPv4 as is, IPv4-mapped IPv6 as IPv4, other IPv6 per /64", () => {
  assert.equal(addressKey("192.0.2.7"), "192.0.2.7");
  assert.equal(addressKey("::ffff:192.0.2.7"), "192.0.2.7");
  assert.equal(addressKey("::FFFF:c000:0207"), "192.0.2.7", "the hex spelling too");
  assert.equal(addressKey("0:0:0:0:0:ffff:127.0.0.1"), "127.0.0.1");
  // One /64, however spelled: every address in it is one key.
  for (const a of ["2001:db8:1:2:3:4:5:6", "2001:0DB8:0001:0002:ffff::1", "2001:db8:1:2::"]) {
    assert.equal(addressKey(a), "2001:db8:1:2::/64", a);
  }
  assert.notEqual(addressKey("2001:db8:1:3::1"), addressKey("2001:db8:1:2::1"));
  assert.equal(addressKey("2001:db8::1"), "2001:db8:0:0::/64");
  assert.equal(addressKey("::1"), "0:0:0:0::/64");
  assert.equal(addressKey("::"), "0:0:0:0::/64");
  assert.equal(addressKey("fe80::1%eth0"), "fe80:0:0:0::/64", "the zone is ignored");
  // An IPv4 address inside IPv6 that is not mapped stays IPv6.
  assert.equal(addressKey("64:ff9b::192.0.2.7"), "64:ff9b:0:0::/64");
});

Deno.test("addressKey: what is not an IP address is returned unchanged", () => {
  for (
    const s of [
      "localhost",
      "1::2::3",
      "1:2:3:4:5:6:7:8:9",
      "1:2:3:4:5:6:7",
      "12345::1",
      "::ffff:300.1.1.1",
      "g::1",
      ":::",
    ]
  ) {
    assert.equal(addressKey(s), s);
  }
});

Deno.test("WaitingRoom: a key at its limit loses its own oldest, even when others are older", () => {
  const room = new WaitingRoom<string>(10, 2);
  assert.deepEqual(room.add("b", "b1"), []);
  assert.deepEqual(room.add("a", "a1"), []);
  assert.deepEqual(room.add("a", "a2"), []);
  assert.deepEqual(room.add("a", "a3"), ["a1"]);
  assert.equal(room.size, 3);
  assert.equal(room.count("a"), 2);
  assert.equal(room.oldest("a"), "a2");
  assert.equal(room.oldest("b"), "b1");
});

Deno.test("WaitingRoom: when full, the oldest of the key with the most waiters is dropped", () => {
  const room = new WaitingRoom<string>(4, 8);
  room.add("a", "a1");
  room.add("b", "b1");
  room.add("b", "b2");
  room.add("c", "c1");
  assert.deepEqual(room.add("d", "d1"), ["b1"], "b has the most");
  // Now a, b, c, d have one each: the tie goes to the key whose waiter is oldest.
  assert.deepEqual(room.add("e", "e1"), ["a1"]);
  assert.deepEqual(room.add("e", "e2"), ["b2"]);
  assert.equal(room.size, 4);
  assert.deepEqual([...room.values()].sort(), ["c1", "d1", "e1", "e2"]);
});

Deno.test("WaitingRoom: delete, and clear", () => {
  const room = new WaitingRoom<string>(1, 1);
  room.add("a", "a1");
  assert.deepEqual(room.add("b", "b1"), ["a1"]);
  assert.equal(room.delete("a", "a1"), false, "already dropped");
  assert.equal(room.delete("b", "b1"), true);
  assert.equal(room.delete("b", "b1"), false);
  assert.equal(room.size, 0);
  assert.equal(room.oldest("b"), undefined);
  room.add("c", "c1");
  assert.deepEqual(room.clear(), ["c1"]);
  assert.equal(room.size, 0);
  assert.deepEqual(room.add("d", "d1"), [], "room again after clear");
});

Deno.test("DropLog: the first drop at once, then at most one line per interval", async () => {
  const lines: [number, string][] = [];
  const drops = new DropLog(100, (count, latest) => lines.push([count, latest]));
  try {
    drops.note("p1");
    drops.note("p2");
    drops.note("p3");
    assert.deepEqual(lines, [[1, "p1"]]);
    await new Promise((resolve) => setTimeout(resolve, 150));
    assert.deepEqual(lines, [[1, "p1"], [2, "p3"]]);
    await new Promise((resolve) => setTimeout(resolve, 150)); // a quiet interval: no line
    assert.equal(lines.length, 2);
    drops.note("p4");
    assert.deepEqual(lines[2], [1, "p4"], "after a quiet interval, at once again");
    drops.note("p5");
  } finally {
    drops.close();
  }
  assert.deepEqual(lines[3], [1, "p5"], "close logs what is left");
  assert.equal(lines.length, 4);
});
