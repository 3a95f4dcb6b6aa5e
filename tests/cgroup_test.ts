import assert from "node:assert/strict";
import { belongingOf, pickCgroupPath } from "../lib/events/cgroup.ts";

const ID = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

const PATHS: [path: string, unit: string | undefined, container: string | undefined][] = [
  ["/system.slice/nginx.service", "nginx.service", undefined],
  ["/user.slice/user-0.slice/session-3.scope", "session-3.scope", undefined],
  ["user.slice/user-0.slice/session-3.scope", "session-3.scope", undefined],
  [
    "/user.slice/user-1000.slice/user@1000.service/app.slice/gnome-terminal.scope",
    "gnome-terminal.scope",
    undefined,
  ],
  ["/system.slice/getty@tty1.service", "getty@tty1.service", undefined],
  ["/system.slice/nginx.service/worker", "nginx.service", undefined],
  ["/", undefined, undefined],
  ["/system.slice", undefined, undefined],
  ["/init.scope", "init.scope", undefined],
  [`/system.slice/docker-${ID}.scope`, `docker-${ID}.scope`, ID],
  [`/docker/${ID}`, undefined, ID],
  [
    `/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod0f1e.slice/cri-containerd-${ID}.scope`,
    `cri-containerd-${ID}.scope`,
    ID,
  ],
  [`/kubepods/burstable/pod0f1e2d3c/${ID}`, undefined, ID],
  [`/machine.slice/libpod-${ID}.scope`, `libpod-${ID}.scope`, ID],
  [`/machine.slice/libpod-${ID}.scope/container`, `libpod-${ID}.scope`, ID],
  [`/machine.slice/libpod-conmon-${ID}.scope`, `libpod-conmon-${ID}.scope`, undefined],
  [`/kubepods.slice/crio-${ID}.scope`, `crio-${ID}.scope`, ID],
  [`/kubepods.slice/crio-conmon-${ID}.scope`, `crio-conmon-${ID}.scope`, undefined],
  [`/system.slice/docker-${ID.slice(1)}.scope`, `docker-${ID.slice(1)}.scope`, undefined],
  [`/system.slice/docker-${ID.toUpperCase()}.scope`, `docker-${ID.toUpperCase()}.scope`, undefined],
];

Deno.test("belongingOf() finds the unit and container id of cgroup paths", () => {
  for (const [path, unit, container] of PATHS) {
    const want = {
      cgroup: path,
      ...(unit !== undefined ? { unit } : {}),
      ...(container !== undefined ? { container_id: container } : {}),
    };
    assert.deepEqual(belongingOf(path), want, path);
  }
});

Deno.test("belongingOf() gives one shared object per path", () => {
  assert.equal(belongingOf("/system.slice/a.service"), belongingOf("/system.slice/a.service"));
});

const FILES: [text: string, path: string | null][] = [
  ["0::/system.slice/nginx.service\n", "/system.slice/nginx.service"],
  // Hybrid: v2 wins when it names a cgroup of its own.
  [
    "9:name=systemd:/system.slice/a.service\n4:memory:/m\n0::/system.slice/b.service\n",
    "/system.slice/b.service",
  ],
  // Hybrid with v2 left at the root: systemd's hierarchy says more.
  ["9:name=systemd:/system.slice/a.service\n4:memory:/m\n0::/\n", "/system.slice/a.service"],
  ["9:name=systemd:/\n0::/\n", "/"],
  // v1 only.
  [
    "4:memory:/m\n1:name=systemd:/user.slice/user-0.slice/session-3.scope\n",
    "/user.slice/user-0.slice/session-3.scope",
  ],
  ["4:memory:/m\n3:cpu,cpuacct:/c\n", null],
  ["", null],
  // A path may hold ':'; a cut last line is not trusted.
  ["0::/a:b\n", "/a:b"],
  ["0::/system.slice/cut", null],
  ["4:memory:/m\n0::/a.service (deleted)\n", "/a.service (deleted)"],
];

Deno.test("pickCgroupPath() takes the v2 path, else systemd's v1 path", () => {
  for (const [text, path] of FILES) assert.equal(pickCgroupPath(text), path, JSON.stringify(text));
});
