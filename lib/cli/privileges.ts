/**
 * What procMonitor can and cannot see with the capabilities it runs with (Linux 6.6+ lets
 * any user listen to the proc connector; before 6.6 that needs CAP_NET_ADMIN, and the
 * connector's refusal says so on its own).
 *
 * @module
 */

/**
 * Capability numbers (linux/capability.h) whose absence hides something. CAP_SYS_NICE (the
 * reader's realtime priority) has its own warning, from the priority actually obtained.
 */
export const Capability = {
  CAP_NET_ADMIN: 12,
  CAP_SYS_PTRACE: 19,
} as const;

type CapabilityName = keyof typeof Capability;

/** What each capability's absence costs, in the words of the start-up warning. */
const WITHOUT: Record<CapabilityName, string> = {
  CAP_SYS_PTRACE: "the exe of other users' processes is not shown",
  CAP_NET_ADMIN:
    "the netlink receive buffer is capped at net.core.rmem_max, so a storm may overrun it sooner (counted as lost)",
};

/** The effective capability set from the text of /proc/self/status; null if absent. */
export function effectiveCapabilities(status: string): bigint | null {
  const m = /^CapEff:\s*([0-9a-f]+)$/m.exec(status);
  return m === null ? null : BigInt(`0x${m[1]}`);
}

/** One sentence per missing capability saying what cannot be seen without it. */
export function privilegeNotes(effective: bigint): string[] {
  const notes: string[] = [];
  for (const [name, bit] of Object.entries(Capability) as [CapabilityName, number][]) {
    if ((effective & (1n << BigInt(bit))) === 0n) notes.push(`without ${name}, ${WITHOUT[name]}`);
  }
  return notes;
}

/** The notes for this process, from /proc/self/status (none when it cannot be read). */
export function ownPrivilegeNotes(): string[] {
  let status: string;
  try {
    status = Deno.readTextFileSync("/proc/self/status");
  } catch (error) {
    if (error instanceof Deno.errors.NotFound || error instanceof Deno.errors.PermissionDenied) {
      return [];
    }
    throw error;
  }
  const caps = effectiveCapabilities(status);
  return caps === null ? [] : privilegeNotes(caps);
}
